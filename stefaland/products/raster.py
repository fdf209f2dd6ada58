"""Intake driver for single-band rasters in any format GDAL reads (GeoTIFF, ESRI .bil, .vrt mosaics).

Most Table C1 rasters are one band in one file (GPW population, GLiM classes), so the file is
opened lazily with rioxarray, nodata becoming NaN. MODIS MOD13A3 NDVI is published as HDF4, which
our GDAL build does not read; AppEEARS exports it as one GeoTIFF per month, and the paper uses the
climatology, so ``reduce: mean`` takes the NaN-aware mean over the files (a cell missing in some
months averages the others). Integer scaling (NDVI × 0.0001) stays with the catalog variable's
``scale``: the values here are the file's own.

:func:`open_band` is shared with the terrain and HWSD drivers, which read a raster the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..errors import StefaLandError
from ..fileio import filesystem, is_remote
from .base import LazyProductSource
from .netcdf import expand

REDUCTIONS = (None, "mean")


def open_band(url: str, storage_options: dict | None, chunks: int, masked: bool, source: str) -> xr.DataArray:
    """One single-band raster → lazy DataArray (y, x) with its CRS kept (``spatial_ref``).

    Remote files are read through fsspec (rasterio's ``opener``), so s3:// takes the same
    credentials and endpoint as every other StefaLand read.
    """
    import rioxarray

    extra = {}
    if is_remote(url):
        extra["opener"], _ = filesystem(url, storage_options)
    try:
        array = rioxarray.open_rasterio(url, masked=masked, chunks={"band": 1, "y": int(chunks), "x": int(chunks)}, **extra)
    except Exception as exc:  # rasterio's messages name GDAL internals; keep the user's view one line
        raise StefaLandError(f"source {source}: GDAL cannot read {url}: {exc}") from None
    if not isinstance(array, xr.DataArray):
        raise StefaLandError(f"source {source}: {url} holds several subdatasets; give one single-band raster (e.g. a GeoTIFF export)")
    if array.sizes.get("band", 1) != 1:
        raise StefaLandError(f"source {source}: {url} has {array.sizes['band']} bands; give a single-band raster")
    return array.squeeze("band", drop=True) if "band" in array.dims else array


def _same_grid(arrays: Sequence[xr.DataArray], files: Sequence[str], source: str) -> None:
    first = arrays[0]
    for name, array in zip(files[1:], arrays[1:]):
        if array.shape != first.shape or array.rio.transform() != first.rio.transform():
            raise StefaLandError(f"source {source}: {name} is not on the grid of {files[0]} (shape or transform differs)")


def nan_mean(arrays: Sequence[xr.DataArray], dim: str = "file") -> xr.DataArray:
    """Cell-wise mean over the arrays, NaN left out; NaN only where every array is NaN (no warnings)."""
    stacked = xr.concat(list(arrays), dim=dim, join="override", coords="minimal", compat="override")
    count = stacked.notnull().sum(dim)
    total = stacked.sum(dim, skipna=True)
    return (total / count.where(count > 0)).astype(np.float32)


class RasterSource(LazyProductSource):
    """A single-band raster (or, with ``reduce: mean``, the mean of several) → Dataset {name: (y, x)}."""

    name = "stefaland_raster"

    def __init__(self, urlpath: str, name: str = "band_data", reduce: str | None = None, chunks: int = 2048,
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        if reduce not in REDUCTIONS:
            raise StefaLandError(f"source {self._label()}: reduce must be null or 'mean' (got {reduce!r})")
        self.urlpath = str(urlpath)
        self.variable = str(name)
        self.reduce = reduce
        self.chunks = int(chunks)

    def _open(self) -> xr.Dataset:
        label = self._label()
        files = expand(self.urlpath, self.storage_options, label)
        if len(files) > 1 and self.reduce is None:
            raise StefaLandError(f"source {label}: {self.urlpath} matches {len(files)} files; give one, or reduce: mean")
        arrays = [open_band(f, self.storage_options, self.chunks, True, label) for f in files]
        if len(arrays) == 1:
            data = arrays[0]
        else:
            _same_grid(arrays, files, label)
            data = nan_mean(arrays).assign_coords({c: arrays[0][c] for c in arrays[0].coords})
        data.attrs = {k: v for k, v in arrays[0].attrs.items() if k not in ("_FillValue", "scale_factor", "add_offset")}
        return data.rename(self.variable).to_dataset()
