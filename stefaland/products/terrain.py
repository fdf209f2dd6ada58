"""Intake driver for a digital elevation model in degrees (GMTED2010) → elevation, slope and aspect.

GMTED2010 publishes elevation only; the paper's Table C1 also uses slope and aspect, so they are
derived here, lazily, chunk by chunk (``dask.array.map_overlap`` with a one-cell halo): no
preprocessing step and no second copy of a global grid. A degree of longitude shrinks with
latitude, so the east-west cell size is taken per row on a sphere (R = 6 371 008.8 m, the mean
earth radius); at the grid border differences are one-sided, so the outermost cells get a slope
rather than NaN (a site near a tile's edge still has one).

Slope is in degrees from horizontal; aspect is the compass direction the slope faces (downhill),
in degrees clockwise from north, NaN where the cell is flat.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import StefaLandError
from .base import LazyProductSource
from .raster import open_band

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * np.pi / 180.0
FLAT = 1e-12  # |gradient| (m/m) at or below which a cell has no aspect


def _slope_aspect_block(elevation: np.ndarray, lat: np.ndarray, dlat: float, dlon: float) -> np.ndarray:
    """Slope and aspect (degrees) of one block (halo included): shape (2, ny, nx), ny, nx >= 2.

    ``np.gradient`` takes central differences inside and one-sided ones at the block's edges; the
    halo makes every interior edge central, so only the grid's own border is one-sided.
    """
    z = elevation.astype(np.float64)
    d_row, d_col = np.gradient(z, edge_order=1)
    dz_north = d_row / (dlat * METRES_PER_DEGREE)
    dz_east = d_col / (dlon * METRES_PER_DEGREE * np.cos(np.deg2rad(lat)))
    steepness = np.hypot(dz_east, dz_north)
    slope = np.degrees(np.arctan(steepness))
    aspect = np.mod(np.degrees(np.arctan2(-dz_east, -dz_north)), 360.0)
    aspect = np.where(steepness > FLAT, aspect, np.nan)
    return np.stack([slope, aspect]).astype(np.float32)


def _part(which: int, dlat: float, dlon: float):
    def block(zb: np.ndarray, latb: np.ndarray) -> np.ndarray:
        return _slope_aspect_block(zb, latb, dlat, dlon)[which]

    return block


def slope_aspect(elevation: xr.DataArray, lat_name: str = "y", lon_name: str = "x") -> tuple[xr.DataArray, xr.DataArray]:
    """Lazy slope and aspect (degrees) of a dask-backed elevation grid on regular lat/lon axes.

    ``boundary="none"``: blocks at the grid border get no halo on that side, so ``np.gradient``
    falls back to a one-sided difference exactly there, and dask trims only the halos it added.
    """
    lat = np.asarray(elevation[lat_name].values, dtype=np.float64)
    lon = np.asarray(elevation[lon_name].values, dtype=np.float64)
    dlat, dlon = float(lat[1] - lat[0]), float(lon[1] - lon[0])  # signed: north-up grids step south
    z = elevation.transpose(lat_name, lon_name).data
    if not isinstance(z, da.Array):
        z = da.from_array(z, chunks=2048)
    lat2d = da.broadcast_to(da.from_array(lat[:, None], chunks=(z.chunks[0], 1)), z.shape, chunks=z.chunks)
    coords = {lat_name: elevation[lat_name], lon_name: elevation[lon_name]}
    dims = (lat_name, lon_name)
    out = []
    for which, name in ((0, "slope"), (1, "aspect, clockwise from north, facing downhill")):
        data = da.map_overlap(_part(which, dlat, dlon), z, lat2d, depth=1, boundary="none", dtype=np.float32, trim=True)
        out.append(xr.DataArray(data, dims=dims, coords=coords, attrs={"units": "degree", "long_name": name}))
    return out[0], out[1]


class TerrainSource(LazyProductSource):
    """A DEM raster in degrees → lazy Dataset {elevation (m), slope (degree), aspect (degree)}(y, x)."""

    name = "stefaland_terrain"

    def __init__(self, urlpath: str, chunks: int = 2048, storage_options: dict | None = None,
                 metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = str(urlpath)
        self.chunks = int(chunks)

    def _open(self) -> xr.Dataset:
        label = self._label()
        elevation = open_band(self.urlpath, self.storage_options, self.chunks, True, label)
        crs = elevation.rio.crs
        if crs is not None and not crs.is_geographic:
            raise StefaLandError(f"source {label}: {self.urlpath} is in a projected CRS ({crs.to_string()}); "
                                 "slope needs a lat/lon DEM (reproject it to EPSG:4326)")
        if elevation.sizes["y"] < 2 or elevation.sizes["x"] < 2:
            raise StefaLandError(f"source {label}: {self.urlpath} is narrower than 2 cells; slope needs neighbours")
        slope, aspect = slope_aspect(elevation, "y", "x")
        elevation = elevation.astype(np.float32).assign_attrs(units="m", long_name="elevation")
        extra = {c: elevation[c] for c in elevation.coords if c not in ("y", "x")}  # spatial_ref: CRS kept
        return xr.Dataset({"elevation": elevation, "slope": slope.assign_coords(extra),
                           "aspect": aspect.assign_coords(extra)})
