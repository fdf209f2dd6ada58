"""The one synthetic planet behind every miniature product of ``data synth --products``.

Each product is a different view of the same fields (land, elevation, climate normals, cities), so
values agree across products the way real ones do: the land cover is forest where the MSWEP
miniature is wet, NDVI is low where GMTED is high, GLHYMPS follows GLiM. The fields are analytic
functions of (lat, lon) plus a seeded set of smooth waves, so any grid (0.5° statics, 2.5° daily
forcing, vector tiles) samples the same planet and results depend only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

# Continents as lat/lon boxes (south, north, west, east). Their union is the land; every region of
# stefaland/synth/sites.py lies inside the box of its continent.
CONTINENTS: dict[str, tuple[float, float, float, float]] = {
    "north_america": (15.0, 72.0, -168.0, -52.0),
    "south_america": (-56.0, 13.0, -82.0, -34.0),
    "europe": (36.0, 71.0, -10.0, 40.0),
    "africa": (-35.0, 37.0, -18.0, 52.0),
    "asia": (5.0, 75.0, 40.0, 150.0),
    "oceania": (-44.0, -10.0, 112.0, 154.0),
}
REGION_CONTINENT = {  # the regions of sites.py, by continent
    **dict.fromkeys(("new_england", "appalachia", "gulf_coast", "great_plains", "desert_southwest",
                     "rocky_mountains", "pacific_northwest", "mediterranean_california"), "north_america"),
    **dict.fromkeys(("amazonia", "pampas", "patagonian_andes"), "south_america"),
    **dict.fromkeys(("western_europe", "alpine_europe", "scandinavia"), "europe"),
    **dict.fromkeys(("sahel", "east_african_highlands"), "africa"),
    "monsoon_asia": "asia",
    "southeast_australia": "oceania",
}
LAKES = ((42.0, 48.0, -90.0, -80.0), (37.0, 47.0, 47.0, 54.0))  # Great Lakes and Caspian stand-ins
# Mountain ranges: (lat, lon, sd_lat, sd_lon, height m), Gaussian bumps.
RANGES = (
    (45.0, -113.0, 12.0, 4.0, 2200.0), (-20.0, -69.0, 20.0, 2.0, 3500.0), (32.0, 85.0, 5.0, 15.0, 4500.0),
    (46.5, 10.0, 1.5, 4.0, 2500.0), (0.0, 36.0, 6.0, 4.0, 1500.0), (38.0, -80.0, 5.0, 2.0, 700.0),
    (63.0, 13.0, 5.0, 3.0, 1200.0), (-30.0, 150.0, 10.0, 2.0, 900.0), (58.0, 60.0, 8.0, 2.0, 900.0),
)
SITE_HALO = 1  # cells around a site's own cell forced to land, so nearest and bilinear reads are valid


@dataclass(frozen=True)
class Grid:
    """A global regular lat/lon grid; rows north to south, columns west to east (cell centres)."""

    resolution: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(round(180.0 / self.resolution)), int(round(360.0 / self.resolution))

    @property
    def lat(self) -> np.ndarray:
        d = self.resolution
        return np.round(90.0 - d / 2 - d * np.arange(self.shape[0]), 10)

    @property
    def lon(self) -> np.ndarray:
        d = self.resolution
        return np.round(-180.0 + d / 2 + d * np.arange(self.shape[1]), 10)

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = np.meshgrid(self.lon, self.lat)
        return lat, lon

    def cell(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the cells holding the points (lat, lon)."""
        rows, cols = self.shape
        i = np.clip(np.floor((90.0 - np.asarray(lat)) / self.resolution).astype(int), 0, rows - 1)
        j = np.clip(np.floor((np.asarray(lon) + 180.0) / self.resolution).astype(int), 0, cols - 1)
        return i, j


def in_boxes(lat: np.ndarray, lon: np.ndarray, boxes) -> np.ndarray:  # noqa: ANN001 - iterable of 4-tuples
    inside = np.zeros(np.broadcast(lat, lon).shape, dtype=bool)
    for south, north, west, east in boxes:
        inside |= (lat >= south) & (lat <= north) & (lon >= west) & (lon <= east)
    return inside


def site_halo(grid: Grid, sites: pd.DataFrame) -> np.ndarray:
    """True on every site's cell and its neighbours: these cells are never ocean, lake or nodata."""
    mask = np.zeros(grid.shape, dtype=bool)
    i, j = grid.cell(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float))
    mask[i, j] = True
    return ndimage.binary_dilation(mask, iterations=SITE_HALO) if SITE_HALO else mask


def land(grid: Grid, sites: pd.DataFrame | None = None) -> np.ndarray:
    lat, lon = grid.mesh()
    mask = in_boxes(lat, lon, CONTINENTS.values())
    return mask | site_halo(grid, sites) if sites is not None else mask


def lakes(grid: Grid, sites: pd.DataFrame) -> np.ndarray:
    lat, lon = grid.mesh()
    return in_boxes(lat, lon, LAKES) & ~site_halo(grid, sites)


class Planet:
    """Seeded smooth fields; every method takes lat/lon arrays (degrees) and returns an array.

    :meth:`wave` fields by index: 0 hills, 1 lowland relief, 2 temperature, 3 rainfall,
    4 cropland, 5 intact forest, 6 population, 7 texture of NDVI, soil thickness and GDP.
    """

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7001]))
        self._waves = rng.normal(0.0, 1.0, (8, 12, 2)) * [1 / 9.0, 1 / 13.0]  # 8 fields x 12 waves x (k_lat, k_lon)
        self._phases = rng.uniform(0.0, 2 * np.pi, (8, 12))

    def wave(self, lat: np.ndarray, lon: np.ndarray, which: int, scale: float = 1.0) -> np.ndarray:
        """A smooth field of mean 0, sd ~1 (sum of plane waves, wavelength ~50° / scale)."""
        k = self._waves[which] * scale
        total = np.zeros(np.broadcast(lat, lon).shape)
        for (k_lat, k_lon), phase in zip(k, self._phases[which]):
            total += np.sin(k_lat * lat + k_lon * lon + phase)
        return total / np.sqrt(len(k) / 2)

    def elevation(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Metres above sea level on land (ranges plus hills), 0 at sea."""
        ridges = np.zeros(np.broadcast(lat, lon).shape)
        for lat0, lon0, sd_lat, sd_lon, height in RANGES:
            ridges += height * np.exp(-0.5 * ((lat - lat0) / sd_lat) ** 2 - 0.5 * ((lon - lon0) / sd_lon) ** 2)
        hills = 180.0 * (0.4 + ridges / 1500.0) * self.wave(lat, lon, 0, scale=10.0)
        height = np.clip(250.0 + ridges + hills + 150.0 * self.wave(lat, lon, 1), 5.0, 8000.0)
        return np.where(in_boxes(lat, lon, CONTINENTS.values()), height, 0.0)


def mean_elevation(planet: Planet, grid: Grid) -> np.ndarray:
    """Cell means of the elevation, sampled every ~0.5° inside coarse cells (a coarse grid keeps the Alps)."""
    k = max(1, int(round(grid.resolution / 0.5)))
    offsets = (np.arange(k) + 0.5) / k - 0.5
    lat, lon = grid.mesh()
    total = np.zeros(grid.shape)
    for dy in offsets:
        for dx in offsets:
            total += planet.elevation(lat + dy * grid.resolution, lon + dx * grid.resolution)
    return total / k**2


@dataclass
class Normals:
    """Climate normals on a grid (arrays of the grid's shape)."""

    elevation: np.ndarray        # m
    tmean: np.ndarray            # annual mean air temperature, degC
    amplitude: np.ndarray        # half range of the seasonal temperature cycle, degC (sign: hemisphere)
    precip: np.ndarray           # mean precipitation, mm/day
    wet_fraction: np.ndarray     # share of days with rain
    wet_doy: np.ndarray          # day of year of the rainy-season peak
    wet_amp: np.ndarray          # relative amplitude of the rainfall cycle


def normals(planet: Planet, grid: Grid) -> Normals:
    lat, lon = grid.mesh()
    elevation = mean_elevation(planet, grid)
    continental = np.clip(ndimage.distance_transform_edt(land(grid)) * grid.resolution / 20.0, 0.0, 1.0)
    tmean = 27.0 - 0.0065 * lat**2 - 0.0065 * elevation + 1.5 * planet.wave(lat, lon, 2)
    amplitude = np.sign(lat + 1e-9) * (1.0 + 0.22 * np.abs(lat)) * (0.45 + 0.55 * continental)
    precip = (0.4 + 6.0 * np.exp(-((lat / 9.0) ** 2)) + 2.6 * np.exp(-(((np.abs(lat) - 48.0) / 12.0) ** 2))
              + 4.0 * np.exp(-(((lat - 25.0) / 8.0) ** 2) - ((lon - 85.0) / 20.0) ** 2))
    precip = precip * (1.0 - 0.35 * continental) * (1.0 + elevation / 4000.0) * np.exp(0.3 * planet.wave(lat, lon, 3))
    precip = np.maximum(precip, 0.15)
    wet_fraction = np.clip(0.06 + 0.09 * precip, 0.04, 0.75)
    wet_doy = np.where(lat >= 0, 200.0, 20.0) + np.where(np.abs(lat - 37.0) < 6.0, 180.0, 0.0)  # mediterranean winters
    wet_amp = 0.25 + 0.6 * np.exp(-(((np.abs(lat) - 12.0) / 10.0) ** 2))
    return Normals(elevation, tmean, amplitude, precip, wet_fraction, wet_doy % 365.0, wet_amp)


def cities(seed: int, n: int = 60) -> np.ndarray:
    """(n, 3) lat, lon, peak density (persons/km²) of seeded cities on land."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7002]))
    boxes = np.array(list(CONTINENTS.values()))
    pick = boxes[rng.integers(0, len(boxes), n)]
    lat = pick[:, 0] + (pick[:, 1] - pick[:, 0]) * rng.random(n)
    lon = pick[:, 2] + (pick[:, 3] - pick[:, 2]) * rng.random(n)
    return np.column_stack([lat, lon, 10 ** rng.uniform(3.0, 4.2, n)])


def slope_degrees(elevation: np.ndarray, grid: Grid) -> np.ndarray:
    """Terrain slope of a lat/lon elevation grid, degrees (cells shrink in x towards the poles)."""
    metres = grid.resolution * 111_320.0
    d_row, d_col = np.gradient(elevation, metres)
    d_col = d_col / np.maximum(np.cos(np.deg2rad(grid.mesh()[0])), 0.05)
    return np.degrees(np.arctan(np.hypot(d_row, d_col)))
