"""Writers shared by the miniature products: every file appears whole or not at all.

A run that stops half-way leaves ``.part`` files or a ``.staging-*`` folder (never a truncated file
under a real name); the output folder carries StefaLand's marker from the start, so the next run
recognises and replaces it.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.crs import CRS

from .products_world import Grid

TIME_UNITS = "days since 1900-01-01 00:00:00"


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A scratch folder inside ``folder``; on success every file in it is renamed into ``folder``.

    For formats a driver writes as several files (shapefile, EHdr ``.bil`` + ``.hdr``): each
    file still lands by an atomic rename, and a failure leaves only the scratch folder behind."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield scratch
        for item in sorted(scratch.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def staged_file(path: Path) -> Path:
    """The ``.part`` name to write ``path`` under before :func:`os.replace` puts it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".part")


class DayFiles:
    """Writes one day of one variable per CF NetCDF4 file (time=1, lat, lon; float32, zlib).

    The file layout is built once per variable with h5py in the netCDF-4 convention (dimension
    scales), and each day copies that template and fills in its time and data. The files read the
    same with h5netcdf, netCDF4 and xarray; building each through h5netcdf's API instead costs
    ~30 ms a file, and a year of MSWX + MSWEP is 1,830 files."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._templates: dict[tuple[str, str], bytes] = {}

    def _template(self, name: str, attrs: dict[str, str]) -> bytes:
        key = (name, repr(sorted(attrs.items())))
        if key not in self._templates:
            buffer = io.BytesIO()
            coords = (
                ("time", np.zeros(1), {"standard_name": "time", "units": TIME_UNITS, "calendar": "standard",
                                       "axis": "T"}),
                ("lat", self.grid.lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
                ("lon", self.grid.lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
            )
            with h5py.File(buffer, "w", track_order=True) as h5:
                h5.attrs["Conventions"] = "CF-1.8"
                for dim_id, (coord, data, coord_attrs) in enumerate(coords):
                    dataset = h5.create_dataset(coord, data=data.astype("f8"), track_order=True)
                    dataset.make_scale(coord)
                    dataset.attrs.create("_Netcdf4Dimid", dim_id, dtype="i4")
                    for attr, value in coord_attrs.items():
                        dataset.attrs[attr] = value
                shape = (1, *self.grid.shape)
                variable = h5.create_dataset(name, shape=shape, dtype="f4", chunks=shape,
                                             compression="gzip", compression_opts=4, shuffle=True, track_order=True)
                for axis, coord in enumerate(("time", "lat", "lon")):
                    variable.dims[axis].attach_scale(h5[coord])
                for attr, value in attrs.items():
                    variable.attrs[attr] = value
            self._templates[key] = buffer.getvalue()
        return self._templates[key]

    def write(self, path: Path, name: str, attrs: dict[str, str], values: np.ndarray, day: pd.Timestamp) -> None:
        part = staged_file(path)
        part.write_bytes(self._template(name, attrs))
        with h5py.File(part, "r+") as h5:
            h5["time"][0] = (day - pd.Timestamp("1900-01-01")) / pd.Timedelta(days=1)
            h5[name][0] = values.astype("f4", copy=False)
        os.replace(part, path)


def _north_up(grid: Grid) -> Affine:
    return Affine(grid.resolution, 0.0, -180.0, 0.0, -grid.resolution, 90.0)


def write_geotiff(path: Path, values: np.ndarray, grid: Grid, nodata: float | int) -> None:
    """A north-up global EPSG:4326 GeoTIFF (deflate) of ``values`` (rows north to south)."""
    part = staged_file(path)
    profile = {"driver": "GTiff", "height": values.shape[0], "width": values.shape[1], "count": 1,
               "dtype": values.dtype, "crs": "EPSG:4326", "nodata": nodata, "compress": "deflate",
               "transform": _north_up(grid)}
    with rasterio.open(part, "w", **profile) as dataset:
        dataset.write(values, 1)
    os.replace(part, path)


def write_ehdr(folder: Path, stem: str, values: np.ndarray, grid: Grid, nodata: int) -> None:
    """An ESRI ``.bil`` + ``.hdr`` + ``.prj`` raster as GDAL's EHdr driver writes it.

    The ``.prj`` is then rewritten in WKT with its EPSG authority: GDAL's ESRI-dialect one reads
    back as OGC:CRS84, which is the same CRS but no longer says EPSG:4326 to readers that ask."""
    profile = {"driver": "EHdr", "height": values.shape[0], "width": values.shape[1], "count": 1,
               "dtype": values.dtype, "crs": "EPSG:4326", "nodata": nodata,
               "transform": _north_up(grid)}
    with staged(folder) as scratch:
        with rasterio.open(scratch / f"{stem}.bil", "w", **profile) as dataset:
            dataset.write(values, 1)
        (scratch / f"{stem}.prj").write_text(CRS.from_epsg(4326).to_wkt())


def write_netcdf(path: Path, dataset) -> None:  # noqa: ANN001 - an xarray.Dataset
    """An xarray dataset as NetCDF4 through h5netcdf, renamed into place when complete."""
    part = staged_file(path)
    dataset.to_netcdf(part, engine="h5netcdf")
    os.replace(part, path)


def write_text(path: Path, text: str) -> None:
    part = staged_file(path)
    part.write_text(text)
    os.replace(part, path)
