"""The planet on the static-product grid: land, lakes, land cover, slope and continent of each cell.

Computed once and shared by the raster and soil writers, so that, e.g., GPW's nodata cells are
exactly CCI's ocean and HWSD's nodata, and a site's cell (with its neighbours) is land everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from .products_world import CONTINENTS, Grid, Normals, Planet, cities, lakes, land, normals, slope_degrees

# ESA CCI LCCS classes used here (code → flag meaning, as in the CCI files)
CCI_CLASSES = {
    10: "cropland_rainfed",
    50: "tree_broadleaved_evergreen_closed_to_open",
    60: "tree_broadleaved_deciduous_closed_to_open",
    70: "tree_needleleaved_evergreen_closed_to_open",
    130: "grassland",
    190: "urban",
    210: "water",
    220: "snow_and_ice",
}
URBAN_DENSITY = 1500.0  # persons/km² above which a cell is urban


@dataclass
class StaticWorld:
    grid: Grid
    normals: Normals
    land: np.ndarray         # bool: continents plus every site's cell and neighbours
    water: np.ndarray        # bool: ocean or lake (CCI class 210)
    classes: np.ndarray      # uint8 CCI class codes
    slope: np.ndarray        # degrees
    continent: np.ndarray    # int index into CONTINENTS (nearest continent off the boxes)
    density: np.ndarray      # persons/km² (meaningful on land only)


def land_cover(planet: Planet, grid: Grid, n: Normals, density: np.ndarray) -> np.ndarray:
    """CCI classes from climate: forests where warm and wet or boreal, grass where dry, ice where frozen."""
    lat, lon = grid.mesh()
    tm, p = n.tmean, n.precip
    classes = np.full(grid.shape, 130, dtype=np.uint8)
    classes[p >= 1.2] = 60
    classes[(p >= 1.2) & (tm > 5.0) & (planet.wave(lat, lon, 4, scale=3.0) > 0.3)] = 10
    classes[(tm < 4.0) & (p >= 0.5)] = 70
    classes[(tm >= 20.0) & (p >= 3.0)] = 50
    classes[(tm < -6.0) | (n.elevation > 4800.0)] = 220
    classes[density > URBAN_DENSITY] = 190
    return classes


def population(planet: Planet, grid: Grid, n: Normals, seed: int) -> np.ndarray:
    """Persons/km²: denser where mild and wet, plus city peaks; near zero on ice."""
    lat, lon = grid.mesh()
    suitability = np.clip(n.tmean / 20.0, 0.0, 1.0) * np.clip(n.precip / 2.0, 0.0, 1.0)
    density = 10 ** (-0.5 + 2.0 * suitability + 0.5 * planet.wave(lat, lon, 6, scale=2.0))
    for city_lat, city_lon, peak in cities(seed):
        distance2 = (lat - city_lat) ** 2 + ((lon - city_lon) * np.cos(np.deg2rad(city_lat))) ** 2
        density = density + peak * np.exp(-distance2 / (2 * 0.6**2))
    return np.where(n.tmean < -6.0, 0.05, density)


def continents(grid: Grid) -> np.ndarray:
    """Index of each cell's continent (first box that holds it; off the boxes, the nearest one)."""
    lat, lon = grid.mesh()
    index = np.full(grid.shape, -1, dtype=int)
    for k, (south, north, west, east) in enumerate(CONTINENTS.values()):
        index[(index < 0) & (lat >= south) & (lat <= north) & (lon >= west) & (lon <= east)] = k
    _, (rows, cols) = ndimage.distance_transform_edt(index < 0, return_indices=True)
    return np.where(index >= 0, index, index[rows, cols])


def static_world(planet: Planet, resolution: float, sites: pd.DataFrame, seed: int) -> StaticWorld:
    grid = Grid(resolution)
    n = normals(planet, grid)
    on_land = land(grid, sites)
    water = ~on_land | lakes(grid, sites)
    density = population(planet, grid, n, seed)
    classes = land_cover(planet, grid, n, density)
    classes[water] = 210
    return StaticWorld(grid, n, on_land, water, classes, slope_degrees(n.elevation, grid),
                       continents(grid), density)
