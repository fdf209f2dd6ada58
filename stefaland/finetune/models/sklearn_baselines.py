"""Linear-regression and random-forest baselines (scikit-learn) on the same inputs.

They see one day at a time, so each day's row carries the forcings of that day, their trailing
means over 7 and 30 days (the memory an LSTM learns by itself) and the static attributes.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..config import ModelSection

if TYPE_CHECKING:  # scikit-learn takes seconds to import; only the baselines pay for it
    from sklearn.base import RegressorMixin

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


class SklearnBaseline:
    """Fit on sampled (site, day) rows of the training sites; predict every day of the test sites."""

    def __init__(self, regressor: RegressorMixin, max_rows: int) -> None:
        self.regressor, self.max_rows = regressor, max_rows

    def fit(self, dynamic: np.ndarray, static: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> None:
        x = features(dynamic, static)  # (n, T, f)
        rows = np.flatnonzero(np.isfinite(target).ravel())
        rows = rows[rows % target.shape[1] >= HISTORY] if target.shape[1] > HISTORY else rows  # full trailing means
        if len(rows) > self.max_rows:
            rows = rng.choice(rows, self.max_rows, replace=False)
        self.regressor.fit(x.reshape(-1, x.shape[-1])[rows], target.ravel()[rows])

    def fit_static(self, dynamic: np.ndarray, static: np.ndarray, target: np.ndarray) -> None:
        """A per-site target: one row per site, its attributes and its mean forcings."""
        observed = np.isfinite(target)
        self.regressor.fit(site_features(dynamic, static)[observed], target[observed])

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
