"""Bring any gridded xarray Dataset to one convention before a site is looked up in it.

Global rasters arrive as ``lat``/``lon``, ``latitude``/``longitude`` or ``y``/``x``; longitudes as
0..360 or -180..180; latitudes north-down (GeoTIFF) or south-up (NetCDF); calendars as
``noleap`` or ``360_day``. Point and polygon extraction are written once, against ``lat`` and
``lon`` ascending, longitudes in -180..180, a daily ``datetime64`` time axis, so every oddity is
handled here, lazily (nothing is read), and only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from ..errors import StefaLandError

LAT_NAMES = ("lat", "latitude", "y", "nav_lat", "rlat")
LON_NAMES = ("lon", "longitude", "x", "nav_lon", "rlon")
# spacing may drift by float rounding in coordinate files; beyond this a grid is not regular
REGULAR_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GridGeometry:
    """Where the cells of a normalised grid are: centres, spacing and whether it wraps in longitude."""

    lat: np.ndarray  # cell centres, ascending
    lon: np.ndarray  # cell centres, ascending, in -180..180
    dlat: float
    dlon: float
    global_lon: bool  # the grid goes all the way round: a site at any longitude is inside it

    @property
    def south(self) -> float:
        return float(self.lat[0] - self.dlat / 2)

    @property
    def north(self) -> float:
        return float(self.lat[-1] + self.dlat / 2)

    @property
    def west(self) -> float:
        return float(self.lon[0] - self.dlon / 2)

    @property
    def east(self) -> float:
        return float(self.lon[-1] + self.dlon / 2)

    def signature(self) -> tuple:
        """A hashable identity of the grid, so coverage fractions can be reused across calls."""
        return (self.lat.size, self.lon.size, round(float(self.lat[0]), 9), round(float(self.lon[0]), 9),
                round(self.dlat, 12), round(self.dlon, 12), hash(self.lat.tobytes()), hash(self.lon.tobytes()))


def _find(ds: xr.Dataset, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in ds.coords or name in ds.dims:
            return name
    return None


def _check_crs(ds: xr.Dataset, source: str) -> None:
    """Refuse projected grids: every site is in degrees and reprojection is a job for the data provider."""
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        crs = ds.rio.crs
    except Exception:  # no CRS information at all: trust the lat/lon names
        return
    if crs is not None and not crs.is_geographic:
        raise StefaLandError(
            f"source {source}: grid is in a projected CRS ({crs.to_string()}); reproject it to EPSG:4326 "
            "(lat/lon degrees) before using it as a gridded source"
        )


def _spacing(values: np.ndarray, axis: str, source: str) -> float:
    if values.size < 2:
        raise StefaLandError(f"source {source}: the grid has a single {axis} cell; cannot tell its size")
    steps = np.diff(values)
    step = float(np.median(steps))
    if np.abs(steps - step).max() > REGULAR_TOLERANCE * abs(step):
        raise StefaLandError(f"source {source}: {axis} coordinates are not evenly spaced (a regular grid is required)")
    return step


def _daily_standard_time(ds: xr.Dataset, source: str) -> xr.Dataset:
    """Climate-model calendars (noleap, 360_day) → proleptic Gregorian dates; missing days become NaN."""
    if "time" not in ds.indexes:
        return ds
    index = ds.indexes["time"]
    if isinstance(index, xr.CFTimeIndex):
        calendar = index.calendar
        align: Literal["date"] | None = "date" if calendar == "360_day" else None
        ds = ds.convert_calendar("standard", dim="time", align_on=align, missing=np.nan, use_cftime=False)
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise StefaLandError(f"source {source}: the time coordinate is not made of dates (dtype {ds['time'].dtype})")
    return ds


def _ascending(ds: xr.Dataset, dim: str) -> xr.Dataset:
    """Put ``dim`` in ascending order with contiguous slices only (a reversal, or a roll for a
    0..360 grid mapped onto -180..180), so dask chunks stay whole; a general sort is the fallback."""
    values = np.asarray(ds[dim].values)
    steps = np.diff(values)
    if values.size < 2 or (steps > 0).all():
        return ds
    if (steps < 0).all():
        return ds.isel({dim: slice(None, None, -1)})
    breaks = np.flatnonzero(steps < 0)
    if breaks.size == 1 and (np.delete(steps, breaks) > 0).all() and values[-1] < values[0]:
        return ds.roll({dim: values.size - int(breaks[0]) - 1}, roll_coords=True)
    return ds.sortby(dim)


def normalise_grid(ds: xr.Dataset, source: str) -> tuple[xr.Dataset, GridGeometry]:
    """Return ``ds`` with dims ``lat``/``lon`` (ascending, lon in -180..180) and its geometry; lazy."""
    lat_name, lon_name = _find(ds, LAT_NAMES), _find(ds, LON_NAMES)
    if lat_name is None or lon_name is None:
        raise StefaLandError(
            f"source {source}: no lat/lon (or y/x) coordinates in the grid (dims: {', '.join(map(str, ds.dims)) or 'none'})"
        )
    _check_crs(ds, source)
    if "spatial_ref" in ds.coords:
        ds = ds.drop_vars("spatial_ref")
    ds = ds.rename({n: s for n, s in ((lat_name, "lat"), (lon_name, "lon")) if n != s})
    if ds["lat"].ndim != 1 or ds["lon"].ndim != 1:
        raise StefaLandError(f"source {source}: lat/lon must be 1-D coordinates of a regular grid (curvilinear grids are not supported)")
    if "band" in ds.dims:  # single-band GeoTIFF read through rioxarray
        if ds.sizes["band"] != 1:
            raise StefaLandError(f"source {source}: the raster has {ds.sizes['band']} bands; give one band per variable")
        ds = ds.squeeze("band", drop=True)
    lon = np.asarray(ds["lon"].values, dtype=np.float64)
    if np.nanmax(lon) > 180.0 + 1e-9 or np.nanmin(lon) < -180.0 - 1e-9:
        ds = ds.assign_coords(lon=((lon + 180.0) % 360.0) - 180.0)
    ds = _ascending(_ascending(ds, "lon"), "lat")
    ds = _daily_standard_time(ds, source)
    lat = np.asarray(ds["lat"].values, dtype=np.float64)
    lon = np.asarray(ds["lon"].values, dtype=np.float64)
    if np.unique(lon).size != lon.size:
        raise StefaLandError(f"source {source}: duplicated longitudes after mapping 0..360 onto -180..180")
    dlat, dlon = _spacing(lat, "lat", source), _spacing(lon, "lon", source)
    if np.abs(lat).max() > 90.0 + dlat:
        raise StefaLandError(f"source {source}: latitudes beyond ±90 ({lat.min():g}..{lat.max():g}); are lat and lon swapped?")
    global_lon = abs(lon.size * dlon - 360.0) < REGULAR_TOLERANCE * 360.0
    return ds, GridGeometry(lat=lat, lon=lon, dlat=dlat, dlon=dlon, global_lon=global_lon)


def wrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Any longitude → -180..180 (a site list may mix conventions too)."""
    return ((np.asarray(lon, dtype=np.float64) + 180.0) % 360.0) - 180.0
