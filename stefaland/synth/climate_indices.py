"""CAMELS climate indices (Addor et al. 2017, table 2) computed from daily forcings.

The indices are recomputed from the very arrays written to the forcing files, so the attribute
tables and the time series can never disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEASONS = np.array(["djf", "djf", "mam", "mam", "mam", "jja", "jja", "jja", "son", "son", "son", "djf"])


def _annual_sine(values: np.ndarray, dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fit of mean + a·sin(ωt) + b·cos(ωt) for every site at once."""
    days = (dates - dates[0]).days.to_numpy().astype(float)
    omega = 2.0 * np.pi * days / 365.25
    design = np.stack([np.ones_like(omega), np.sin(omega), np.cos(omega)], axis=1)
    coef = np.linalg.solve(design.T @ design, (np.ascontiguousarray(values) @ design).T)
    return coef[0], coef[1], coef[2]


def _mean_run_length(events: np.ndarray) -> np.ndarray:
    """Average length of consecutive-True runs per row (NaN where there is none)."""
    starts = events.copy()
    starts[:, 1:] &= ~events[:, :-1]
    n_runs = starts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_runs > 0, events.sum(axis=1) / n_runs, np.nan)


def _timing(events: np.ndarray, dates: pd.DatetimeIndex) -> list[str]:
    season = SEASONS[dates.month.to_numpy() - 1]
    labels = np.array(["djf", "mam", "jja", "son"])
    counts = np.stack([events[:, season == label].sum(axis=1) for label in labels], axis=1)
    return [labels[i] if row.sum() > 0 else "NA" for i, row in zip(counts.argmax(axis=1), counts)]


def climate_indices(prcp: np.ndarray, tmax: np.ndarray, tmin: np.ndarray, pet: np.ndarray,
                    dates: pd.DatetimeIndex) -> pd.DataFrame:
    """``camels_clim`` columns for (n_sites, n_days) arrays.

    * ``p_seasonality`` (Woods 2009): δ_P·cos(phase_P − phase_T) from sine fits of P and T;
      > 0 when precipitation peaks in the warm season, < 0 in the cold season.
    * ``frac_snow``: share of precipitation on days with mean temperature below 0 °C.
    * ``high_prec_*``: days with P ≥ 5 × mean daily P; ``low_prec_*``: days with P < 1 mm.
      Frequencies in days per year, durations as mean run length in days.
    """
    tmean = (tmax + tmin) / 2.0
    years = len(dates) / 365.25
    p_mean = prcp.mean(axis=1)
    pet_mean = pet.mean(axis=1)
    p_level, p_sin, p_cos = _annual_sine(prcp, dates)
    _, t_sin, t_cos = _annual_sine(tmean, dates)
    t_amplitude = np.maximum(np.hypot(t_sin, t_cos), 1e-6)
    p_seasonality = (p_sin * t_sin + p_cos * t_cos) / (np.maximum(p_level, 1e-9) * t_amplitude)
    total = prcp.sum(axis=1)
    frac_snow = np.where(total > 0, np.where(tmean < 0.0, prcp, 0.0).sum(axis=1) / np.maximum(total, 1e-9), 0.0)
    high = prcp >= 5.0 * p_mean[:, None]
    low = prcp < 1.0
    return pd.DataFrame({
        "p_mean": p_mean,
        "pet_mean": pet_mean,
        "p_seasonality": p_seasonality,
        "frac_snow": frac_snow,
        "aridity": pet_mean / np.maximum(p_mean, 1e-9),
        "high_prec_freq": high.sum(axis=1) / years,
        "high_prec_dur": _mean_run_length(high),
        "high_prec_timing": _timing(high, dates),
        "low_prec_freq": low.sum(axis=1) / years,
        "low_prec_dur": _mean_run_length(low),
        "low_prec_timing": _timing(low, dates),
    })


def temperature_amplitude(tmax: np.ndarray, tmin: np.ndarray, dates: pd.DatetimeIndex) -> np.ndarray:
    """Amplitude (K) of the fitted annual temperature cycle: drives leaf seasonality."""
    _, t_sin, t_cos = _annual_sine((tmax + tmin) / 2.0, dates)
    return np.hypot(t_sin, t_cos)
