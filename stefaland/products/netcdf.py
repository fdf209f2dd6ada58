"""Intake driver for gridded NetCDF products as their providers publish them (paper Table C1).

MSWX ships one file per day and variable (``MSWX_V100/Past/Tmax/Daily/2001001.nc``), each holding a
single data variable whose name is not the folder's (Tmax and Tmin are both ``air_temperature``),
so a ``{variable}`` pattern opens one file set per variable and renames its single variable to the
folder name; without the pattern the file's own names are kept (MSWEP's ``precipitation``). Single
files holding a time axis that a static source does not want (ESA CCI land cover for 2018, Kummu's
GDP/HDI for 2015) take a ``select`` of one label per dimension, and the dimension is dropped.

A tree of one-day files named YYYYDDD.nc (MSWX, MSWEP) is opened without opening every file
(:mod:`.daily_files`). Everything stays lazy: every other file set is opened with dask chunks (``"auto"`` by default: the file's
own chunks grown to dask's chunk size, so a daily file is one chunk and a global map a few), and
the per-file datasets are concatenated along ``time`` by ``xarray.open_mfdataset``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from ..fileio import filesystem, is_remote
from ..gridded.grid import LAT_NAMES, LON_NAMES
from .base import LazyProductSource
from .daily_files import open_day_tree

PLACEHOLDER = "{variable}"


def expand(urlpath: str, storage_options: dict | None, source: str) -> list[str]:
    """The files a path or glob names, sorted (MSWX's YYYYDDD names sort by date); none is an error."""
    fs, path = filesystem(urlpath, storage_options)
    if any(char in path for char in "*?["):  # one listing, not one request per file (s3: thousands of days)
        found = sorted(p for p, info in fs.glob(path, detail=True).items() if info.get("type") != "directory")
    else:
        found = [path] if fs.isfile(path) else []
    if not found:
        raise StefaLandError(f"source {source}: no file matches {urlpath}")
    protocol = urlpath.split("://", 1)[0] + "://" if "://" in urlpath else ""
    return [p if not protocol or p.startswith(protocol) else protocol + p for p in found]


def _grid_variables(ds: xr.Dataset) -> list[str]:
    """Data variables on the lat/lon grid: a file's real payload, not ``crs`` or bounds variables."""
    lat = [d for d in ds.dims if d in LAT_NAMES]
    lon = [d for d in ds.dims if d in LON_NAMES]
    return [str(n) for n, v in ds.data_vars.items() if any(d in v.dims for d in lat) and any(d in v.dims for d in lon)]


def _file_name(ds: xr.Dataset, fallback: str) -> str:
    return str(ds.encoding.get("source", fallback))


def _preprocess(rename_to: str | None, keep: Sequence[str] | None, many: bool, pattern: str,
                source: str) -> Callable[[xr.Dataset], xr.Dataset]:
    """Per-file check and renaming, run by ``open_mfdataset`` on each file as it is opened."""
    shape: dict[str, int] = {}

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        name = _file_name(ds, pattern)
        if rename_to is not None:
            payload = _grid_variables(ds)
            if len(payload) != 1:
                what = "no data variable on a lat/lon grid" if not payload else f"{len(payload)} data variables ({', '.join(payload[:6])})"
                raise StefaLandError(f"source {source}: file {name} of variable {rename_to} holds {what}; expected exactly one")
            ds = ds[payload].rename({payload[0]: rename_to})
        elif keep:
            absent = [v for v in keep if v not in ds.data_vars]
            if absent:
                raise StefaLandError(f"source {source}: file {name} has no variable {absent[0]} "
                                     f"(it has: {', '.join(map(str, list(ds.data_vars)[:12]))})")
            ds = ds[list(keep)]
        if many:
            if "time" not in ds.dims:
                raise StefaLandError(f"source {source}: file {name} has no time dimension; several files are joined along time")
            sizes = {str(d): int(n) for d, n in ds.sizes.items() if d != "time"}
            if not shape:
                shape.update(sizes)
            elif sizes != shape:
                raise StefaLandError(f"source {source}: file {name} has grid sizes {sizes}, the first file {shape}")
        return ds

    return prepare


def _open_files(files: list[str], prepare: Callable[[xr.Dataset], xr.Dataset], engine: str, chunks: Any,
                storage_options: dict | None) -> xr.Dataset:
    """Local files by path (xarray closes and reopens them past its file cache, so thousands of
    daily files never hold thousands of handles); remote ones as fsspec file objects."""
    if is_remote(files[0]):
        fs, _ = filesystem(files[0], storage_options)
        handles: list[Any] = [fs.open(f, "rb") for f in files]
    else:
        handles = list(files)
    if len(handles) == 1:
        return prepare(xr.open_dataset(handles[0], engine=engine, chunks=chunks))
    return xr.open_mfdataset(handles, engine=engine, chunks=chunks, combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override", join="override",
                             combine_attrs="override", preprocess=prepare)


def _select_one(ds: xr.Dataset, dim: str, label: Any, where: str, source: str) -> xr.Dataset:
    """One label of ``dim``, the dim dropped. A datetime axis takes a year (int) or a date (str)."""
    if dim not in ds.dims:
        raise StefaLandError(f"source {source}: select {dim}: {where} has no dimension {dim} (dims: {', '.join(map(str, ds.dims))})")
    index = ds.indexes.get(dim)
    if index is None:
        raise StefaLandError(f"source {source}: select {dim}: {where} has no coordinate labels along {dim}")
    if isinstance(index, (pd.DatetimeIndex, xr.CFTimeIndex)):
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            hits = np.flatnonzero(np.asarray([t.year for t in index]) == int(label))
            if hits.size > 1:
                raise StefaLandError(f"source {source}: select {dim}: {label} matches {hits.size} steps in {where}; "
                                     "give a date (YYYY-MM-DD)")
        else:
            try:
                wanted = pd.Timestamp(str(label))
            except ValueError:
                raise StefaLandError(f"source {source}: select {dim}: {label!r} is neither a year nor a date") from None
            hits = np.flatnonzero(pd.DatetimeIndex(index.to_datetimeindex() if isinstance(index, xr.CFTimeIndex) else index) == wanted)
    else:
        values = np.asarray(index)
        if np.issubdtype(values.dtype, np.number):
            try:
                hits = np.flatnonzero(values.astype(np.float64) == float(label))
            except (TypeError, ValueError):
                hits = np.empty(0, dtype=np.int64)
        else:
            hits = np.flatnonzero(values.astype(str) == str(label))
    if hits.size == 0:
        raise StefaLandError(f"source {source}: select {dim}: label {label} not found in {where}")
    return ds.isel({dim: int(hits[0])}, drop=True)


def _ascending_unique_time(ds: xr.Dataset, where: str, source: str) -> xr.Dataset:
    if "time" not in ds.indexes:
        return ds
    index = ds.indexes["time"]
    if index.has_duplicates:
        raise StefaLandError(f"source {source}: {where} holds the date {index[index.duplicated()][0]} more than once")
    return ds if index.is_monotonic_increasing else ds.sortby("time")


def _merge_sets(parts: list[xr.Dataset], names: list[str], source: str) -> xr.Dataset:
    """One Dataset from the per-variable sets: dates are united (a set that ends earlier gets NaN),
    the grid is the first set's (sizes must agree; float noise in lat/lon must not split cells)."""
    first = parts[0]
    grid = {str(d): int(n) for d, n in first.sizes.items() if d != "time"}
    aligned = [first]
    for name, part in zip(names[1:], parts[1:]):
        sizes = {str(d): int(n) for d, n in part.sizes.items() if d != "time"}
        if sizes != grid:
            raise StefaLandError(f"source {source}: variable {name} has grid sizes {sizes}, variable {names[0]} {grid}")
        aligned.append(part.assign_coords({d: first[d] for d in grid if d in first.coords and d in part.coords}))
    if len(aligned) == 1:
        return first
    return xr.merge(aligned, join="outer", compat="override", combine_attrs="drop_conflicts")


class NetcdfSource(LazyProductSource):
    """One NetCDF file, a glob of them, or one file set per ``{variable}`` → one lazy Dataset."""

    name = "stefaland_netcdf"

    def input_paths(self) -> list[str]:
        """The file patterns the build fingerprints: one per variable of a daily tree."""
        if PLACEHOLDER in self.urlpath:
            return [self.urlpath.replace(PLACEHOLDER, v) for v in self.variables]
        return [self.urlpath]

    def __init__(self, urlpath: str, variables: Sequence[str] | None = None, select: Mapping[str, Any] | None = None,
                 engine: str = "h5netcdf", chunks: Any = "auto", storage_options: dict | None = None,
                 metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = str(urlpath)
        self.variables = [str(v) for v in (variables or [])]
        self.select = dict(select or {})
        self.engine = engine
        self.chunks = chunks
        if PLACEHOLDER in self.urlpath and not self.variables:
            raise StefaLandError(f"source {self._label()}: urlpath {self.urlpath} contains {PLACEHOLDER} but no variables are given")

    def _open_set(self, pattern: str, rename_to: str | None) -> xr.Dataset:
        label = self._label()
        files = expand(pattern, self.storage_options, label)
        keep = None if rename_to is not None else self.variables
        if len(files) > 1:  # a YYYYDDD.nc tree: dates from the names, each day read only when needed
            tree = open_day_tree(files, rename_to, keep or None, self.engine, self.storage_options)
            if tree is not None:
                return tree
        prepare = _preprocess(rename_to, keep, len(files) > 1, pattern, label)
        return _open_files(files, prepare, self.engine, self.chunks, self.storage_options)

    def _open(self) -> xr.Dataset:
        if PLACEHOLDER in self.urlpath:
            parts = [self._open_set(self.urlpath.replace(PLACEHOLDER, v), v) for v in self.variables]
            ds = _merge_sets(parts, self.variables, self._label())
        else:
            ds = self._open_set(self.urlpath, None)
        for dim, label in self.select.items():
            ds = _select_one(ds, str(dim), label, self.urlpath, self._label())
        return _ascending_unique_time(ds, self.urlpath, self._label())

    def _close(self) -> None:
        if self._ds is not None:
            self._ds.close()
        self._ds = None
