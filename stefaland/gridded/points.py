"""Which grid cells stand for a point site: the nearest one, or the four around it (bilinear).

Grids are regular after :func:`stefaland.gridded.grid.normalise_grid`, so a site's cell follows
from arithmetic on its coordinates rather than a search, and a global grid wraps in longitude
(a site at 179.95° sits between the last and the first column).
"""

from __future__ import annotations

import numpy as np

from ..errors import StefaLandError
from .grid import GridGeometry, wrap_longitude
from .weights import SiteWeights


def check_inside(grid: GridGeometry, sites: np.ndarray, lat: np.ndarray, lon: np.ndarray, source: str) -> None:
    """Refuse the first site that falls outside the grid, naming it and the grid's extent."""
    outside = (lat < grid.south) | (lat > grid.north)
    if not grid.global_lon:
        outside |= (lon < grid.west) | (lon > grid.east)
    if outside.any():
        n = int(np.flatnonzero(outside)[0])
        raise StefaLandError(
            f"source {source}: site {sites[n]} (lat {lat[n]:g}, lon {lon[n]:g}) is outside the grid extent "
            f"(lat {grid.south:g}..{grid.north:g}, lon {grid.west:g}..{grid.east:g})"
        )


def _fractional_index(values: np.ndarray, first: float, step: float) -> np.ndarray:
    return (values - first) / step


def nearest_weights(grid: GridGeometry, sites: np.ndarray, lat: np.ndarray, lon: np.ndarray, source: str) -> SiteWeights:
    """One cell per site, weight 1: the cell whose area contains the site."""
    lon = wrap_longitude(lon)
    check_inside(grid, sites, lat, lon, source)
    rows = np.clip(np.floor(_fractional_index(lat, grid.lat[0], grid.dlat) + 0.5), 0, grid.lat.size - 1)
    cols = np.floor(_fractional_index(lon, grid.lon[0], grid.dlon) + 0.5)
    cols = np.mod(cols, grid.lon.size) if grid.global_lon else np.clip(cols, 0, grid.lon.size - 1)
    return SiteWeights.from_dense(sites, rows.astype(np.int64)[:, None], cols.astype(np.int64)[:, None],
                                  np.ones((len(sites), 1)))


def _axis(position: np.ndarray, size: int, wrap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower neighbour, upper neighbour and the fraction towards the upper one along one axis.

    Between the outermost cell centre and the grid edge there is no second neighbour: the
    value is held constant there (weight 0 on the missing side) instead of extrapolated.
    """
    lower = np.floor(position)
    fraction = position - lower
    upper = lower + 1
    if wrap:
        return np.mod(lower, size).astype(np.int64), np.mod(upper, size).astype(np.int64), fraction
    below, above = lower < 0, upper > size - 1
    fraction = np.where(below, 1.0, np.where(above, 0.0, fraction))
    lower, upper = np.clip(lower, 0, size - 1), np.clip(upper, 0, size - 1)
    return lower.astype(np.int64), upper.astype(np.int64), fraction


def bilinear_weights(grid: GridGeometry, sites: np.ndarray, lat: np.ndarray, lon: np.ndarray, source: str) -> SiteWeights:
    """The four cell centres around each site with bilinear weights (they sum to 1)."""
    lon = wrap_longitude(lon)
    check_inside(grid, sites, lat, lon, source)
    r0, r1, t = _axis(_fractional_index(lat, grid.lat[0], grid.dlat), grid.lat.size, wrap=False)
    c0, c1, u = _axis(_fractional_index(lon, grid.lon[0], grid.dlon), grid.lon.size, wrap=grid.global_lon)
    rows = np.stack([r0, r0, r1, r1], axis=1)
    cols = np.stack([c0, c1, c0, c1], axis=1)
    weights = np.stack([(1 - t) * (1 - u), (1 - t) * u, t * (1 - u), t * u], axis=1)
    return SiteWeights.from_dense(sites, rows, cols, weights)
