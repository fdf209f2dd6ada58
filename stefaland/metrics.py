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
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Every metric :func:`site_metrics` can compute, and whether larger is better (None: closer to 0).
METRICS: dict[str, bool | None] = {
    "RMSE": False,
    "ubRMSE": False,
    "MAE": False,
    "Corr": True,
    "R2": True,
    "NSE": True,
    "KGE": True,
    "PBIAS": None,
    "FLV": None,
    "FHV": None,
    "FLV_log": None,
    "RMSE_FDC": False,
}

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


def _check_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return names


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
    """
    names = _check_names(METRICS if metrics is None else metrics)
    obs, sim = _as_2d(obs, "obs"), _as_2d(sim, "sim")
    if obs.shape != sim.shape:
        raise ValueError(f"obs {obs.shape} and sim {sim.shape} must have the same shape")
    n_sites = obs.shape[0]
    out = {name: np.full(n_sites, np.nan) for name in names}

    def score_block(start: int) -> None:
        block = slice(start, min(start + BLOCK_SITES, n_sites))
        for name, values in _block_metrics(obs[block], sim[block], names, min_valid).items():
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
    exceeded numpy's (measured 3,434 sites × 40 years: 15.6 s wall before, 4.5 s after). Process-wide
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


def _block_metrics(obs_raw: np.ndarray, sim_raw: np.ndarray, names: list[str], min_valid: int) -> dict[str, np.ndarray]:
    """The moment-based metrics of a block of sites, all over the paired steps (paper Appendix E):

    * RMSE, ubRMSE: see :func:`rmse` (eq. 13-16).
    * MAE = mean(|sim - obs|) (eq. 19).
    * Corr = cov(sim, obs) / (sigma_sim sigma_obs), Pearson's r (eq. 17).
    * R2 = Corr^2, the squared Pearson correlation (what the paper's Table 4 reports).
    * NSE = 1 - sum((sim - obs)^2) / sum((obs - mean obs)^2) (Nash & Sutcliffe 1970; eq. 18).
    * KGE: see :func:`kge` (eq. 22).
    * PBIAS = 100 * sum(sim - obs) / sum(obs) (eq. 21 over all flows).

    Unpaired steps are zeroed out of every sum rather than removed, so all sites share one array.
    """
    # float64 per block: exact enough sums without a full-size float64 copy of the inputs
    obs = obs_raw.astype(np.float64, copy=False)
    sim = sim_raw.astype(np.float64, copy=False)
    valid = np.isfinite(obs) & np.isfinite(sim)
    n = valid.sum(axis=1)
    scored = n >= max(int(min_valid), 1)
    n_safe = np.where(n > 0, n, 1).astype(np.float64)
    o = np.where(valid, obs, 0.0)
    s = np.where(valid, sim, 0.0)
    mean_o = o.sum(axis=1) / n_safe
    mean_s = s.sum(axis=1) / n_safe
    anom_o = np.where(valid, obs - mean_o[:, None], 0.0)
    anom_s = np.where(valid, sim - mean_s[:, None], 0.0)
    var_o = np.einsum("ij,ij->i", anom_o, anom_o) / n_safe
    var_s = np.einsum("ij,ij->i", anom_s, anom_s) / n_safe
    obs_constant = _constant(var_o, mean_o)
    sim_constant = _constant(var_s, mean_s)
    cov = np.einsum("ij,ij->i", anom_o, anom_s) / n_safe
    error = s - o
    sum_o = o.sum(axis=1)

    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(obs_constant | sim_constant, np.nan, cov / np.sqrt(var_o * var_s))
        corr = np.clip(corr, -1.0, 1.0)
        results: dict[str, np.ndarray] = {}
        for name in names:
            if name == "RMSE":
                value = rmse(error, n_safe)
            elif name == "ubRMSE":
                value = rmse(anom_s - anom_o, n_safe)
            elif name == "MAE":
                value = np.abs(error).sum(axis=1) / n_safe
            elif name == "Corr":
                value = corr
            elif name == "R2":
                value = corr**2
            elif name == "NSE":
                value = np.where(obs_constant, np.nan, 1.0 - np.einsum("ij,ij->i", error, error) / (var_o * n_safe))
            elif name == "KGE":
                value = kge(corr, var_s, var_o, mean_s, mean_o, obs_constant)
            elif name == "PBIAS":
                value = np.where(sum_o == 0, np.nan, error.sum(axis=1) / sum_o * 100.0)
            else:
                continue
            results[name] = value
        sorted_names = [name for name in names if name in ("FLV", "FHV", "FLV_log", "RMSE_FDC")]
        if sorted_names:
            results.update(_duration_metrics(obs_raw, sim_raw, valid, n, sorted_names))
    # ±inf (an overflow, a division the guards above did not foresee) is "cannot be scored", not a score
    return {name: np.where(scored & np.isfinite(results[name]), results[name], np.nan) for name in names}


def _constant(variance: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """A constant series, allowing for rounding: the mean of 0.1 repeated is not exactly 0.1, so its
    computed variance is ~1e-34, not 0. A spread below 1e-10 of the level is treated as none."""
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


def _duration_metrics(obs: np.ndarray, sim: np.ndarray, valid: np.ndarray, n: np.ndarray,
                      names: list[str]) -> dict[str, np.ndarray]:
    """FLV, FHV, FLV_log and RMSE_FDC: metrics of the independently sorted flows.

    Rows are sorted ascending with the unpaired steps as NaN, which ``np.sort`` puts last, so the
    first ``n`` entries of each row are that site's paired values in order.

    * FLV (MHPI, linear): percent bias of the lowest ``k = round(0.3 n)`` sorted values,
      100 * sum(sim_low - obs_low) / sum(obs_low).
    * FHV (MHPI, linear): the same over the sorted values from index ``round(0.98 n)`` up (top 2 %).
    * FLV_log (Yilmaz et al. 2008, eq. A3; neuralhydrology's ``fdc_flv``): over the same lowest
      ``k`` values, zeros and negatives set to 1e-6, in log space,
      -100 * (sum(log s - min log s) - sum(log o - min log o)) / (sum(log o - min log o) + 1e-6).
    * RMSE_FDC (paper eq. 20): RMSE between the 100-point flow-duration curves, point ``p`` being
      the descending-sorted value at index floor(p / 100 * n), p = 0..99 (MHPI's ``calFDC``).

    Ties in rounding follow Python's ``round`` (half to even), as hydroDL does.
    """
    # Sorted in the input dtype (float32 from predictions files sorts ~1.6× faster) and cast after:
    # the cast is monotone, so the order and the values are the same as sorting in float64.
    sorted_o = np.sort(np.where(valid, obs, np.nan), axis=1)
    sorted_s = np.sort(np.where(valid, sim, np.nan), axis=1)
    k_low = np.rint(LOW_FRACTION * n).astype(np.int64)
    k_high = np.rint((1.0 - HIGH_FRACTION) * n).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    if "FLV" in names or "FLV_log" in names:
        width = max(int(k_low.max()), 1)  # only the low end of each curve is read
        low = np.arange(width)[None, :] < k_low[:, None]
        low_o, low_s = sorted_o[:, :width].astype(np.float64), sorted_s[:, :width].astype(np.float64)
        k_safe = np.maximum(k_low, 1).astype(np.float64)
        if "FLV" in names:
            obs_low = np.where(low, low_o, 0.0).sum(axis=1)
            sim_low = np.where(low, low_s, 0.0).sum(axis=1)
            # low flows that are all (near) zero leave nothing to take a percentage of: a ratio over
            # 1e-9 gave ±1e11 % and dragged the mean; such a site is undefined (NaN, skipped)
            near_zero = np.abs(obs_low) / k_safe <= NEAR_ZERO
            out["FLV"] = np.where(near_zero | (k_low == 0), np.nan, (sim_low - obs_low) / obs_low * 100.0)
        if "FLV_log" in names:
            log_o = np.log(np.maximum(np.where(low, low_o, 1.0), NEAR_ZERO))
            log_s = np.log(np.maximum(np.where(low, low_s, 1.0), NEAR_ZERO))
            qol = np.where(low, log_o - log_o[:, :1], 0.0).sum(axis=1)
            qsl = np.where(low, log_s - log_s[:, :1], 0.0).sum(axis=1)
            # a flat low end (constant or all-zero low flows) has no log-space shape to compare:
            # the 1e-6 guard of the denominator then turned any difference into ±1e11 %
            flat = qol / k_safe <= NEAR_ZERO
            out["FLV_log"] = np.where(flat | (k_low == 0), np.nan, -(qsl - qol) / (qol + 1e-6) * 100.0)
    if "FHV" in names:
        first = int(k_high.min()) if n.size else 0  # only the high end is read
        position = np.arange(first, obs.shape[1])[None, :]
        high = (position >= k_high[:, None]) & (position < n[:, None])
        obs_high = np.where(high, sorted_o[:, first:].astype(np.float64), 0.0).sum(axis=1)
        sim_high = np.where(high, sorted_s[:, first:].astype(np.float64), 0.0).sum(axis=1)
        out["FHV"] = np.where((obs_high == 0) | ~high.any(axis=1), np.nan, (sim_high - obs_high) / obs_high * 100.0)
    if "RMSE_FDC" in names:
        n_col = n[:, None]
        # floor(p / 100 * n) in floating point, exactly as calFDC computes it (it differs from the
        # integer floor(p n / 100) for some n, e.g. p = 29, n = 100 gives 28)
        index = np.clip(n_col - 1 - (np.arange(100)[None, :] / 100 * n_col).astype(np.int64), 0, None)
        fdc_o = np.take_along_axis(sorted_o, index, axis=1).astype(np.float64)
        fdc_s = np.take_along_axis(sorted_s, index, axis=1).astype(np.float64)
        out["RMSE_FDC"] = np.where(n > 0, np.sqrt(np.mean((fdc_s - fdc_o) ** 2, axis=1)), np.nan)
    return out


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
