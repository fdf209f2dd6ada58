"""A tree of one-day NetCDF files (MSWX, MSWEP) as one lazy array, without opening every file first.

``xarray.open_mfdataset`` opens each file to learn its coordinates: about 85 ms a file through
h5netcdf here, so 40 years of MSWX (14,610 days × 4 variables) would take 80 minutes before a
single value is read, and again in every dask worker. These products name each file by its date
(``YYYYDDD.nc``) and keep the same grid in every file, so the first file says everything but the
dates, the names say the dates, and each day is read by one small task that opens that file with
h5py when (and only when) its values are needed. The first and the last file are checked against
their names and the first file's layout; anything else falls back to ``open_mfdataset``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..fileio import filesystem, is_remote, read_with_retries

DAY_NAME = re.compile(r"(\d{4})(\d{3})\.nc4?$")


def _date(path: str) -> pd.Timestamp | None:
    match = DAY_NAME.search(path)
    if match is None:
        return None
    year, day = int(match.group(1)), int(match.group(2))
    if not 1 <= day <= 366:
        return None
    return pd.Timestamp(datetime(year, 1, 1) + timedelta(days=day - 1))


def _open_h5(path: str, storage_options: dict | None):
    """The day's file; an object is fetched whole, in one GET.

    A day's map is read whole anyway, and HDF5 through a file object asks for many small ranges
    (superblock, object headers, then the chunks): one request per file is what object storage
    serves best, and one request is what a retry repeats."""
    import io

    import h5py

    if is_remote(path):
        fs, _ = filesystem(path, storage_options)
        return h5py.File(io.BytesIO(fs.cat_file(path)), "r")
    return h5py.File(path, "r")


def _read_day(path: str, name: str, fill: float | None, scale: float, offset: float,
              storage_options: dict | None) -> np.ndarray:
    def read() -> np.ndarray:
        with _open_h5(path, storage_options) as handle:
            return np.asarray(handle[name][...], dtype=np.float32)

    values = read_with_retries(path, read)  # object storage throttles and drops connections now and then
    if fill is not None:
        values[values == np.float32(fill)] = np.nan
    if scale != 1.0 or offset != 0.0:
        values = values * np.float32(scale) + np.float32(offset)
    return values


def _day_blocks(files: list[str], name: str, shape: tuple[int, int], encoding: dict[str, Any],
                storage_options: dict | None) -> da.Array:
    fill = encoding.get("_FillValue", encoding.get("missing_value"))
    fill = None if fill is None else float(np.asarray(fill).ravel()[0])
    scale, offset = float(encoding.get("scale_factor", 1.0)), float(encoding.get("add_offset", 0.0))

    def block(block_info: dict | None = None) -> np.ndarray:
        assert block_info is not None  # dask passes it to a function that names it
        day = block_info[None]["chunk-location"][0]
        return _read_day(files[day], name, fill, scale, offset, storage_options).reshape((1, *shape))

    return da.map_blocks(block, chunks=((1,) * len(files), (shape[0],), (shape[1],)), dtype=np.float32,
                         meta=np.empty((0, 0, 0), dtype=np.float32), name=f"day-files-{name}-{abs(hash(tuple(files)))}")


def open_day_tree(files: list[str], rename_to: str | None, keep: list[str] | None, engine: str,
                  storage_options: dict | None) -> xr.Dataset | None:
    """The tree as one Dataset (time, lat, lon), or None when it is not a plain one-day-per-file tree."""
    if engine != "h5netcdf" or len(files) < 2:
        return None
    dates = [_date(f) for f in files]
    if any(d is None for d in dates):
        return None
    # small blocks: only the first and last file's metadata and coordinates are read here, not the
    # map (s3fs' default 50 MB read-ahead fetched every byte of a 0.1° day file)
    opener = ((lambda f: filesystem(f, storage_options)[0].open(f, "rb", block_size=1 << 18))
              if is_remote(files[0]) else (lambda f: f))
    with xr.open_dataset(opener(files[0]), engine=engine) as first, xr.open_dataset(opener(files[-1]), engine=engine) as last:
        for ds, date in ((first, dates[0]), (last, dates[-1])):
            if "time" not in ds.dims or ds.sizes["time"] != 1 or pd.Timestamp(ds["time"].values[0]).normalize() != date:
                return None
        payload = [str(n) for n, v in first.data_vars.items() if v.dims and v.dims[0] == "time" and v.ndim == 3]
        if rename_to is not None:
            if len(payload) != 1:
                return None  # let the general path name the file and what it holds
            names = {rename_to: payload[0]}
        else:
            wanted = keep or payload
            if any(v not in payload for v in wanted):
                return None
            names = {v: v for v in wanted}
        variables = {}
        for out_name, file_name in names.items():
            source = first[file_name]
            if last[file_name].shape != source.shape:
                return None
            shape = (int(source.shape[1]), int(source.shape[2]))
            data = _day_blocks(files, file_name, shape, dict(source.encoding), storage_options)
            variables[out_name] = xr.Variable(source.dims, data, attrs=dict(source.attrs))
        coords = {d: first[d].values for d in first[file_name].dims[1:] if d in first.coords}
        coords["time"] = pd.DatetimeIndex(dates)
        ds = xr.Dataset(variables, coords=coords, attrs=dict(first.attrs))
    return ds
