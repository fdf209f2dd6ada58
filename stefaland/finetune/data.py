"""Normalised arrays of a fold's sites, and the (site, window) sampler.

The held-out fold is split off *before* any array is read (:mod:`stefaland.splits.plan` gives the
training and test sites): the training arrays are loaded for the training sites only, so no
sampler, shuffle or bug can put a held-out site into a batch (the test checks the sampler anyway).
Arrays are first read with the store's statistics, then re-expressed in statistics of the training
sites and training period alone
(:func:`normalise_to_training`): the store's mean and std cover every site and every year, the
held-out ones included, and a held-out score must not depend on them. A pretrained encoder still
sees its own scaling: the registry converts between the two (``gain``/``shift``).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view

from stefaland.bounds import clip_to_bounds
from stefaland.errors import StefaLandError
from stefaland.run.variables import variable_columns

from .config import DataConfig

log = logging.getLogger("stefaland.finetune")


# --------------------------------------------------------------------------- arrays


@dataclass
class Variables:
    """Store indices of the variables a run uses, and their normalisation statistics."""

    dynamic: list[str]
    static: list[str]
    target: str
    dynamic_index: np.ndarray
    static_index: np.ndarray
    target_index: int
    dynamic_mean: np.ndarray  # (n_dyn,)
    dynamic_std: np.ndarray
    static_mean: np.ndarray  # (n_static,)
    static_std: np.ndarray
    target_mean: float
    target_std: float
    target_units: str
    static_target: bool = False  # one value per site (a column of ``static``), e.g. soil texture
    hidden_dynamic: list[int] = field(default_factory=list)  # input columns set to NaN (``data.hide``)
    hidden_static: list[int] = field(default_factory=list)
    target_bounds: tuple[float, float] = (-math.inf, math.inf)  # physical range, on the target's own scale

    def physical(self, z: np.ndarray) -> np.ndarray:
        """Z-scored target values (observed or simulated) on the target's own scale, float64."""
        return z.astype(np.float64) * self.target_std + self.target_mean

    def physical_simulation(self, z: np.ndarray) -> np.ndarray:
        """A model's z-scored output on the target's own scale, clipped to its physical range: what is
        scored and written (see stefaland.bounds for why clipping)."""
        return clip_to_bounds(self.physical(z), self.target_bounds)


def _index(dataset: xr.Dataset, dim: str, names: list[str] | None, what: str) -> tuple[list[str], np.ndarray]:
    names, columns = variable_columns(dataset[dim].values, names, what)
    return names, np.asarray(columns, dtype=np.int64)


def _std(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values) & (values > 0), values, 1.0)


def resolve_variables(dataset: xr.Dataset, config: DataConfig) -> Variables:
    """Variables of the run; a target naming a ``static`` variable makes a per-site (static) task."""
    dynamic, dyn_idx = _index(dataset, "dvar", config.dynamic, "dynamic")
    static, st_idx = _index(dataset, "svar", config.static, "static")
    targets = [str(v) for v in dataset["tvar"].values] if "target" in dataset else []
    svars = [str(v) for v in dataset["svar"].values]
    if config.target in targets:
        (target,), t_idx = _index(dataset, "tvar", [config.target], "target")
        units = str(dataset["tvar_units"].values[t_idx[0]]) if "tvar_units" in dataset.coords else ""
        mean, std = float(dataset["target_mean"].values[t_idx[0]]), float(_std(dataset["target_std"].values)[t_idx[0]])
        is_static = False
    elif config.target in svars:
        target, t_idx = config.target, np.asarray([svars.index(config.target)])
        units = str(dataset["svar_units"].values[t_idx[0]]) if "svar_units" in dataset.coords else ""
        mean, std = float(dataset["static_mean"].values[t_idx[0]]), float(_std(dataset["static_std"].values)[t_idx[0]])
        is_static = True
    else:
        raise StefaLandError(
            f"target variable {config.target!r} is neither a target ({', '.join(targets) or 'none'}) nor a static "
            "variable of the store"
        )
    from stefaland.bounds import resolve_bounds

    declared = None
    if not is_static and "tvar_lower" in dataset.coords and "tvar_upper" in dataset.coords:
        declared = (dataset["tvar_lower"].values[t_idx[0]], dataset["tvar_upper"].values[t_idx[0]])
    bounds = resolve_bounds(config.target_bounds, units, declared)
    hide = list(config.hide) + ([config.target] if is_static and config.target in static else [])
    unknown = [name for name in config.hide if name not in dynamic and name not in static]
    if unknown:
        raise StefaLandError(f"data.hide: {unknown[0]!r} is not one of the input variables")
    return Variables(
        dynamic, static, target, dyn_idx, st_idx, int(t_idx[0]),
        np.asarray(dataset["dynamic_mean"].values, np.float64)[dyn_idx], _std(dataset["dynamic_std"].values)[dyn_idx],
        np.asarray(dataset["static_mean"].values, np.float64)[st_idx], _std(dataset["static_std"].values)[st_idx],
        mean, std, units, is_static,
        [dynamic.index(n) for n in hide if n in dynamic], [static.index(n) for n in hide if n in static],
        bounds,
    )


@dataclass
class SiteData:
    """Normalised arrays of some sites over some days (NaN = missing, kept for the encoder)."""

    sites: np.ndarray  # (n,) str
    times: pd.DatetimeIndex  # (T,)
    dynamic: np.ndarray  # (n, T, n_dyn) float32 z-scores
    static: np.ndarray  # (n, n_static) float32 z-scores
    target: np.ndarray  # (n, T) float32 z-scores; (n,) for a static target
    lat: np.ndarray  # (n,)
    lon: np.ndarray  # (n,)
    history: int = 0  # leading days before the requested period (prediction warm-up)


def _window(dataset: xr.Dataset, start: str, end: str, what: str) -> slice:
    times = pd.DatetimeIndex(dataset["time"].values)
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if lo > hi:
        raise StefaLandError(f"data.{what}_start {start} is after data.{what}_end {end}")
    if hi < times[0] or lo > times[-1]:
        raise StefaLandError(
            f"data.{what}_start..{what}_end ({start}..{end}) does not overlap the store's days "
            f"({times[0].date()}..{times[-1].date()})"
        )
    return slice(max(lo, times[0]), min(hi, times[-1]))


def load_site_data(dataset: xr.Dataset, rows: np.ndarray, variables: Variables, start: str, end: str,
               what: str, history_days: int = 0) -> SiteData:
    """Read ``rows`` over ``start..end`` (plus up to ``history_days`` before, when the store has them)."""
    window = _window(dataset, start, end, what)
    first = window.start - pd.Timedelta(days=history_days)
    part = dataset.isel(site=np.sort(rows)).sel(time=slice(first, window.stop))
    dynamic = part["dynamic"].values[..., variables.dynamic_index].astype(np.float64)  # (n, T, n_dyn)
    static = part["static"].values[..., variables.static_index].astype(np.float64)  # (n, n_static)
    if variables.static_target:  # read before the hiding below removes it from the inputs
        target = part["static"].values[..., variables.target_index].astype(np.float64)  # (n,)
    else:
        target = part["target"].values[..., variables.target_index].astype(np.float64)  # (n, T)
    dynamic[..., variables.hidden_dynamic] = np.nan
    static[..., variables.hidden_static] = np.nan
    return SiteData(
        sites=np.asarray(part["site"].values).astype(str),
        times=pd.DatetimeIndex(part["time"].values),
        dynamic=((dynamic - variables.dynamic_mean) / variables.dynamic_std).astype(np.float32),
        static=((static - variables.static_mean) / variables.static_std).astype(np.float32),
        target=((target - variables.target_mean) / variables.target_std).astype(np.float32),
        lat=np.asarray(part["lat"].values, np.float64) if "lat" in part.coords else np.full(len(rows), np.nan),
        lon=np.asarray(part["lon"].values, np.float64) if "lon" in part.coords else np.full(len(rows), np.nan),
        history=int((pd.DatetimeIndex(part["time"].values) < window.start).sum()),
    )


def drop_unobserved(data: SiteData) -> SiteData:
    """Training sites without a single observation in the period only add noise-free zeros; drop them."""
    observed = np.isfinite(data.target) if data.target.ndim == 1 else np.isfinite(data.target).any(axis=1)
    if observed.all():
        return data
    log.warning("%d training site(s) have no observations in the training period and are skipped: %s",
                int((~observed).sum()), ", ".join(data.sites[~observed][:5]))
    if not observed.any():
        raise StefaLandError("no training site has observations in data.train_start..train_end")
    return subset_sites(data, observed)


def _refit(z: np.ndarray, mean: np.ndarray, std: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-express z-scores ``z`` (made with ``mean``/``std``) in statistics of ``z``'s own cells.

    A column without a finite value (a hidden input) keeps the old statistics.
    """
    raw = z.astype(np.float64) * std + mean
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        new_mean = np.nanmean(raw, axis=axes)
        new_std = np.nanstd(raw, axis=axes)
    new_mean = np.where(np.isfinite(new_mean), new_mean, mean)
    new_std = np.where(np.isfinite(new_std) & (new_std > 0), new_std, std)
    return ((raw - new_mean) / new_std).astype(np.float32), new_mean, new_std


def normalise_to_training(variables: Variables, data: SiteData) -> Variables:
    """Statistics of the training sites over the training period; ``data`` is re-scaled in place.

    The store's statistics were computed over every site and day, held-out basins and test years
    included; a model scored on those must not have been shaped by them, not even through its
    input scaling. The returned :class:`Variables` (written to ``run.json``) is what validation,
    testing and ``stefaland predict`` scale with.
    """
    data.dynamic, dynamic_mean, dynamic_std = _refit(data.dynamic, variables.dynamic_mean, variables.dynamic_std, (0, 1))
    data.static, static_mean, static_std = _refit(data.static, variables.static_mean, variables.static_std, (0,))
    target_axes = (0,) if data.target.ndim == 1 else (0, 1)
    data.target, target_mean, target_std = _refit(data.target, np.float64(variables.target_mean),
                                                 np.float64(variables.target_std), target_axes)
    return replace(variables, dynamic_mean=dynamic_mean, dynamic_std=dynamic_std, static_mean=static_mean,
                   static_std=static_std, target_mean=float(target_mean), target_std=float(target_std))


def split_validation_sites(data: SiteData, fraction: float, seed: int) -> tuple[SiteData, SiteData | None]:
    """Hold back ``fraction`` of the training sites (at least one, never all) for validation."""
    if fraction <= 0:
        return data, None
    n = len(data.sites)
    count = min(max(1, round(fraction * n)), n - 1)
    if count < 1:
        raise StefaLandError(f"data.valid_fraction {fraction}: {n} training site(s) are too few to hold any back")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, count, replace=False)] = True
    return subset_sites(data, ~chosen), subset_sites(data, chosen)


def subset_sites(data: SiteData, keep: np.ndarray) -> SiteData:
    return SiteData(data.sites[keep], data.times, data.dynamic[keep], data.static[keep], data.target[keep],
                    data.lat[keep], data.lon[keep], data.history)


# --------------------------------------------------------------------------- batches


@dataclass
class WindowBatch:
    """Training windows of some sites with their target, as tensors (pretraining's is ``MaskedBatch``)."""

    dynamic: torch.Tensor  # (B, T, n_dyn) z-scores, NaN = missing
    static: torch.Tensor  # (B, n_static) z-scores, NaN = missing
    target: torch.Tensor  # (B, T) z-scores, NaN = missing; (B,) for a static target
    sites: np.ndarray  # (B,) str: which sites the rows came from (the leakage test reads it)
    rows: np.ndarray | None = None  # (B,) int: their rows in the SiteData (per-site loss weights)


@dataclass(frozen=True)
class WindowRows:
    """Zero-copy views in which every training window is one contiguous row.

    ``dynamic`` (n, T - L + 1, L * n_dyn) is a strided view of the (n, T * n_dyn) array: the window
    of site ``s`` starting on day ``t`` is ``dynamic[s, t]``, so a batch is B contiguous block
    copies, not B * L fancy-index pairs of 24 bytes each (which left the loader at 3-4 % of the
    memory-copy bound, now ~31 %; see benchmarks/README.md). ``target`` is the same for the
    target series (None for a static target).
    """

    dynamic: np.ndarray
    target: np.ndarray | None

    @classmethod
    def of(cls, data: SiteData, length: int) -> WindowRows:
        n, days, n_dyn = data.dynamic.shape
        flat = np.ascontiguousarray(data.dynamic).reshape(n, days * n_dyn)
        dynamic = sliding_window_view(flat, length * n_dyn, axis=1)[:, ::n_dyn]
        target = None if data.target.ndim == 1 else sliding_window_view(np.ascontiguousarray(data.target), length, axis=1)
        return cls(dynamic, target)

    def target_windows(self, data: SiteData, site_rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(B, L) target windows, or (B,) values of a static target."""
        return data.target[site_rows] if self.target is None else self.target[site_rows, starts]


def make_batch(data: SiteData, site_rows: np.ndarray, starts: np.ndarray, length: int,
               rows: WindowRows | None = None, target: np.ndarray | None = None) -> WindowBatch:
    """Windows ``starts[i] .. starts[i] + length`` of sites ``site_rows[i]``.

    Pass ``rows`` when calling often, and ``target`` when the target windows were already gathered.
    """
    rows = rows if rows is not None else WindowRows.of(data, length)
    return WindowBatch(
        dynamic=torch.from_numpy(rows.dynamic[site_rows, starts].reshape(len(site_rows), length, -1)),  # (B, L, n_dyn)
        static=torch.from_numpy(data.static[site_rows]),  # (B, n_static)
        target=torch.from_numpy(rows.target_windows(data, site_rows, starts) if target is None else target),
        sites=data.sites[site_rows],
        rows=site_rows,
    )


def hydrodl_iterations(n_sites: int, n_time: int, batch_size: int, length: int, loss_days: int) -> int:
    """hydroDL's epoch: enough batches that every (site, day) is drawn at least once with 99 % probability."""
    coverage = min(batch_size * loss_days / (n_sites * max(n_time - length + loss_days, 1)), 0.99)
    return max(1, math.ceil(math.log(0.01) / math.log(1.0 - coverage)))


def batches_per_epoch(data: SiteData, batch_size: int, length: int, loss_days: int, configured: int | None,
                      min_updates: int, epochs: int) -> int:
    """The configured number, else hydroDL's rule raised so the run makes at least ``min_updates``.

    hydroDL's rule is tuned for hundreds of basins (531 CAMELS basins: ~730 batches an epoch); on
    a 19-basin set it gives 13, and 25 epochs then stop after 325 updates, long before an LSTM has
    learned a rainfall-runoff response.
    """
    if configured is not None:
        return configured
    n_sites, n_time = data.dynamic.shape[:2]
    rule = hydrodl_iterations(n_sites, n_time, batch_size, length, loss_days)
    return max(rule, math.ceil(min_updates / max(epochs, 1)))


class WindowSampler:
    """Random (site, window) batches from the training sites, as hydroDL's ``randomIndex`` draws them.

    ``length`` is the full window (model warm-up + loss days); a window is redrawn (a few times)
    when it holds no observation on the loss days, so a batch never contributes an empty loss.
    """

    def __init__(self, data: SiteData, batch_size: int, length: int, loss_days: int,
                 iterations: int | None, generator: np.random.Generator) -> None:
        n_sites, n_time = data.dynamic.shape[:2]
        if n_time < length:
            raise StefaLandError(
                f"the training period has {n_time} days, fewer than one window ({length} days: "
                "data.seq_len plus the model's warm-up); lengthen it or shorten data.seq_len"
            )
        self.data, self.batch_size, self.length, self.loss_days = data, batch_size, length, loss_days
        self.rng = generator
        self.rows = WindowRows.of(data, length)
        self.iterations = iterations if iterations is not None else hydrodl_iterations(
            n_sites, n_time, batch_size, length, loss_days)

    def _draw(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        n_sites, n_time = self.data.dynamic.shape[:2]
        sites = self.rng.integers(0, n_sites, count)
        starts = self.rng.integers(0, n_time - self.length + 1, count)
        return sites, starts

    def _draw_observed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A batch's (sites, starts, target windows), windows with no observation on their loss days
        redrawn up to 5 times. The check reads the target windows the batch needs anyway, so it
        costs no extra gather; static targets are always observed."""
        sites, starts = self._draw(self.batch_size)
        target = self.rows.target_windows(self.data, sites, starts)
        if target.ndim == 1:
            return sites, starts, target
        loss = slice(self.length - self.loss_days, None)
        empty = np.flatnonzero(~np.isfinite(target[:, loss]).any(axis=1))
        for _retry in range(5):
            if not len(empty):
                break
            sites[empty], starts[empty] = self._draw(len(empty))
            target[empty] = self.rows.target_windows(self.data, sites[empty], starts[empty])
            empty = empty[~np.isfinite(target[empty, loss]).any(axis=1)]
        return sites, starts, target

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self):
        for _ in range(self.iterations):
            sites, starts, target = self._draw_observed()
            yield make_batch(self.data, sites, starts, self.length, self.rows, target)


# --------------------------------------------------------------------------- whole-period windows


@dataclass
class PredictionWindows:
    """How the test period is cut into overlapping model windows.

    Input series = ``pad`` days before the test period + the test period. Every window is
    ``warmup + seq_len`` input days; its first ``warmup`` days are consumed by the model (HBV's
    spin-up), then the first ``overlap`` outputs only warm the network up and are discarded, and
    the remaining ``seq_len - overlap`` outputs are kept. ``pad = warmup + overlap`` makes the
    first window's first kept output the first test day.
    """

    n_test: int
    seq_len: int
    warmup: int
    overlap: int

    @property
    def length(self) -> int:
        return self.warmup + self.seq_len

    @property
    def pad(self) -> int:
        return max(self.warmup + self.overlap, self.length - self.n_test)

    def starts(self) -> list[int]:
        """Window starts (input index) whose kept outputs tile the test period; the last is aligned to the end."""
        keep = self.seq_len - self.overlap
        total = self.pad + self.n_test
        first = self.pad - self.warmup - self.overlap
        starts = list(range(first, total - self.length + 1, keep))
        if not starts or starts[-1] + self.length < total:
            starts.append(total - self.length)
        return starts


def padded_inputs(data: SiteData, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic inputs (n, pad + test days, n_dyn) with ``pad`` days before the test period, and its target.

    Days the store has before the test period are used; when it has fewer, the series is
    extended backwards with a copy of its own first days (a plausible spin-up climate), which
    only ever feeds discarded warm-up outputs.
    """
    history = data.history
    dynamic = data.dynamic
    target = data.target if data.target.ndim == 1 else data.target[:, history:]
    if history >= pad:
        return dynamic[:, history - pad:], target
    need = pad - history
    test_days = dynamic.shape[1] - history
    filler = np.concatenate([dynamic[:, history:]] * math.ceil(need / max(test_days, 1)), axis=1)[:, :need]
    return np.concatenate([filler, dynamic], axis=1), target
