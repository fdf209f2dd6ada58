"""Where the virtual gauges are: regions, coordinates, elevation, basin area and holdout folds.

Regions are lat/lon boxes on several continents, each with its own climate character (aridity,
continentality, rainy season). They play the part of CAMELS' HUC-02 regions: a PUR-style holdout
removes a region whole, so a model must transfer between climates, not interpolate within one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Region:
    code: str            # 2-digit code, the CAMELS ``huc_02`` analogue and the folder name
    name: str            # label used as the ``region`` column
    lat: tuple[float, float]
    lon: tuple[float, float]
    elev_mean: float     # m
    elev_sd: float       # m
    aridity: float       # typical PET/P of the region (log-normal spread around it)
    continentality: float  # 0 (maritime) .. 1 (deep continental): widens the temperature cycle
    wet_season_doy: int  # day of year of the precipitation peak
    wet_season_amp: float  # relative amplitude of the precipitation cycle (0 = uniform)


REGIONS: tuple[Region, ...] = (
    Region("01", "new_england", (41.0, 47.0), (-74.0, -67.0), 300, 200, 0.6, 0.5, 200, 0.10),
    Region("02", "appalachia", (35.0, 41.0), (-84.0, -77.0), 600, 300, 0.75, 0.4, 190, 0.15),
    Region("03", "gulf_coast", (29.0, 34.0), (-95.0, -82.0), 80, 60, 0.9, 0.2, 200, 0.25),
    Region("04", "great_plains", (35.0, 48.0), (-104.0, -95.0), 800, 400, 1.8, 0.9, 170, 0.60),
    Region("05", "desert_southwest", (31.0, 37.0), (-115.0, -104.0), 1400, 500, 4.0, 0.7, 215, 0.70),
    Region("06", "rocky_mountains", (37.0, 48.0), (-115.0, -105.0), 2400, 500, 1.2, 0.8, 30, 0.35),
    Region("07", "pacific_northwest", (42.0, 49.0), (-124.0, -120.0), 700, 500, 0.4, 0.1, 350, 0.80),
    Region("08", "mediterranean_california", (34.0, 40.0), (-123.0, -118.0), 800, 600, 1.6, 0.2, 15, 0.95),
    Region("09", "amazonia", (-10.0, 0.0), (-70.0, -50.0), 200, 150, 0.45, 0.1, 60, 0.50),
    Region("10", "pampas", (-38.0, -28.0), (-65.0, -57.0), 200, 150, 1.2, 0.4, 20, 0.45),
    Region("11", "patagonian_andes", (-50.0, -38.0), (-73.0, -68.0), 1000, 500, 0.5, 0.2, 170, 0.60),
    Region("12", "western_europe", (44.0, 54.0), (-4.0, 10.0), 300, 250, 0.8, 0.3, 330, 0.20),
    Region("13", "alpine_europe", (45.0, 48.0), (6.0, 15.0), 1500, 600, 0.5, 0.5, 190, 0.30),
    Region("14", "scandinavia", (58.0, 66.0), (10.0, 30.0), 400, 250, 0.6, 0.6, 220, 0.25),
    Region("15", "sahel", (10.0, 16.0), (-10.0, 20.0), 350, 150, 3.5, 0.6, 225, 0.95),
    Region("16", "east_african_highlands", (-5.0, 5.0), (30.0, 38.0), 1600, 400, 1.1, 0.2, 110, 0.45),
    Region("17", "monsoon_asia", (20.0, 30.0), (75.0, 90.0), 300, 300, 0.8, 0.5, 200, 0.95),
    Region("18", "southeast_australia", (-38.0, -28.0), (140.0, 152.0), 400, 300, 2.0, 0.4, 170, 0.25),
)

N_PUB_FOLDS = 10
UNGAUGED_FRACTION = 0.05   # sites with forcings and attributes but no streamflow file
GAPPY_FRACTION = 0.25      # gauged sites whose record has missing stretches


def site_ids(n_sites: int) -> list[str]:
    """8-digit ids starting with 9, which no real USGS gauge uses, so nobody mistakes them."""
    if n_sites > 9_999_999:
        raise ValueError("at most 9,999,999 virtual sites fit an 8-digit id")
    return [f"9{i:07d}" for i in range(1, n_sites + 1)]


def draw_sites(n_sites: int, rng: np.random.Generator, ungauged_fraction: float = UNGAUGED_FRACTION) -> pd.DataFrame:
    """One row per site with location, terrain, region, folds and its climate character.

    Regions are dealt round-robin before shuffling so even a small world covers many regions
    (every PUR fold then has sites once ``n_sites >= 18``). ``ungauged_fraction`` of the sites get
    forcings and attributes but no streamflow (the foundation-model setting: most land is ungauged).
    """
    ids = site_ids(n_sites)
    region_index = rng.permutation(np.arange(n_sites) % len(REGIONS))
    regions = [REGIONS[i] for i in region_index]
    attr = lambda name: np.array([getattr(r, name) for r in regions], dtype=float)  # noqa: E731
    lat_lo, lat_hi = np.array([r.lat for r in regions]).T
    lon_lo, lon_hi = np.array([r.lon for r in regions]).T
    lat = lat_lo + (lat_hi - lat_lo) * rng.random(n_sites)
    lon = lon_lo + (lon_hi - lon_lo) * rng.random(n_sites)
    # Log-normal spread keeps lowland regions positive and mountains skewed to high peaks.
    elev_sigma = np.log1p(attr("elev_sd") / attr("elev_mean"))
    elevation = np.clip(attr("elev_mean") * np.exp(elev_sigma * rng.standard_normal(n_sites) - elev_sigma**2 / 2), 5.0, 4200.0)
    # Steeper terrain at altitude (CAMELS slope_mean spans ~1..250 m/km).
    slope = np.clip(np.exp(2.3 + 0.001 * elevation + 0.6 * rng.standard_normal(n_sites)), 0.8, 250.0)
    area = np.clip(10 ** (2.5 + 0.55 * rng.standard_normal(n_sites)), 10.0, 5000.0)
    aridity = np.clip(attr("aridity") * np.exp(0.3 * rng.standard_normal(n_sites)), 0.25, 6.0)
    continentality = np.clip(attr("continentality") + 0.1 * rng.standard_normal(n_sites), 0.0, 1.0)
    wet_doy = attr("wet_season_doy") + 15.0 * rng.standard_normal(n_sites)
    wet_amp = np.clip(attr("wet_season_amp") * (1.0 + 0.2 * rng.standard_normal(n_sites)), 0.0, 0.95)
    pub_fold = 1 + rng.permutation(np.arange(n_sites) % N_PUB_FOLDS)  # 1-based, as MHPI's PUB_ID
    n_ungauged = int(round(ungauged_fraction * n_sites)) or (1 if n_sites >= 8 else 0)
    n_ungauged = min(n_ungauged, n_sites - 1)
    gauged = np.ones(n_sites, dtype=bool)
    gauged[rng.choice(n_sites, size=n_ungauged, replace=False)] = False
    gauged_index = np.flatnonzero(gauged)
    n_gappy = int(round(GAPPY_FRACTION * gauged_index.size)) or (1 if gauged_index.size >= 4 else 0)
    has_gaps = np.zeros(n_sites, dtype=bool)
    has_gaps[rng.choice(gauged_index, size=n_gappy, replace=False)] = True
    return pd.DataFrame({
        "gauge_id": ids,
        "region": [r.name for r in regions],
        "huc_02": [r.code for r in regions],
        "pub_fold": pub_fold.astype(int),
        "pur_fold": pur_folds([REGIONS[i].code for i in region_index]),
        "gauge_lat": lat,
        "gauge_lon": lon,
        "elev_mean": elevation,
        "slope_mean": slope,
        "area_gages2": area,
        "aridity_target": aridity,
        "continentality": continentality,
        "wet_season_doy": wet_doy,
        "wet_season_amp": wet_amp,
        "gauged": gauged,
        "has_gaps": has_gaps,
    })


def gauge_names(sites: pd.DataFrame) -> list[str]:
    """Readable names in the USGS style ("X Creek near Y")."""
    return [f"Virtual Creek {gid[-4:]} near {region.replace('_', ' ').title()}"
            for gid, region in zip(sites["gauge_id"], sites["region"])]


def pur_folds(region_codes: list[str]) -> np.ndarray:
    """The CAMELS PUR grouping of the 18 region codes (the HUC-02 analogues) into 7 folds, 1-based."""
    from ..splits.schemes import FIRST_FOLD, PUR_REGIONS

    fold_of = {code: fold for fold, group in enumerate(PUR_REGIONS, start=FIRST_FOLD) for code in group}
    return np.array([fold_of[int(code)] for code in region_codes], dtype=int)
