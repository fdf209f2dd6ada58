"""Soil, geology and vegetation attributes with the correlations real catchments show.

Texture is a Dirichlet draw (sand+silt+clay = 100 %) shifted sandier in dry climates; porosity and
saturated conductivity follow Cosby et al. (1984)'s univariate pedotransfer functions of sand and
clay; soils are thinner on steep slopes; geology sets permeability and porosity together;
forest, LAI and green fraction rise with humidity, their seasonal swing with the temperature cycle.
Names and units are CAMELS' (``geol_porostiy`` keeps CAMELS' spelling).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def texture(aridity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) sand/silt/clay percentages from a Dirichlet whose sand weight grows with aridity."""
    dryness = np.clip(np.log(aridity), -1.5, 1.8)
    alpha = np.stack([3.0 * np.exp(0.45 * dryness), 3.0 * np.exp(-0.2 * dryness), 1.6 * np.ones_like(dryness)], axis=1)
    draws = rng.gamma(alpha * 2.0)
    return 100.0 * draws / draws.sum(axis=1, keepdims=True)


def soil_and_geology(sites: pd.DataFrame, aridity: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``camels_soil`` and ``camels_geol`` columns (without gauge_id)."""
    n = len(sites)
    slope = sites["slope_mean"].to_numpy(float)
    sand, silt, clay = texture(aridity, rng).T
    clay = 100.0 - sand - silt  # exact closure after floating-point division
    porosity = np.clip((50.5 - 0.142 * sand - 0.037 * clay) / 100.0 + 0.01 * rng.standard_normal(n), 0.3, 0.68)
    conductivity_in_h = 10 ** (-0.60 + 0.0126 * sand - 0.0064 * clay + 0.1 * rng.standard_normal(n))
    conductivity = np.clip(conductivity_in_h * 2.54, 0.3, 15.0)  # cm/h
    depth_statsgo = np.clip(1.55 - 0.006 * slope + 0.15 * rng.standard_normal(n), 0.4, 1.5)
    depth_pelletier = np.clip(np.exp(np.log(3.0) - 0.02 * slope + 0.8 * rng.standard_normal(n)), 0.27, 50.0)
    soil = pd.DataFrame({
        "soil_depth_pelletier": depth_pelletier,
        "soil_depth_statsgo": depth_statsgo,
        "soil_porosity": porosity,
        "soil_conductivity": conductivity,
        "max_water_content": depth_statsgo * porosity,
        "sand_frac": sand,
        "silt_frac": silt,
        "clay_frac": clay,
    })
    carbonate = np.where(rng.random(n) < 0.2, rng.beta(0.7, 0.7, n), 0.0)
    permeability = np.clip(-14.0 + 1.1 * rng.standard_normal(n) + 1.2 * carbonate, -16.5, -10.9)
    geol_porosity = np.clip(0.13 + 0.04 * (permeability + 14.0) + 0.03 * rng.standard_normal(n), 0.01, 0.28)
    geol = pd.DataFrame({
        "carbonate_rocks_frac": carbonate,
        "geol_porostiy": geol_porosity,
        "geol_permeability": permeability,
    })
    return soil, geol


def vegetation(aridity: np.ndarray, temp_amplitude: np.ndarray, mean_temp: np.ndarray,
               rng: np.random.Generator) -> pd.DataFrame:
    """``camels_vege`` columns: greener and more forested where wetter, more deciduous where seasonal."""
    n = len(aridity)
    humid = 1.0 / (1.0 + aridity)
    cold_limit = np.clip((mean_temp + 6.0) / 6.0, 0.3, 1.0)  # tundra-like sites lose their forest
    frac_forest = np.clip((1.6 * humid - 0.35 + 0.12 * rng.standard_normal(n)) * cold_limit, 0.0, 1.0)
    lai_max = np.clip(0.4 + 6.0 * humid + 0.4 * rng.standard_normal(n), 0.37, 5.6)
    deciduous = np.clip(0.2 + temp_amplitude / 20.0 + 0.05 * rng.standard_normal(n), 0.1, 0.9)
    gvf_max = np.clip(0.2 + 0.95 * humid + 0.05 * rng.standard_normal(n), 0.18, 0.92)
    gvf_swing = np.clip(0.1 + temp_amplitude / 30.0 + 0.05 * rng.standard_normal(n), 0.03, 0.7)
    return pd.DataFrame({
        "frac_forest": frac_forest,
        "lai_max": lai_max,
        "lai_diff": lai_max * deciduous,
        "gvf_max": gvf_max,
        "gvf_diff": gvf_max * gvf_swing,
    })
