"""A square patch of a static map around each site, one store variable per pixel.

Image encoders (TerraMind, docs/FOREIGN_ENCODERS.md) read a picture of the place, not a value at
a point. ``gridded: {method: patch, size: 16, resolution: 0.00833}`` cuts, for every site, a
``size`` x ``size`` patch on a grid of its own: pixel centres ``resolution`` degrees apart, north
row first, centred on the site. Each pixel takes the value of the raster cell holding its centre,
so the patches of several rasters with different resolutions cover the same ground pixel for
pixel (what a multi-modal encoder expects of its modalities). A pixel off the raster is NaN.

``recode: {code: value}`` turns a class raster's codes into another legend (CCI land cover into
TerraMind's); a code not listed becomes NaN. The store names pixel (i, j) of variable ``v``
``v_r<ii>c<jj>`` (:func:`patch_names`), which is how a model finds its patch again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import StefaLandError
from .grid import GridGeometry, wrap_longitude
from .points import check_inside

PATCH_KEYS = {"method", "size", "resolution", "recode"}
MAX_PATCH_SIZE = 64  # size**2 store variables per raster variable: a patch is static columns, not an image store


@dataclass(frozen=True)
class PatchOptions:
    size: int
    resolution: float  # degrees between pixel centres
    recode: dict[float, float] | None = None


def patch_names(variable: str, size: int) -> list[str]:
    """Store names of a ``size`` x ``size`` patch of ``variable``, row-major, north row first."""
    return [f"{variable}_r{i:02d}c{j:02d}" for i in range(size) for j in range(size)]


def patch_options(metadata: Mapping[str, Any], source: str) -> PatchOptions:
    """The ``gridded:`` block of a ``method: patch`` source; one line naming the source when wrong."""
    unknown = set(metadata) - PATCH_KEYS
    if unknown:
        raise StefaLandError(f"source {source}: unknown key gridded.{sorted(unknown)[0]} for method patch "
                             f"(known: {', '.join(sorted(PATCH_KEYS))})")
    try:
        size = int(metadata.get("size", 16))
        resolution = float(metadata["resolution"])
    except KeyError:
        raise StefaLandError(f"source {source}: method patch needs gridded.resolution (degrees between pixels)") from None
    except (TypeError, ValueError) as exc:
        raise StefaLandError(f"source {source}: gridded.size and gridded.resolution must be numbers ({exc})") from None
    if not 1 <= size <= MAX_PATCH_SIZE:
        raise StefaLandError(f"source {source}: gridded.size {size} must be 1..{MAX_PATCH_SIZE}")
    if not np.isfinite(resolution) or resolution <= 0:
        raise StefaLandError(f"source {source}: gridded.resolution must be a positive number of degrees")
    recode = metadata.get("recode")
    if recode is not None:
        if not isinstance(recode, Mapping) or not recode:
            raise StefaLandError(f"source {source}: gridded.recode must be a mapping {{code: value}}")
        try:
            recode = {float(k): float(v) for k, v in recode.items()}
        except (TypeError, ValueError):
            raise StefaLandError(f"source {source}: gridded.recode must map numbers to numbers") from None
    return PatchOptions(size, resolution, recode)


def pixel_centres(lat: np.ndarray, lon: np.ndarray, size: int, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (n, size, size) of every site's pixel centres, north row first."""
    offset = ((size - 1) / 2 - np.arange(size)) * resolution  # row i: north of the site for i < centre
    plat = lat[:, None, None] + offset[None, :, None] + np.zeros((1, 1, size))
    plon = lon[:, None, None] - offset[None, None, :] + np.zeros((1, size, 1))
    return plat, plon


def extract_patches(array: xr.DataArray, grid: GridGeometry, ids: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                    options: PatchOptions, name: str, source: str) -> dict[str, xr.DataArray]:
    """``{pixel name: values (site,)}`` of ``array`` (a lat/lon map) around every site."""
    if "time" in array.dims:
        raise StefaLandError(f"source {source}: method patch cuts static maps; variable {name} has a time axis")
    check_inside(grid, ids, lat, wrap_longitude(lon), source)
    size = options.size
    plat, plon = pixel_centres(lat, lon, size, options.resolution)
    rows = np.floor((plat - grid.lat[0]) / grid.dlat + 0.5)
    cols = np.floor((wrap_longitude(plon) - grid.lon[0]) / grid.dlon + 0.5)
    valid = (rows >= 0) & (rows < grid.lat.size)
    if grid.global_lon:
        cols = np.mod(cols, grid.lon.size)
    else:
        valid &= (cols >= 0) & (cols < grid.lon.size)
    flat_rows = np.where(valid, rows, 0).astype(np.int64).reshape(len(ids), -1)
    flat_cols = np.where(valid, cols, 0).astype(np.int64).reshape(len(ids), -1)
    picked = array.transpose("lat", "lon").isel(lat=xr.DataArray(flat_rows, dims=("site", "pixel")),
                                                lon=xr.DataArray(flat_cols, dims=("site", "pixel")))
    values = np.asarray(picked.values, dtype=np.float64)  # (n, size * size): a few cells per site
    values[~valid.reshape(len(ids), -1)] = np.nan
    if options.recode is not None:
        coded = np.full_like(values, np.nan)
        for code, value in options.recode.items():
            coded[values == code] = value
        values = coded
    attrs = {} if options.recode is not None else dict(array.attrs)
    site = np.asarray(ids, dtype=object)
    return {pixel: xr.DataArray(values[:, k], dims="site", coords={"site": site}, attrs=attrs)
            for k, pixel in enumerate(patch_names(name, size))}
