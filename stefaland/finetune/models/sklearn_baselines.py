"""Linear-regression and random-forest baselines (scikit-learn) on the same inputs.

They see one day at a time, so each day's row carries the forcings of that day, their trailing
means over 7 and 30 days (the memory an LSTM learns by itself) and the static attributes.

A fitted baseline is saved as its parameters, never as a pickle (unpickling a file may call any
function it names, and fold folders travel): ``checkpoints/model.npz`` holds the linear model's
coefficients, or every tree of the forest as flat node arrays, read back with
``allow_pickle=False``. The arrays are predicted from here with numpy alone, so the fresh fit and
a reused one give the same numbers and ``predict`` needs no scikit-learn.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stefaland import fileio
from stefaland.errors import StefaLandError

if TYPE_CHECKING:
    from sklearn.base import RegressorMixin  # scikit-learn takes seconds to import; only the baselines pay for it

    from ..config import ModelSection  # annotations only: the run config imports the registry, not the reverse

LAGS = (7, 30)
HISTORY = max(LAGS)  # days of inputs needed before the first predicted day


def trailing_mean(values: np.ndarray, days: int) -> np.ndarray:
    """Mean over the last ``days`` days (fewer at the start): (n, T, v) → (n, T, v)."""
    total = np.cumsum(values, axis=1, dtype=np.float64)
    shifted = np.zeros_like(total)
    shifted[:, days:] = total[:, :-days]
    count = np.minimum(np.arange(1, values.shape[1] + 1), days)[None, :, None]
    return ((total - shifted) / count).astype(np.float32)


def features(dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
    """(n, T, n_dyn), (n, n_static) → (n, T, n_features); missing values at the mean (0)."""
    dyn = np.nan_to_num(dynamic, nan=0.0)
    n, time, _ = dyn.shape
    sta = np.broadcast_to(np.nan_to_num(static, nan=0.0)[:, None, :], (n, time, static.shape[-1]))
    return np.concatenate([dyn, *[trailing_mean(dyn, d) for d in LAGS], sta], axis=-1)


def site_features(dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
    """(n, T, n_dyn), (n, n_static) → (n, n_dyn + n_static): mean forcings and attributes."""
    with warnings.catch_warnings():  # an all-missing variable gives NaN, set to the mean (0) below
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(dynamic, axis=1)
    return np.nan_to_num(np.concatenate([means, static], axis=-1), nan=0.0)


class Regressor(Protocol):
    """What a baseline predicts with: a fitted scikit-learn model, or its parameters read back from a file."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class SklearnBaseline:
    """Fit on sampled (site, day) rows of the training sites; predict every day of the test sites."""

    def __init__(self, regressor: RegressorMixin | Regressor, max_rows: int) -> None:
        self.regressor, self.max_rows = regressor, max_rows

    def fit(self, dynamic: np.ndarray, static: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> None:
        x = features(dynamic, static)  # (n, T, f)
        rows = np.flatnonzero(np.isfinite(target).ravel())
        rows = rows[rows % target.shape[1] >= HISTORY] if target.shape[1] > HISTORY else rows  # full trailing means
        if len(rows) > self.max_rows:
            rows = rng.choice(rows, self.max_rows, replace=False)
        self._estimator().fit(x.reshape(-1, x.shape[-1])[rows], target.ravel()[rows])

    def fit_static(self, dynamic: np.ndarray, static: np.ndarray, target: np.ndarray) -> None:
        """A per-site target: one row per site, its attributes and its mean forcings."""
        observed = np.isfinite(target)
        self._estimator().fit(site_features(dynamic, static)[observed], target[observed])

    def _estimator(self) -> RegressorMixin:
        """The scikit-learn model to fit; parameters read back from a file are fitted already."""
        if isinstance(self.regressor, (LinearParameters, ForestParameters)):
            raise StefaLandError("a baseline read back from its model file cannot be fitted again")
        return self.regressor

    def predict_static(self, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
        return self.regressor.predict(site_features(dynamic, static)).astype(np.float32)

    def predict(self, dynamic: np.ndarray, static: np.ndarray) -> np.ndarray:
        x = features(dynamic, static)  # (n, T, f)
        return self.regressor.predict(x.reshape(-1, x.shape[-1])).reshape(x.shape[:2]).astype(np.float32)


def linear(config: ModelSection, seed: int) -> SklearnBaseline:
    from sklearn.linear_model import LinearRegression

    return SklearnBaseline(LinearRegression(), config.max_rows)


def random_forest(config: ModelSection, seed: int) -> SklearnBaseline:
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=config.n_estimators, max_depth=config.max_depth,
                                   min_samples_leaf=5, n_jobs=1, random_state=seed)
    return SklearnBaseline(forest, config.max_rows)


# -- the saved form: parameters as arrays, no pickle ----------------------------------------------

BASELINE_FILE = "model.npz"
LEGACY_PICKLE = "model.pkl"  # what StefaLand wrote before; refused, since loading it could run code
FORMAT = "stefaland-baseline-1"
ROWS_PER_CHUNK = 65536  # rows a tree routes at once: the node arrays of a chunk stay in cache


class BadBaselineFile(ValueError):
    """A model file whose arrays do not describe a baseline (the reason goes into the one-line error)."""


@dataclass
class LinearParameters:
    """A fitted ``LinearRegression``: ``y = x @ coef + intercept``."""

    coef: np.ndarray  # (n_features,)
    intercept: np.ndarray  # ()

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise StefaLandError(f"the linear model was fitted on {len(self.coef)} features, got {x.shape[-1]}")
        return x @ self.coef + self.intercept


@dataclass
class Tree:
    """One regression tree with leaves pointing at themselves, so every row can take ``depth`` steps."""

    left: np.ndarray  # (n_nodes,) int64; a leaf's own index
    right: np.ndarray
    feature: np.ndarray  # a leaf's is 0
    threshold: np.ndarray  # float64; ``x <= threshold`` goes left, as scikit-learn's trees do
    value: np.ndarray  # float64
    depth: int


@dataclass
class ForestParameters:
    """A fitted ``RandomForestRegressor``: the mean of its trees' leaf values, summed in tree order."""

    trees: list[Tree]
    n_features: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)  # scikit-learn's trees compare float32 inputs
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise StefaLandError(f"the random forest was fitted on {self.n_features} features, got {x.shape[-1]}")
        total = np.zeros(len(x), dtype=np.float64)
        for tree in self.trees:
            for start in range(0, len(x), ROWS_PER_CHUNK):
                chunk = x[start:start + ROWS_PER_CHUNK]
                total[start:start + len(chunk)] += tree.value[_leaves(tree, chunk)]
        return total / len(self.trees)


def _leaves(tree: Tree, x: np.ndarray) -> np.ndarray:
    """The leaf each row of ``x`` (rows, features) lands in."""
    flat, base = x.ravel(), np.arange(len(x)) * x.shape[1]
    node = np.zeros(len(x), dtype=np.int64)
    for _ in range(tree.depth):
        goes_left = flat[base + tree.feature[node]] <= tree.threshold[node]
        node = np.where(goes_left, tree.left[node], tree.right[node])
    return node


def regressor_arrays(regressor: RegressorMixin) -> dict[str, np.ndarray]:
    """A fitted linear model or random forest as named arrays (scikit-learn's own leaf marker: -1)."""
    if hasattr(regressor, "coef_"):
        return {"kind": np.asarray("linear"), "coef": np.asarray(regressor.coef_).reshape(-1),
                "intercept": np.asarray(regressor.intercept_).reshape(())}
    trees = [estimator.tree_ for estimator in regressor.estimators_]
    if any(tree.n_outputs != 1 for tree in trees):
        raise StefaLandError("a random-forest baseline predicts one target; this one has more outputs")
    return {"kind": np.asarray("forest"), "n_features": np.asarray(regressor.n_features_in_, dtype=np.int64),
            "offsets": np.cumsum([0] + [tree.node_count for tree in trees], dtype=np.int64),
            **{name: np.concatenate([getattr(tree, attribute).astype(dtype) for tree in trees])
               for name, attribute, dtype in (("left", "children_left", np.int64), ("right", "children_right", np.int64),
                                              ("feature", "feature", np.int64), ("threshold", "threshold", np.float64))},
            "value": np.concatenate([tree.value[:, 0, 0].astype(np.float64) for tree in trees])}


def baseline_bytes(model: SklearnBaseline) -> bytes:
    """The ``model.npz`` of a fitted baseline: plain numeric and string arrays only."""
    arrays = {"format": np.asarray(FORMAT), "max_rows": np.asarray(model.max_rows, dtype=np.int64),
              **regressor_arrays(model.regressor)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays against savez's allow_pickle: bool
    return buffer.getvalue()


def _array(arrays: dict[str, np.ndarray], name: str, kind: str, ndim: int) -> np.ndarray:
    """``arrays[name]``, checked to be of numpy kind ``kind`` ('i', 'f', 'U') and ``ndim`` dimensions."""
    if name not in arrays:
        raise BadBaselineFile(f"no '{name}' array")
    value = arrays[name]
    if value.dtype.kind not in kind or value.ndim != ndim:
        raise BadBaselineFile(f"'{name}' is {value.dtype}, {value.ndim}-d")
    return value


def _linear_parameters(arrays: dict[str, np.ndarray]) -> LinearParameters:
    return LinearParameters(_array(arrays, "coef", "f", 1), _array(arrays, "intercept", "f", 0))


def _tree(left: np.ndarray, right: np.ndarray, feature: np.ndarray, threshold: np.ndarray, value: np.ndarray,
          n_features: int) -> Tree:
    """One tree's node arrays (local indices), checked so routing always ends: children lie after their parent."""
    index = np.arange(len(left))
    leaf = left < 0
    inner = ~leaf
    if not ((right < 0) == leaf).all():
        raise BadBaselineFile("a node with one child")
    if not ((left[inner] > index[inner]) & (right[inner] > index[inner]) & (left[inner] < len(left))
            & (right[inner] < len(left))).all():
        raise BadBaselineFile("a child index out of order or out of range")
    if not ((feature[inner] >= 0) & (feature[inner] < n_features)).all():
        raise BadBaselineFile("a split on a feature the model does not have")
    depth, frontier = 0, np.zeros(1, dtype=np.int64)
    while (frontier := frontier[inner[frontier]]).size:  # nodes shared by two parents are counted once
        frontier = np.unique(np.concatenate([left[frontier], right[frontier]]))
        depth += 1
    return Tree(np.where(leaf, index, left), np.where(leaf, index, right), np.where(leaf, 0, feature),
                np.where(leaf, np.inf, threshold), value, depth)


def _forest_parameters(arrays: dict[str, np.ndarray]) -> ForestParameters:
    n_features = int(_array(arrays, "n_features", "i", 0))
    offsets = _array(arrays, "offsets", "i", 1)
    nodes = {name: _array(arrays, name, kind, 1) for name, kind in (("left", "i"), ("right", "i"), ("feature", "i"),
                                                                   ("threshold", "f"), ("value", "f"))}
    sizes = {len(a) for a in nodes.values()}
    if len(offsets) < 2 or offsets[0] != 0 or (np.diff(offsets) <= 0).any() or sizes != {int(offsets[-1])}:
        raise BadBaselineFile("tree offsets and node arrays disagree")
    left, right, feature, threshold, value = nodes.values()
    trees = [_tree(left[start:end], right[start:end], feature[start:end], threshold[start:end], value[start:end], n_features)
             for start, end in zip(offsets[:-1], offsets[1:])]
    return ForestParameters(trees, n_features)


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive; numpy raises ValueError on any pickled content."""
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BadBaselineFile("a single array, not an .npz archive")
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def baseline_from_bytes(url: str, data: bytes) -> SklearnBaseline:
    """A baseline read from ``model.npz`` bytes without unpickling anything; one line naming ``url`` otherwise."""
    try:
        arrays = _npz_arrays(data)
        if str(_array(arrays, "format", "U", 0)) != FORMAT:
            raise BadBaselineFile(f"format {arrays['format']!s}, expected {FORMAT}")
        kind = str(_array(arrays, "kind", "U", 0))
        readers = {"linear": _linear_parameters, "forest": _forest_parameters}
        if kind not in readers:
            raise BadBaselineFile(f"unknown kind {kind!r}")
        return SklearnBaseline(readers[kind](arrays), int(_array(arrays, "max_rows", "i", 0)))
    except BadBaselineFile as exc:
        raise StefaLandError(f"{url}: not a StefaLand baseline model file ({exc})") from None
    except ValueError as exc:  # numpy's "Object arrays cannot be loaded when allow_pickle=False" among them
        if "pickle" in str(exc):
            raise StefaLandError(f"{url}: refused: it holds objects other than arrays of numbers and text "
                                 "(a pickle), which could run code if loaded; StefaLand never writes such a file") from None
        raise StefaLandError(f"{url}: not a StefaLand baseline model file ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise StefaLandError(f"{url}: not a StefaLand baseline model file ({type(exc).__name__})") from None


def save_baseline(directory: str, model: SklearnBaseline) -> SklearnBaseline:
    """Write ``checkpoints/model.npz`` and return the baseline as read back from it, so a fresh fit
    predicts exactly as a later reuse of the file (and the file is known to load)."""
    url = fileio.join(directory, "checkpoints", BASELINE_FILE)
    data = baseline_bytes(model)
    fileio.write_bytes_atomic(url, data)
    return baseline_from_bytes(url, data)


def load_baseline(directory: str) -> SklearnBaseline | None:
    """The fold's fitted baseline, or None when it has none; a ``model.pkl`` from an earlier StefaLand is refused."""
    url = fileio.join(directory, "checkpoints", BASELINE_FILE)
    if fileio.exists(url):
        return baseline_from_bytes(url, fileio.read_bytes(url))
    legacy = fileio.join(directory, "checkpoints", LEGACY_PICKLE)
    if fileio.exists(legacy):
        raise StefaLandError(f"{legacy}: refused: a pickled model (written by an earlier StefaLand, or planted), "
                             f"which could run code if loaded; delete it and run finetune again to refit the baseline "
                             f"as {BASELINE_FILE}")
    return None
