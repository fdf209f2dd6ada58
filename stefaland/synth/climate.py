"""Daily basin-mean forcings for a chunk of sites, vectorised over sites *and* time.

Temperature: a seasonal cycle whose mean falls with latitude and with elevation (lapse rate
6.5 K/km) and whose amplitude grows with latitude and continentality, plus AR(1) day-to-day
anomalies. Precipitation: a two-state Markov chain for wet-day occurrence (persistence, seasonal
wet-day frequency) with gamma-distributed wet-day amounts, scaled so that each site's long-term
PET/P equals its drawn aridity. Day length is astronomical (FAO-56 declination and sunset hour
angle); shortwave radiation is top-of-atmosphere radiation times a transmissivity that drops on
wet days, reported like Daymet as the mean flux over the daylight period. Vapour pressure is a
fraction of the Tetens saturation pressure at tmin (higher on wet days), so it never exceeds it.
PET is **Hargreaves (1985)**: 0.0023·Ra·(Tmean+17.8)·√(Tmax−Tmin), which needs only what the files
hold and gives CAMELS-like 1.5–6 mm/day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

SOLAR_CONSTANT = 0.0820  # MJ m-2 min-1
LAPSE_RATE = 6.5e-3      # K/m
MJ_TO_MM = 0.408         # MJ m-2 day-1 of radiation -> mm/day of evaporation (1/λ)
WET_PERSISTENCE = 0.35   # p11 - p01, the lag-1 autocorrelation of wet-day occurrence

FORCING_VARIABLES = ("dayl", "prcp", "srad", "tmax", "tmin", "vp", "pet")


def saturation_vapour_pressure(temp_c: np.ndarray) -> np.ndarray:
    """Tetens (1930) over water, in Pa."""
    return 610.78 * np.exp(17.27 * temp_c / (temp_c + 237.3))


def solar_geometry(lat_deg: np.ndarray, doy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Day length (s) and top-of-atmosphere radiation (MJ m-2 day-1), FAO-56 eqs. 21-25, 34."""
    phi = np.deg2rad(lat_deg)[:, None]
    angle = 2.0 * np.pi * doy[None, :] / 365.0
    declination = 0.409 * np.sin(angle - 1.39)
    inverse_distance = 1.0 + 0.033 * np.cos(angle)
    sunset = np.arccos(np.clip(-np.tan(phi) * np.tan(declination), -1.0, 1.0))
    daylength = 86400.0 * sunset / np.pi
    ra = (24.0 * 60.0 / np.pi) * SOLAR_CONSTANT * inverse_distance * (
        sunset * np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.sin(sunset)
    )
    return daylength, np.maximum(ra, 0.0)


def markov_occurrence(p01: np.ndarray, p11: np.ndarray, initial: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Two-state Markov chain without a time loop.

    With p01 <= p11 a uniform draw u < p01 makes the day wet whatever yesterday was, and u >= p11
    makes it dry whatever yesterday was; in between the state persists. So each day copies the
    state set by the most recent "decisive" day, found with a running maximum of indices.
    """
    wet_anyway = uniform < p01
    decisive = wet_anyway | (uniform >= p11)
    steps = np.arange(uniform.shape[1])[None, :]
    last = np.maximum.accumulate(np.where(decisive, steps, -1), axis=1)
    state = np.take_along_axis(wet_anyway, np.maximum(last, 0), axis=1)
    return np.where(last >= 0, state, initial[:, None])


def generate_forcings(sites: pd.DataFrame, dates: pd.DatetimeIndex, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Forcings (n_sites, n_days), already rounded to the 2 decimals the files hold.

    Rounding here (not only when writing) makes every attribute computed from these arrays equal
    what a reader recomputes from the text files.
    """
    n, t = len(sites), len(dates)
    lat = sites["gauge_lat"].to_numpy(float)
    elev = sites["elev_mean"].to_numpy(float)
    cont = sites["continentality"].to_numpy(float)
    aridity = sites["aridity_target"].to_numpy(float)
    humid = 1.0 / (1.0 + aridity)  # 0.14 (desert) .. 0.8 (rain forest)
    doy = dates.day_of_year.to_numpy().astype(float)
    abs_lat = np.abs(lat)

    # --- temperature (daily mean), degC
    annual_mean = 27.0 - 0.55 * np.maximum(abs_lat - 12.0, 0.0) - LAPSE_RATE * elev
    amplitude = 1.0 + 0.22 * abs_lat * (0.6 + 0.8 * cont)
    # Gauged basins lie below permanent ice: keep the warmest month at >= 6 degC so snow packs
    # melt out each summer instead of piling up for decades.
    annual_mean = np.maximum(annual_mean, 6.0 - amplitude)
    coldest_doy = np.where(lat >= 0, 20.0, 202.0)
    season = np.cos(2.0 * np.pi * (doy[None, :] - coldest_doy[:, None]) / 365.25)
    climatology = annual_mean[:, None] - amplitude[:, None] * season
    phi = 0.75
    anomaly_sd = 1.5 + 2.5 * cont * np.minimum(abs_lat / 50.0, 1.0)
    burn_in = 30
    shocks = rng.standard_normal((n, t + burn_in)) * (anomaly_sd * np.sqrt(1 - phi**2))[:, None]
    anomaly = lfilter([1.0], [1.0, -phi], shocks, axis=1)[:, burn_in:]
    tmean = climatology + anomaly

    # --- wet-day occurrence
    wet_doy = sites["wet_season_doy"].to_numpy(float)
    wet_amp = sites["wet_season_amp"].to_numpy(float)
    rain_season = np.cos(2.0 * np.pi * (doy[None, :] - wet_doy[:, None]) / 365.25)
    wet_fraction = np.clip(0.42 - 0.17 * np.log(aridity), 0.08, 0.7)
    wet_prob = np.clip(wet_fraction[:, None] * (1.0 + 0.6 * wet_amp[:, None] * rain_season), 0.02, 0.9)
    p01 = wet_prob * (1.0 - WET_PERSISTENCE)
    p11 = p01 + WET_PERSISTENCE
    wet = markov_occurrence(p01, p11, rng.random(n) < wet_fraction, rng.random((n, t)))

    # --- temperature range, radiation, humidity, PET
    dtr = (6.0 + 9.0 * (1.0 - humid))[:, None] * np.exp(0.15 * rng.standard_normal((n, t)))
    dtr = np.maximum(np.where(wet, 0.6 * dtr, dtr), 1.5)
    tmax = np.round(tmean + dtr / 2.0, 2)
    tmin = np.round(tmean - dtr / 2.0, 2)
    daylength, ra = solar_geometry(lat, doy)
    clear = (0.77 - 0.15 * humid)[:, None] + 0.05 * rng.standard_normal((n, t))
    transmissivity = np.clip(np.where(wet, 0.45 * clear, clear), 0.12, 0.8)
    srad = ra * transmissivity * 1e6 / np.maximum(daylength, 3600.0)  # W/m2 over daylight (Daymet)
    relative = np.where(wet, 0.97, (0.55 + 0.4 * humid)[:, None] + 0.04 * rng.standard_normal((n, t)))
    vp = np.clip(relative, 0.2, 0.99) * saturation_vapour_pressure(tmin)
    mid = (tmax + tmin) / 2.0
    pet = np.maximum(0.0023 * MJ_TO_MM * ra * (mid + 17.8) * np.sqrt(np.maximum(tmax - tmin, 0.0)), 0.0)
    pet = np.round(pet, 2)

    # --- wet-day amounts: gamma, seasonal mean, scaled to the site's aridity
    shape = np.clip(0.75 + 0.1 * rng.standard_normal(n), 0.5, 1.0)
    seasonal_mean = 1.0 + 0.5 * wet_amp[:, None] * rain_season
    amounts = rng.gamma(shape[:, None], 1.0, (n, t)) / shape[:, None] * seasonal_mean
    amounts = np.where(wet, amounts, 0.0)
    target_mean = pet.mean(axis=1) / aridity
    scale = target_mean / np.maximum(amounts.mean(axis=1), 1e-9)
    prcp = np.round(np.where(wet, np.maximum(amounts * scale[:, None], 0.1), 0.0), 2)

    return {
        "dayl": np.round(np.broadcast_to(daylength, (n, t)), 2),
        "prcp": prcp,
        "srad": np.round(srad, 2),
        "tmax": tmax,
        "tmin": tmin,
        "vp": np.round(vp, 2),
        "pet": pet,
    }
