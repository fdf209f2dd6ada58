"""The entry point of ``data build`` for gridded sources: a grid and a site table → site series.

A gridded catalog source declares ``metadata.gridded`` (see docs/GRIDDED.md); the build calls
:func:`extract_to_sites` once per source and shard of sites. Everything returned is lazy: the
graph reads only the grid chunks holding the shard's cells, one chunk at a time, so memory is
bounded by the chunk size, never by the grid or the period.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from .categorical import class_fractions, parse_classes
from .grid import GridGeometry, normalise_grid
from .patches import PatchOptions, extract_patches, patch_options
from .points import bilinear_weights, nearest_weights
from .polygons import polygon_weights
from .weights import SiteWeights, weighted_mean

log = logging.getLogger("stefaland.gridded")

METHODS = ("nearest", "bilinear", "polygon", "patch")
ALLOWED_DIMS = {"lat", "lon", "time"}


def _site_columns(sites: pd.DataFrame, method: str, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = sites.reset_index() if "site" not in sites.columns and sites.index.name == "site" else sites
    missing = [c for c in ("site", "lat", "lon") if c not in frame.columns]
    if missing:
        raise StefaLandError(f"source {source}: the site table has no {missing[0]!r} column")
    ids = frame["site"].astype(str).to_numpy(dtype=object)
    lat = pd.to_numeric(frame["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(frame["lon"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(lat) | np.isnan(lon)
    if method != "polygon" and bad.any():
        raise StefaLandError(f"source {source}: site {ids[np.flatnonzero(bad)[0]]} has no valid lat/lon")
    return ids, lat, lon


def site_weights(grid: GridGeometry, sites: pd.DataFrame, method: str, source: str, quiet: bool = True) -> SiteWeights:
    """Which cells, with which weights, stand for each site under ``method``."""
    if method not in METHODS:
        raise StefaLandError(f"source {source}: unknown gridded method {method!r} (use one of {', '.join(METHODS)})")
    ids, lat, lon = _site_columns(sites, method, source)
    if method == "nearest":
        return nearest_weights(grid, ids, lat, lon, source)
    if method == "bilinear":
        return bilinear_weights(grid, ids, lat, lon, source)
    if "geometry" not in sites.columns:
        raise StefaLandError(f"source {source}: method polygon needs a 'geometry' column (basin polygons) in the site table")
    return polygon_weights(grid, ids, list(sites["geometry"]), source, quiet=quiet)


def _variable(ds: xr.Dataset, name: str, source: str) -> xr.DataArray:
    if name not in ds.data_vars:
        raise StefaLandError(f"source {source}: variable {name} not found in the grid "
                             f"(it has: {', '.join(map(str, list(ds.data_vars)[:12]))})")
    data = ds[name]
    extra = set(data.dims) - ALLOWED_DIMS
    if extra:
        raise StefaLandError(f"source {source}: variable {name} has dims {', '.join(sorted(map(str, extra)))} "
                             "besides lat/lon/time; select one level first")
    if not {"lat", "lon"} <= set(data.dims):
        raise StefaLandError(f"source {source}: variable {name} is not on the lat/lon grid (dims: {', '.join(map(str, data.dims))})")
    return data


def extract_to_sites(
    ds: xr.Dataset | xr.DataArray,
    sites: pd.DataFrame,
    method: str,
    variables: Sequence[str],
    categorical: Mapping[Any, str] | None,
    source_name: str,
    quiet: bool = True,
    site_chunk: int | None = None,
    patch: PatchOptions | None = None,
) -> xr.Dataset:
    """Site series from a grid: dims ``(site[, time])``, lazy where the grid is.

    ``sites`` has columns ``site``, ``lat``, ``lon`` and, for ``method="polygon"``, ``geometry``
    (shapely polygons in EPSG:4326). ``categorical`` is ``{code: class name}`` for class rasters
    (outputs ``<variable>_<class>`` fractions) or ``None`` for continuous ones (outputs
    ``<variable>``, units attribute kept for the build's unit conversion).

    ``site_chunk``: dask block size along ``site`` (default: all sites in one block). A caller that
    extracts every site once and then computes shard by shard should pass its shard size, so a
    shard's computation is exactly one block and reads only its own cells.

    ``method="patch"`` (with ``patch``, the source's :class:`~.patches.PatchOptions`) cuts a square
    patch of a static map around each site instead: one output ``<variable>_r<ii>c<jj>`` per pixel.
    """
    if isinstance(ds, xr.DataArray):  # a single-band raster opened as an array
        ds = ds.to_dataset(name=ds.name if ds.name is not None else variables[0])
    grid_ds, grid = normalise_grid(ds, source_name)
    data = {name: _variable(grid_ds, name, source_name) for name in variables}
    if method == "patch":
        if patch is None:
            raise StefaLandError(f"source {source_name}: method patch needs its options (size, resolution)")
        ids, lat, lon = _site_columns(sites, method, source_name)
        pixels: dict[str, xr.DataArray] = {}
        for name, array in data.items():
            pixels.update(extract_patches(array, grid, ids, lat, lon, patch, name, source_name))
        return xr.Dataset(pixels).assign_attrs(source=source_name, gridded_method=method)
    weights = site_weights(grid, sites, method, source_name, quiet=quiet)
    classes = parse_classes(categorical, source_name) if categorical is not None else None
    out: dict[str, xr.DataArray] = {}
    for name, array in data.items():
        if classes is None:
            out[name] = weighted_mean(array, weights, site_chunk).assign_attrs(array.attrs)
        else:
            out.update(class_fractions(array, weights, classes, name, site_chunk))
    result = xr.Dataset(out)
    order = [d for d in ("site", "time") if d in result.dims]
    result = result.transpose(*order)
    result.attrs.update(source=source_name, gridded_method=method)
    log.debug("source %s: %d sites by %s from a %dx%d grid", source_name, len(weights.sites), method, grid.lat.size, grid.lon.size)
    return result


def source_patch(metadata: Mapping[str, Any] | None, source: str) -> PatchOptions | None:
    """The patch options of a ``method: patch`` source, else None."""
    if isinstance(metadata, Mapping) and metadata.get("method") == "patch":
        return patch_options(metadata, source)
    return None


def gridded_options(metadata: Mapping[str, Any] | None, source: str) -> tuple[str, dict | None]:
    """Read a catalog source's ``gridded:`` block → (method, classes or None); refuse what is wrong."""
    if not isinstance(metadata, Mapping):
        raise StefaLandError(f"source {source}: metadata.gridded must be a mapping (method, categorical, classes)")
    if metadata.get("method") == "patch":
        patch_options(metadata, source)  # refuse a wrong block while the catalog is read
        return "patch", None
    unknown = set(metadata) - {"method", "categorical", "classes"}
    if unknown:
        raise StefaLandError(f"source {source}: unknown key gridded.{sorted(unknown)[0]} (known: method, categorical, classes)")
    method = str(metadata.get("method", "nearest"))
    if method not in METHODS or method == "patch":
        raise StefaLandError(f"source {source}: unknown gridded method {method!r} (use one of {', '.join(METHODS)})")
    if bool(metadata.get("categorical", False)):
        return method, dict(parse_classes(metadata.get("classes"), source))
    if metadata.get("classes"):
        raise StefaLandError(f"source {source}: gridded.classes given but gridded.categorical is not true")
    return method, None
