"""Intake drivers for hydroDL's CSV database (MHPI), the format of its SMAP example (Fang et al. 2017).

hydroDL (github.com/mhpi/hydroDL, ``example/data/DATA.md``) keeps a gridded dataset as plain CSV, one
folder per dataset (e.g. ``CONUSv4f1``)::

    <dataset>/crd.csv              one line per cell: lat,lon
    <dataset>/<year>/<VAR>.csv     one row per cell, one column per day; -9999 = missing
    <dataset>/<year>/timeStr.csv   the year folder's dates, one per line (yyyy-mm-dd)
    <dataset>/const/<VAR>.csv      one value per cell (static attributes)

A "year" runs from April 1 to March 31 (folder ``2015`` = 2015-04-01 .. 2016-03-31: SMAP launched
in April 2015). Nothing in the files names a cell, so cells are keyed by their row in ``crd.csv``:
site id ``<site_prefix>_<n>`` with ``n`` the 1-based row, zero-padded to 4 digits (``smap_0001`` ..
``smap_0412``). hydroDL's ``Subset/*.csv`` files number cells the same way (from 1), so a subset
list maps onto these ids directly.

The files carry no units; the catalog declares them (``catalog/smap_conus.yaml``) and the build
converts, as for every source. ``-9999`` is hydroDL's missing value (its own reader turns exactly
that value into NaN); anything else that is not a number is an error naming file, line and column.

Series are read lazily, one (variable, year) file at a time and at most once, so a catalog that
uses 5 of a database's 80 variables reads 5 files a year.
"""

from __future__ import annotations

import io
import posixpath
import threading
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from intake.source.base import DataSource, Schema

from ..errors import StefaLandError
from ..fileio import filesystem
from .textcheck import check_field_counts

MISSING_VALUE = -9999.0
COORDINATES = "crd.csv"
DATES = "timeStr.csv"
CONST_FOLDER = "const"
NOT_VARIABLES = {"time.csv", DATES}  # time.csv: the same dates as Matlab day numbers
ID_DIGITS = 4


def cell_ids(count: int, prefix: str) -> list[str]:
    """``prefix_0001`` .. in crd.csv row order (1-based, like hydroDL's subset indices)."""
    width = max(ID_DIGITS, len(str(count)))
    return [f"{prefix}_{n:0{width}d}" for n in range(1, count + 1)]


def _join(root: str, *parts: str) -> str:
    return posixpath.join(root.rstrip("/"), *parts)


def _read_text(url: str, source: str, storage_options: dict | None) -> str:
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise StefaLandError(f"source {source}: file not found: {url}") from None


def _first_non_number(frame: pd.DataFrame) -> tuple[int, int, object] | None:
    """(row, column, value) of the first cell pandas could not read as a number, else None."""
    for column in frame.columns:
        if frame[column].dtype.kind in "fiu":
            continue
        parsed = pd.to_numeric(frame[column], errors="coerce")
        bad = parsed.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            return row, int(column), frame[column].iat[row]
    return None


def read_matrix(url: str, source: str, rows: int, columns: int, what: str,
                storage_options: dict | None = None) -> np.ndarray:
    """A hydroDL value CSV (no header, one row per cell) as float64, -9999 → NaN.

    Every line must have ``columns`` fields (``what`` says why: the days of its year folder, one
    value per cell...) and there must be exactly ``rows`` lines (the cells of crd.csv): pandas would
    pad a short line with NaN, and a missing line would shift every later cell onto the wrong site."""
    text = _read_text(url, source, storage_options)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise StefaLandError(f"source {source}: file {url} holds no data")
    check_field_counts(lines, 1, columns, url, source, sep=",", what=what)
    if len(lines) != rows:
        raise StefaLandError(f"source {source}: file {url} has {len(lines)} rows where {COORDINATES} has {rows} cells")
    frame = pd.read_csv(io.StringIO(text), header=None, keep_default_na=False, na_values=["", "NaN", "nan"])
    bad = _first_non_number(frame)
    if bad is not None:
        row, column, value = bad
        raise StefaLandError(f"source {source}: file {url} line {row + 1} column {column + 1}: not a number ({value!r})")
    values = np.array(frame.apply(pd.to_numeric).to_numpy(dtype=np.float64, na_value=np.nan))  # a writable copy
    values[values == MISSING_VALUE] = np.nan
    return values


def read_coordinates(url: str, source: str, storage_options: dict | None = None) -> pd.DataFrame:
    """crd.csv → a table with ``lat`` and ``lon`` per cell, in file order."""
    text = _read_text(url, source, storage_options)
    lines = [line for line in text.splitlines() if line.strip()]
    values = read_matrix(url, source, len(lines), 2, "the lat,lon format", storage_options)
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values).any(axis=1))[0])
        raise StefaLandError(f"source {source}: file {url} line {row + 1}: cell without coordinates")
    return pd.DataFrame({"lat": values[:, 0], "lon": values[:, 1]})


def read_dates(url: str, source: str, storage_options: dict | None = None) -> pd.DatetimeIndex:
    """timeStr.csv → the year folder's days; an unparseable or repeated date names its line."""
    text = _read_text(url, source, storage_options)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    parsed = pd.to_datetime(pd.Series([line.strip() for line in lines]), format="%Y-%m-%d", errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise StefaLandError(f"source {source}: file {url} line {row + 1}: unparseable date {lines[row].strip()!r}")
    index = pd.DatetimeIndex(parsed, name="time")
    if index.has_duplicates:
        raise StefaLandError(f"source {source}: file {url}: duplicated date {index[index.duplicated()][0]:%Y-%m-%d}")
    return index


def _csv_names(folder: str, source: str, storage_options: dict | None) -> set[str]:
    """The ``*.csv`` file names in ``folder`` (without the folder)."""
    fs, path = filesystem(folder, storage_options)
    if not fs.isdir(path):
        raise StefaLandError(f"source {source}: folder not found: {folder}")
    return {posixpath.basename(p) for p in fs.glob(_join(path, "*.csv"))}


def year_folders(root: str, source: str, storage_options: dict | None = None) -> list[str]:
    """The dataset's year folders (names made of digits), oldest first."""
    fs, path = filesystem(root, storage_options)
    if not fs.isdir(path):
        raise StefaLandError(f"source {source}: dataset folder not found: {root}")
    years = sorted(name for name in (posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
                   if name.isdigit())
    if not years:
        raise StefaLandError(f"source {source}: {root} has no year folders (e.g. 2015/ holding <VAR>.csv and {DATES})")
    return years


class _HydroDLBase(DataSource):
    """What both drivers share: the dataset folder, the id scheme and the cell coordinates."""

    version = "1"
    partition_access = False

    def __init__(self, urlpath: str, site_prefix: str = "cell", storage_options: dict | None = None,
                 metadata: dict | None = None) -> None:
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = str(urlpath).rstrip("/")
        self.site_prefix = site_prefix
        self._coordinates: pd.DataFrame | None = None

    def _label(self) -> str:
        return str((self.metadata or {}).get("source_name", self.name))

    def coordinates(self) -> pd.DataFrame:
        """``site``, ``lat``, ``lon`` for every cell of crd.csv (read once)."""
        if self._coordinates is None:
            table = read_coordinates(_join(self.urlpath, COORDINATES), self._label(), self.storage_options)
            table.insert(0, "site", cell_ids(len(table), self.site_prefix))
            self._coordinates = table
        return self._coordinates

    def site_ids(self) -> list[str]:
        return list(self.coordinates()["site"])

    def to_dask(self):
        return self.read()

    def _close(self) -> None:
        self._coordinates = None


class HydroDLSeriesSource(_HydroDLBase):
    """``<dataset>/<year>/<VAR>.csv`` → Dataset(site, time), one variable per ``VAR`` (its file name).

    ``years`` limits the year folders read (default: all); a variable must have a file in every
    year folder read, which is checked when that variable is read."""

    name = "stefaland_hydrodl_csv"
    container = "xarray"

    def __init__(self, urlpath: str, site_prefix: str = "cell", years: Sequence[int | str] | None = None,
                 storage_options: dict | None = None, metadata: dict | None = None) -> None:
        super().__init__(urlpath, site_prefix, storage_options, metadata)
        self.years = [str(y) for y in years] if years is not None else None
        self._layout: tuple[list[str], dict[str, pd.DatetimeIndex], dict[str, set[str]]] | None = None
        self._blocks: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def layout(self) -> tuple[list[str], dict[str, pd.DatetimeIndex], dict[str, set[str]]]:
        """(years, dates per year, CSV variables per year): listings and timeStr.csv only, no values."""
        if self._layout is None:
            label = self._label()
            found = year_folders(self.urlpath, label, self.storage_options)
            years = self.years if self.years is not None else found
            missing = [y for y in years if y not in found]
            if missing:
                raise StefaLandError(f"source {label}: no year folder {missing[0]} in {self.urlpath} (it has {', '.join(found)})")
            dates = {y: read_dates(_join(self.urlpath, y, DATES), label, self.storage_options) for y in years}
            variables = {y: {n[:-4] for n in _csv_names(_join(self.urlpath, y), label, self.storage_options) - NOT_VARIABLES}
                         for y in years}
            self._check_days(dates)
            self._layout = (years, dates, variables)
        return self._layout

    def _check_days(self, dates: dict[str, pd.DatetimeIndex]) -> None:
        """Year folders must not overlap: the same day twice would silently keep one of them."""
        seen: dict[pd.Timestamp, str] = {}
        for year, index in dates.items():
            for day in index:
                if day in seen:
                    raise StefaLandError(f"source {self._label()}: day {day:%Y-%m-%d} is in year folders {seen[day]} and {year}")
                seen[day] = year

    def input_paths(self) -> list[str]:
        """Every file behind the series (fingerprinted by the build: an edited CSV forces a rebuild)."""
        years, _, variables = self.layout()
        paths = [_join(self.urlpath, COORDINATES)]
        for year in years:
            paths.append(_join(self.urlpath, year, DATES))
            paths.extend(_join(self.urlpath, year, f"{v}.csv") for v in sorted(variables[year]))
        return paths

    def _block(self, variable: str, year: str) -> np.ndarray:
        """One (variable, year) file, parsed once: every shard of a build slices the same block."""
        with self._lock:
            if (variable, year) not in self._blocks:
                years, dates, variables = self.layout()
                url = _join(self.urlpath, year, f"{variable}.csv")
                if variable not in variables[year]:
                    present = [y for y in years if variable in variables[y]]
                    raise StefaLandError(f"source {self._label()}: variable {variable}: file {url} not found "
                                         f"(it is in year folders {', '.join(present)}; set years: to those)")
                days = len(dates[year])
                self._blocks[(variable, year)] = read_matrix(url, self._label(), len(self.coordinates()), days,
                                                             f"{year}/{DATES} ({days} days)", self.storage_options)
            return self._blocks[(variable, year)]

    def _lazy_variable(self, variable: str) -> da.Array:
        years, dates, _ = self.layout()
        cells = len(self.coordinates())
        pieces = [da.from_delayed(dask.delayed(self._block)(variable, year), shape=(cells, len(dates[year])),
                                  dtype=np.float64) for year in years]
        return da.concatenate(pieces, axis=1)

    def to_dask(self) -> xr.Dataset:
        """Lazy Dataset(site, time): a variable's files are read only when its values are used."""
        years, dates, variables = self.layout()
        time = pd.DatetimeIndex(np.concatenate([dates[y].to_numpy() for y in years]), name="time")
        names = sorted(set().union(*variables.values()))
        data = {name: (("site", "time"), self._lazy_variable(name)) for name in names}
        sites = np.asarray(self.site_ids(), dtype=object)
        return xr.Dataset(data, coords={"site": sites, "time": time}).sortby("time")

    def read(self) -> xr.Dataset:
        return self.to_dask().compute()

    def time_bounds(self, sites: Sequence[str]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last day of the year folders (every cell has a column for every day)."""
        _, dates, _ = self.layout()
        days = [d for index in dates.values() for d in (index.min(), index.max()) if len(index)]
        return (min(days), max(days)) if days and sites else None

    def _get_schema(self) -> Schema:
        years, dates, variables = self.layout()
        return Schema(datashape=None, dtype=None, shape=(len(self.coordinates()), sum(len(d) for d in dates.values())),
                      npartitions=len(years), extra_metadata={"variables": sorted(set().union(*variables.values()))})

    def _close(self) -> None:
        super()._close()
        self._layout = None
        self._blocks = {}


class HydroDLCellsSource(_HydroDLBase):
    """crd.csv and ``<dataset>/const/<VAR>.csv`` → one row per cell: ``site``, ``lat``, ``lon`` and
    every static variable (its file name), -9999 → NaN. Serves both the site table and the statics."""

    name = "stefaland_hydrodl_cells"
    container = "dataframe"

    def __init__(self, urlpath: str, site_prefix: str = "cell", storage_options: dict | None = None,
                 metadata: dict | None = None) -> None:
        super().__init__(urlpath, site_prefix, storage_options, metadata)
        self._frame: pd.DataFrame | None = None

    def _const_names(self) -> list[str]:
        folder = _join(self.urlpath, CONST_FOLDER)
        fs, path = filesystem(folder, self.storage_options)
        if not fs.isdir(path):
            return []  # a dataset without statics still has its site table
        return sorted(n[:-4] for n in _csv_names(folder, self._label(), self.storage_options))

    def input_paths(self) -> list[str]:
        return [_join(self.urlpath, COORDINATES)] + [_join(self.urlpath, CONST_FOLDER, f"{n}.csv") for n in self._const_names()]

    def read(self) -> pd.DataFrame:
        if self._frame is None:
            table = self.coordinates().copy()
            for name in self._const_names():
                url = _join(self.urlpath, CONST_FOLDER, f"{name}.csv")
                if name in table.columns:
                    raise StefaLandError(f"source {self._label()}: static variable {name} ({url}) clashes with the site table's column")
                table[name] = read_matrix(url, self._label(), len(table), 1, "one value per cell",
                                          self.storage_options)[:, 0]
            self._frame = table
        return self._frame.copy()

    def _get_schema(self) -> Schema:
        frame = self.read()
        return Schema(datashape=None, dtype=None, shape=frame.shape, npartitions=1, extra_metadata={})

    def _close(self) -> None:
        super()._close()
        self._frame = None
