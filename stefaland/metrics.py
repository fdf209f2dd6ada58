"""Per-site skill metrics, vectorised over sites, as the paper's Appendix E and MHPI define them.

Every metric is computed per site on the time steps where **both** ``obs`` and ``sim`` are finite
(NaN-safe), then summarised across sites by the **median** (paper Appendix E.3), with the mean,
standard deviation and the count of sites scored and skipped beside it.

Why vectorised: a report scores thousands of sites × decades of days × several models; a Python
loop per site (the way hydroDL does it) takes minutes, numpy reductions over a ``(site, time)``
array take seconds. Sites are processed in blocks so memory stays bounded.

A site gets NaN for a metric -- and is counted as *skipped*, never dropped -- when it has fewer than
``min_valid`` paired steps, or when the metric is undefined there (constant observations for NSE,
Corr, KGE -- a spread below 1e-10 of the mean counts as constant; zero observed volume for the percent
biases; a constant simulation for Corr and KGE; low flows at or below 1e-6 for FLV, and a flat low
end of the flow-duration curve for FLV_log). A metric never comes out as ±inf: only finite values
or NaN.

Every metric is one :class:`Metric` in the registry :data:`METRICS`: its function, which direction
is better, and how the report's table, its plots and the model card show it. The report, the plots
and the card read the registry, so a metric is added in one place: :func:`register_metric` (or the
``stefaland.metrics`` entry-point group, for an installed plug-in).

References
----------
* Nash, J. E. & Sutcliffe, J. V. (1970), J. Hydrol. 10(3), 282-290 (NSE).
* Gupta, H. V., Kling, H., Yilmaz, K. K. & Martinez, G. F. (2009), J. Hydrol. 377, 80-91 (KGE).
* Yilmaz, K. K., Gupta, H. V. & Wagener, T. (2008), Water Resour. Res. 44, W09417 (FDC signatures).
* Feng, D., Fang, K. & Shen, C. (2020), Water Resour. Res. 56, e2019WR026793, and MHPI's hydroDL
  ``statError`` (FLV, FHV, RMSE_FDC in linear space, as the StefaLand paper reports them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from stefaland.plugins import load_entry_points_once

log = logging.getLogger("stefaland.metrics")

#: Fewer paired steps than this and a site is not scored (a month of daily data).
DEFAULT_MIN_VALID = 30

#: Fraction of the lowest flows in FLV and the highest flows in FHV (MHPI: 30 % and 2 %).
LOW_FRACTION = 0.3
HIGH_FRACTION = 0.02

#: Flows at or below this (in the data's units) count as zero in FLV and FLV_log: FLV_log clamps
#: them to it before taking logs (as neuralhydrology does), and FLV is undefined when the mean low
#: flow is no larger, as is FLV_log when the low end's mean log-spread is no larger.
NEAR_ZERO = 1e-6

#: Sites per block. 8 × 40 years of float64 days is ~1 MB per temporary: small enough to stay in
#: cache and in malloc's heap. At 32 sites (~4 MB) every temporary was mmap'd and page-faulted anew
#: and half the CPU time went to the kernel (measured: 2× slower wall time on 1,024 sites).
BLOCK_SITES = 8


@dataclass(frozen=True)
class LowEnd:
    """The lowest ``k = round(0.3 n)`` sorted values of each site, as FLV and FLV_log read them.

    Only the first ``max k`` columns of the sorted block are kept: the rest of each curve is never read.
    """

    mask: np.ndarray  # (site, width): True for the site's lowest k values
    obs: np.ndarray  # (site, width) float64, ascending
    sim: np.ndarray  # (site, width) float64, ascending (sorted independently of obs)
    k: np.ndarray  # (site,) int: k
    k_safe: np.ndarray  # (site,) float64: k, at least 1 (a divisor)


class SiteBlock:
    """A block of sites' ``(site, time)`` series and the statistics several metrics share.

    A metric function reads what it needs from the block; each statistic is computed once per block,
    on first use, over the *paired* steps (both ``obs`` and ``sim`` finite). Unpaired steps are
    zeroed out of every sum rather than removed, so all sites share one array.

    Parameters
    ----------
    obs_raw, sim_raw : numpy.ndarray
        Observed and simulated values, shape ``(site, time)``, in their own floating dtype, NaN where
        missing.

    Attributes
    ----------
    obs, sim : numpy.ndarray
        The same as float64 (exact enough sums without a full-size float64 copy of the inputs).
    valid : numpy.ndarray
        ``(site, time)`` bool: the paired steps.
    n : numpy.ndarray
        ``(site,)`` int: paired steps per site.
    n_safe : numpy.ndarray
        ``(site,)`` float64: ``n``, with 1 for a site with none, to divide by.
    """

    def __init__(self, obs_raw: np.ndarray, sim_raw: np.ndarray) -> None:
        self.obs_raw, self.sim_raw = obs_raw, sim_raw
        self.obs = obs_raw.astype(np.float64, copy=False)
        self.sim = sim_raw.astype(np.float64, copy=False)
        self.valid = np.isfinite(self.obs) & np.isfinite(self.sim)
        self.n = self.valid.sum(axis=1)
        self.n_safe = np.where(self.n > 0, self.n, 1).astype(np.float64)

    @cached_property
    def paired_obs(self) -> np.ndarray:
        """``obs`` on the paired steps, 0 elsewhere."""
        return np.where(self.valid, self.obs, 0.0)

    @cached_property
    def paired_sim(self) -> np.ndarray:
        """``sim`` on the paired steps, 0 elsewhere."""
        return np.where(self.valid, self.sim, 0.0)

    @cached_property
    def mean_obs(self) -> np.ndarray:
        """Mean of the paired ``obs`` per site."""
        return self.paired_obs.sum(axis=1) / self.n_safe

    @cached_property
    def mean_sim(self) -> np.ndarray:
        """Mean of the paired ``sim`` per site."""
        return self.paired_sim.sum(axis=1) / self.n_safe

    @cached_property
    def anomaly_obs(self) -> np.ndarray:
        """``obs - mean obs`` on the paired steps, 0 elsewhere."""
        return np.where(self.valid, self.obs - self.mean_obs[:, None], 0.0)

    @cached_property
    def anomaly_sim(self) -> np.ndarray:
        """``sim - mean sim`` on the paired steps, 0 elsewhere."""
        return np.where(self.valid, self.sim - self.mean_sim[:, None], 0.0)

    @cached_property
    def var_obs(self) -> np.ndarray:
        """Population variance of the paired ``obs``."""
        return np.einsum("ij,ij->i", self.anomaly_obs, self.anomaly_obs) / self.n_safe

    @cached_property
    def var_sim(self) -> np.ndarray:
        """Population variance of the paired ``sim``."""
        return np.einsum("ij,ij->i", self.anomaly_sim, self.anomaly_sim) / self.n_safe

    @cached_property
    def obs_constant(self) -> np.ndarray:
        """Sites whose paired ``obs`` do not vary (see :func:`_constant`)."""
        return _constant(self.var_obs, self.mean_obs)

    @cached_property
    def sim_constant(self) -> np.ndarray:
        """Sites whose paired ``sim`` do not vary."""
        return _constant(self.var_sim, self.mean_sim)

    @cached_property
    def error(self) -> np.ndarray:
        """``sim - obs`` on the paired steps, 0 elsewhere."""
        return self.paired_sim - self.paired_obs

    @cached_property
    def sum_obs(self) -> np.ndarray:
        """The observed volume: sum of the paired ``obs`` per site."""
        return self.paired_obs.sum(axis=1)

    @cached_property
    def corr(self) -> np.ndarray:
        """Pearson's r, NaN where either series is constant, clipped to [-1, 1] against rounding."""
        cov = np.einsum("ij,ij->i", self.anomaly_obs, self.anomaly_sim) / self.n_safe
        corr = np.where(self.obs_constant | self.sim_constant, np.nan, cov / np.sqrt(self.var_obs * self.var_sim))
        return np.clip(corr, -1.0, 1.0)

    @cached_property
    def sorted_obs(self) -> np.ndarray:
        """Each site's paired ``obs`` ascending, in the input dtype; the ``n`` values first, then NaN.

        Sorted in the input dtype (float32 from predictions files sorts ~1.6× faster) and cast after:
        the cast is monotone, so the order and the values are the same as sorting in float64.
        """
        return np.sort(np.where(self.valid, self.obs_raw, np.nan), axis=1)

    @cached_property
    def sorted_sim(self) -> np.ndarray:
        """Each site's paired ``sim`` ascending, sorted independently of ``obs``."""
        return np.sort(np.where(self.valid, self.sim_raw, np.nan), axis=1)

    @cached_property
    def low_end(self) -> LowEnd:
        """The lowest ``round(0.3 n)`` sorted values of each site (ties: half to even, as hydroDL)."""
        k_low = np.rint(LOW_FRACTION * self.n).astype(np.int64)
        width = max(int(k_low.max()), 1)
        mask = np.arange(width)[None, :] < k_low[:, None]
        low_obs = self.sorted_obs[:, :width].astype(np.float64)
        low_sim = self.sorted_sim[:, :width].astype(np.float64)
        return LowEnd(mask, low_obs, low_sim, k_low, np.maximum(k_low, 1).astype(np.float64))


#: Which values of a metric are better: larger, smaller, or closer to zero.
Direction = Literal["higher", "lower", "zero"]
#: The arrow a table heading shows for each :data:`Direction`, as in the paper's tables.
ARROWS: dict[str, str] = {"higher": "↑", "lower": "↓", "zero": "→0"}


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One skill metric: how to compute it per site, and how the report and the model card show it.

    Parameters
    ----------
    name : str
        The metric's key: a column of the report's per-site CSV, a ``metric`` of its summary, a name
        in a task's ``table_metrics``.
    direction : {"higher", "lower", "zero"}
        Which values are better: larger (NSE), smaller (RMSE) or closer to 0 (a percent bias). The
        table's heading shows it as ↑, ↓ or →0.
    fn : callable
        ``fn(block: SiteBlock) -> numpy.ndarray``: one float per site of the block, NaN where the
        metric is undefined. Sites with fewer than ``min_valid`` paired steps, and ±inf values,
        become NaN (skipped) whatever ``fn`` returns. Called with numpy's divide and invalid
        warnings silenced.
    bounded : bool, default False
        A skill score whose range worth seeing is [-1, 1]: the report's CDF and map show only that
        range (a few sites at NSE -50 would otherwise flatten the rest).
    on_card : int or None, default None
        The metric's column in the model card's held-out table, counted from 1; None leaves it off.
    pooled : int or None, default None
        The metric's place among those a static target (one value per site, e.g. soil texture) is
        scored on, pooled across sites; None for a metric that needs a time series per site.
    decimals : int, default 3
        Decimals of the metric's cells in the report's table (1 for the percentages).
    label : str or None, default None
        The name in table headings when it is not ``name`` (``R²`` for ``R2``).
    """

    name: str
    direction: Direction
    fn: Callable[[SiteBlock], np.ndarray]
    bounded: bool = False
    on_card: int | None = None
    pooled: int | None = None
    decimals: int = 3
    label: str | None = None

    def __post_init__(self) -> None:
        """Refuse a name or direction the report could not show."""
        if not self.name or self.name != self.name.strip() or self.name == "n":
            raise ValueError(f"metric name {self.name!r}: a non-empty name without surrounding spaces, not 'n'")
        if self.direction not in ARROWS:
            raise ValueError(f"metric {self.name}: direction {self.direction!r}; choose from {', '.join(ARROWS)}")

    @property
    def arrow(self) -> str:
        """↑, ↓ or →0: which way is better, for a table heading."""
        return ARROWS[self.direction]

    @property
    def heading(self) -> str:
        """The name a table shows."""
        return self.label or self.name


def _constant(variance: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Sites whose series is constant, allowing for rounding.

    The mean of 0.1 repeated is not exactly 0.1, so its computed variance is ~1e-34, not 0. A spread
    below 1e-10 of the level is treated as none.
    """
    return variance <= (1e-10 * np.abs(mean)) ** 2 + np.finfo(np.float64).tiny


def rmse(error: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Root mean square error, eq. 13: sqrt(mean((sim - obs)^2)) over the paired steps.

    ubRMSE (eq. 14-16) is the same applied to the anomalies ``(sim - mean sim) - (obs - mean obs)``,
    so it removes the bias: RMSE^2 = ubRMSE^2 + bias^2.
    """
    return np.sqrt(np.einsum("ij,ij->i", error, error) / n)


def kge(corr: np.ndarray, var_s: np.ndarray, var_o: np.ndarray, mean_s: np.ndarray, mean_o: np.ndarray,
        obs_constant: np.ndarray) -> np.ndarray:
    """Kling-Gupta efficiency, 2009 form (Gupta et al. 2009; paper eq. 22).

    KGE = 1 - sqrt((r - 1)^2 + (sigma_sim / sigma_obs - 1)^2 + (mu_sim / mu_obs - 1)^2), with the
    population standard deviations (the ratio is the same for any ddof). Undefined (NaN) for a
    constant observed series, a zero observed mean, or a constant simulation (r undefined).
    """
    alpha = np.sqrt(var_s / var_o)
    beta = mean_s / mean_o
    value = 1.0 - np.sqrt((corr - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)
    return np.where(obs_constant | (mean_o == 0), np.nan, value)


# -- the built-in metrics (paper Appendix E), each a function of a SiteBlock ------------------------

def _rmse(b: SiteBlock) -> np.ndarray:
    """RMSE, eq. 13 (see :func:`rmse`)."""
    return rmse(b.error, b.n_safe)


def _ubrmse(b: SiteBlock) -> np.ndarray:
    """ubRMSE, eq. 14-16: the RMSE of the anomalies (see :func:`rmse`)."""
    return rmse(b.anomaly_sim - b.anomaly_obs, b.n_safe)


def _mae(b: SiteBlock) -> np.ndarray:
    """MAE = mean(|sim - obs|), eq. 19."""
    return np.abs(b.error).sum(axis=1) / b.n_safe


def _corr(b: SiteBlock) -> np.ndarray:
    """Corr = cov(sim, obs) / (sigma_sim sigma_obs), Pearson's r, eq. 17."""
    return b.corr


def _r2(b: SiteBlock) -> np.ndarray:
    """R2 = Corr^2, the squared Pearson correlation (what the paper's Table 4 reports)."""
    return b.corr**2


def _nse(b: SiteBlock) -> np.ndarray:
    """NSE = 1 - sum((sim - obs)^2) / sum((obs - mean obs)^2) (Nash & Sutcliffe 1970; eq. 18)."""
    return np.where(b.obs_constant, np.nan, 1.0 - np.einsum("ij,ij->i", b.error, b.error) / (b.var_obs * b.n_safe))


def _kge(b: SiteBlock) -> np.ndarray:
    """KGE, eq. 22 (see :func:`kge`)."""
    return kge(b.corr, b.var_sim, b.var_obs, b.mean_sim, b.mean_obs, b.obs_constant)


def _pbias(b: SiteBlock) -> np.ndarray:
    """PBIAS = 100 * sum(sim - obs) / sum(obs), eq. 21 over all flows."""
    return np.where(b.sum_obs == 0, np.nan, b.error.sum(axis=1) / b.sum_obs * 100.0)


def _flv(b: SiteBlock) -> np.ndarray:
    """FLV (MHPI, linear): percent bias of the lowest ``k = round(0.3 n)`` sorted values.

    FLV = 100 * sum(sim_low - obs_low) / sum(obs_low). Low flows that are all (near) zero leave
    nothing to take a percentage of (a ratio over 1e-9 would be ±1e11 % and drag the mean), so such
    a site is undefined (NaN, skipped).
    """
    low = b.low_end
    obs_low = np.where(low.mask, low.obs, 0.0).sum(axis=1)
    sim_low = np.where(low.mask, low.sim, 0.0).sum(axis=1)
    near_zero = np.abs(obs_low) / low.k_safe <= NEAR_ZERO
    return np.where(near_zero | (low.k == 0), np.nan, (sim_low - obs_low) / obs_low * 100.0)


def _flv_log(b: SiteBlock) -> np.ndarray:
    """FLV_log (Yilmaz et al. 2008, eq. A3; neuralhydrology's ``fdc_flv``): FLV's low end in log space.

    Over the same lowest ``k`` values, zeros and negatives set to 1e-6,
    -100 * (sum(log s - min log s) - sum(log o - min log o)) / (sum(log o - min log o) + 1e-6).
    A flat low end (constant or all-zero low flows) has no log-space shape to compare: the 1e-6
    guard of the denominator would turn any difference into ±1e11 %, so such a site is NaN.
    """
    low = b.low_end
    log_o = np.log(np.maximum(np.where(low.mask, low.obs, 1.0), NEAR_ZERO))
    log_s = np.log(np.maximum(np.where(low.mask, low.sim, 1.0), NEAR_ZERO))
    qol = np.where(low.mask, log_o - log_o[:, :1], 0.0).sum(axis=1)
    qsl = np.where(low.mask, log_s - log_s[:, :1], 0.0).sum(axis=1)
    flat = qol / low.k_safe <= NEAR_ZERO
    return np.where(flat | (low.k == 0), np.nan, -(qsl - qol) / (qol + 1e-6) * 100.0)


def _fhv(b: SiteBlock) -> np.ndarray:
    """FHV (MHPI, linear): percent bias of the sorted values from index ``round(0.98 n)`` up (top 2 %)."""
    k_high = np.rint((1.0 - HIGH_FRACTION) * b.n).astype(np.int64)
    first = int(k_high.min()) if b.n.size else 0  # only the high end is read
    position = np.arange(first, b.obs_raw.shape[1])[None, :]
    high = (position >= k_high[:, None]) & (position < b.n[:, None])
    obs_high = np.where(high, b.sorted_obs[:, first:].astype(np.float64), 0.0).sum(axis=1)
    sim_high = np.where(high, b.sorted_sim[:, first:].astype(np.float64), 0.0).sum(axis=1)
    return np.where((obs_high == 0) | ~high.any(axis=1), np.nan, (sim_high - obs_high) / obs_high * 100.0)


def _rmse_fdc(b: SiteBlock) -> np.ndarray:
    """RMSE_FDC (paper eq. 20): RMSE between the 100-point flow-duration curves.

    Point ``p`` of a curve is the descending-sorted value at index floor(p / 100 * n), p = 0..99
    (MHPI's ``calFDC``). floor(p / 100 * n) is taken in floating point, exactly as calFDC computes it (it differs from the
    integer floor(p n / 100) for some n, e.g. p = 29, n = 100 gives 28).
    """
    n_col = b.n[:, None]
    index = np.clip(n_col - 1 - (np.arange(100)[None, :] / 100 * n_col).astype(np.int64), 0, None)
    fdc_o = np.take_along_axis(b.sorted_obs, index, axis=1).astype(np.float64)
    fdc_s = np.take_along_axis(b.sorted_sim, index, axis=1).astype(np.float64)
    return np.where(b.n > 0, np.sqrt(np.mean((fdc_s - fdc_o) ** 2, axis=1)), np.nan)


#: Every metric :func:`site_metrics` computes, in the order of the report's columns; plug-ins add
#: theirs with :func:`register_metric`.
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(name="RMSE", direction="lower", fn=_rmse, on_card=4, pooled=3),
        Metric(name="ubRMSE", direction="lower", fn=_ubrmse, pooled=4),
        Metric(name="MAE", direction="lower", fn=_mae, pooled=5),
        Metric(name="Corr", direction="higher", fn=_corr, bounded=True, on_card=3, pooled=1),
        Metric(name="R2", direction="higher", fn=_r2, bounded=True, pooled=2, label="R²"),
        Metric(name="NSE", direction="higher", fn=_nse, bounded=True, on_card=1, pooled=6),
        Metric(name="KGE", direction="higher", fn=_kge, bounded=True, on_card=2),
        Metric(name="PBIAS", direction="zero", fn=_pbias, pooled=7, decimals=1),
        Metric(name="FLV", direction="zero", fn=_flv, on_card=6, decimals=1),
        Metric(name="FHV", direction="zero", fn=_fhv, on_card=5, decimals=1),
        Metric(name="FLV_log", direction="zero", fn=_flv_log, decimals=1),
        Metric(name="RMSE_FDC", direction="lower", fn=_rmse_fdc),
    )
}

#: Installed packages add metrics under this entry-point group (``name = "module:METRIC"``, a
#: :class:`Metric`), so every ``stefaland`` command scores them without a wrapper script.
ENTRY_POINT_GROUP = "stefaland.metrics"


def register_metric(metric: Metric) -> None:
    """Add ``metric`` to the registry, so reports score it and tables, plots and cards can show it.

    Parameters
    ----------
    metric : Metric
        The metric; ``metric.name`` becomes its key. Registering the same metric twice is harmless.

    Raises
    ------
    ValueError
        When a different metric already has the name: a plug-in never silently replaces a built-in.
    """
    existing = METRICS.get(metric.name)
    if existing is not None and existing != metric:
        raise ValueError(f"metric name {metric.name!r} is already registered ({existing.fn.__module__}.{existing.fn.__name__})")
    METRICS[metric.name] = metric


def known_metrics() -> dict[str, Metric]:
    """The registry, with the metrics of installed plug-ins (loaded once, on first use).

    Returns
    -------
    dict of str to Metric
        Every metric by name, the built-ins first, in the order of the report's columns.
    """
    load_entry_points_once(ENTRY_POINT_GROUP, Metric, lambda _name, metric: register_metric(metric), "metric", log)
    return METRICS


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; ``ValueError`` naming the known ones otherwise."""
    metrics = known_metrics()
    if name not in metrics:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(metrics)}")
    return metrics[name]


def card_metrics() -> list[Metric]:
    """The metrics of the model card's held-out table, in its column order (:attr:`Metric.on_card`)."""
    shown = [m for m in known_metrics().values() if m.on_card is not None]
    return sorted(shown, key=lambda m: m.on_card or 0)


def pooled_metric_names() -> list[str]:
    """The metrics a static target is scored on, pooled across sites, in order (:attr:`Metric.pooled`)."""
    pooled = [m for m in known_metrics().values() if m.pooled is not None]
    return [m.name for m in sorted(pooled, key=lambda m: m.pooled or 0)]


def _check_names(names: Iterable[str]) -> list[Metric]:
    metrics = known_metrics()
    names = list(names)
    unknown = [n for n in names if n not in metrics]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(metrics)}")
    return [metrics[n] for n in names]


def _as_2d(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must have dims (site, time), got shape {array.shape}")
    return array


def site_metrics(
    obs: np.ndarray,
    sim: np.ndarray,
    metrics: Sequence[str] | None = None,
    min_valid: int = DEFAULT_MIN_VALID,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Each metric per site for ``(site, time)`` arrays; NaN where a site cannot be scored.

    A 1-D input is read as one value per site (a static target); score those with
    :func:`pooled_metrics` instead, since per-site skill needs a series. For large arrays call
    :func:`keep_freed_memory_for_scoring` once first (the report and the benchmark do).

    Parameters
    ----------
    obs, sim : numpy.ndarray
        Observed and simulated values, shape ``(site, time)``, NaN where missing.
    metrics : sequence of str, optional
        Names of registered metrics; every one in :func:`known_metrics` when None.
    min_valid : int, default :data:`DEFAULT_MIN_VALID`
        Fewer paired steps than this and a site is NaN for every metric.
    workers : int, optional
        Threads scoring blocks of sites in parallel (default :func:`default_workers`).

    Returns
    -------
    dict of str to numpy.ndarray
        One float64 value per site for each metric, in the order asked.
    """
    chosen = _check_names(known_metrics() if metrics is None else metrics)
    obs, sim = _as_2d(obs, "obs"), _as_2d(sim, "sim")
    if obs.shape != sim.shape:
        raise ValueError(f"obs {obs.shape} and sim {sim.shape} must have the same shape")
    n_sites = obs.shape[0]
    out = {metric.name: np.full(n_sites, np.nan) for metric in chosen}

    def score_block(start: int) -> None:
        block = slice(start, min(start + BLOCK_SITES, n_sites))
        for name, values in _block_metrics(obs[block], sim[block], chosen, min_valid).items():
            out[name][block] = values  # blocks write disjoint slices: safe across threads

    starts = range(0, n_sites, BLOCK_SITES)
    workers = min(workers or default_workers(), len(starts))
    if workers <= 1:
        for start in starts:
            score_block(start)
    else:  # numpy's reductions and sorts release the GIL, so blocks score in parallel
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(score_block, starts))
    return out


def keep_freed_memory_for_scoring() -> bool:
    """Ask glibc to keep freed memory in the process instead of handing it back to the kernel.

    Scoring allocates ~20 temporaries of ~1 MB per block of sites; with glibc's adaptive defaults
    these were unmapped and page-faulted back on every block, and the kernel's share of the CPU time
    exceeded numpy's (measured 3,434 sites × 40 years: 15.6 s wall without this, 4.5 s with it). Process-wide
    and harmless (up to 256 MB stays reserved); a no-op returning False where malloc is not glibc's.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 256 * 2**20))
    except (OSError, AttributeError, TypeError):
        return False


def default_workers() -> int:
    """Threads for scoring: the CPUs this process may use, capped at 8 (memory bandwidth bound)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def _block_metrics(obs_raw: np.ndarray, sim_raw: np.ndarray, metrics: list[Metric], min_valid: int) -> dict[str, np.ndarray]:
    """Each of ``metrics`` for one block of sites.

    NaN for a site with too few paired steps or a non-finite value: ±inf (an overflow, a division a
    metric did not foresee) is "cannot be scored", not a score.
    """
    block = SiteBlock(obs_raw, sim_raw)
    scored = block.n >= max(int(min_valid), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        results = {metric.name: _one_per_site(metric, block) for metric in metrics}
    return {name: np.where(scored & np.isfinite(values), values, np.nan) for name, values in results.items()}


def _one_per_site(metric: Metric, block: SiteBlock) -> np.ndarray:
    """``metric.fn`` on the block, held to its contract: one float per site."""
    values = np.asarray(metric.fn(block), dtype=np.float64)
    if values.shape != block.n.shape:
        raise ValueError(f"metric {metric.name} returned shape {values.shape} for {block.n.size} sites; "
                         "a metric returns one value per site")
    return values


def pooled_metrics(obs: np.ndarray, sim: np.ndarray, metrics: Sequence[str] = ("Corr", "R2", "RMSE"),
                   min_valid: int = 2) -> dict[str, float]:
    """Metrics across sites for a static target (one value per site, e.g. WoSIS soil texture).

    A soil profile has no time series, so skill is the agreement across all held-out profiles
    pooled together (paper Table 4: Corr and R^2 = Corr^2, the squared Pearson correlation -- the
    table's values, e.g. Corr 0.70, R^2 0.50, are consistent with that, not with NSE).
    """
    obs = np.asarray(obs, dtype=np.float64).reshape(1, -1)
    sim = np.asarray(sim, dtype=np.float64).reshape(1, -1)
    values = site_metrics(obs, sim, metrics=metrics, min_valid=min_valid)
    result = {name: float(value[0]) for name, value in values.items()}
    result["n"] = int((np.isfinite(obs) & np.isfinite(sim)).sum())
    return result


def summarise(per_site: dict[str, np.ndarray]) -> dict[str, dict[str, float | int]]:
    """Median (the paper's headline statistic), mean, std, and sites scored / skipped per metric."""
    summary: dict[str, dict[str, float | int]] = {}
    for name, values in per_site.items():
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        scored = int(finite.size)
        summary[name] = {
            "median": float(np.median(finite)) if scored else math.nan,
            "mean": float(finite.mean()) if scored else math.nan,
            "std": float(finite.std()) if scored else math.nan,
            "n_scored": scored,
            "n_skipped": int(values.size - scored),
        }
    return summary
