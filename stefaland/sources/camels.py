"""Intake drivers for the CAMELS-US text formats (forcings, USGS streamflow, attribute tables).

CAMELS is the benchmark every streamflow model in the field is compared on, and its files are
plain text with quirks (a 3-line header, a unit inside each column name, ``-999`` for missing,
ids that must stay zero-padded strings). These drivers read the real files, locally or from object
storage, and hand ``data build`` datasets keyed by site id. Besides intake's ``read``/``to_dask``
they offer ``read_sites`` so that a build can read one shard of sites without touching the rest.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from intake.source.base import DataSource, Schema

from ..errors import StefaLandError
from ..fileio import filesystem
from .textcheck import check_field_counts

MISSING_CODE = -999.0
_SITE_IN_NAME = re.compile(r"^(\d{8})_")
_COLUMN_UNIT = re.compile(r"^(?P<name>[^()]+)\((?P<unit>[^()]*)\)$")


def _as_list(urlpath: str | Sequence[str]) -> list[str]:
    return [urlpath] if isinstance(urlpath, str) else list(urlpath)


def _protocol_prefix(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


def expand_files(urlpath: str | Sequence[str], source: str, storage_options: dict | None = None) -> list[str]:
    """Expand globs in ``urlpath`` into a sorted list of file URLs (never empty)."""
    files: list[str] = []
    for pattern in _as_list(urlpath):
        fs, path = filesystem(pattern, storage_options)
        prefix = _protocol_prefix(pattern)
        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            if not matches:
                raise StefaLandError(f"source {source}: no files match {pattern}")
            files.extend(prefix + m if prefix else m for m in matches)
        else:
            if not fs.exists(path):
                raise StefaLandError(f"source {source}: file not found: {pattern}")
            files.append(pattern)
    return files


def _read_text(url: str, storage_options: dict | None) -> str:
    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


def site_id_from_filename(url: str, source: str) -> str:
    """CAMELS file names start with the 8-digit USGS gauge id (``01022500_lump_...``)."""
    match = _SITE_IN_NAME.match(os.path.basename(url))
    if not match:
        raise StefaLandError(
            f"source {source}: file {url} has no site id (expected an 8-digit gauge id prefix)"
        )
    return match.group(1)


def _dates(frame: pd.DataFrame, columns: list[str], url: str, source: str, first_line: int) -> pd.DatetimeIndex:
    """Dates from year/month/day columns; the first impossible one is reported with its line."""
    parts = frame[columns].apply(pd.to_numeric, errors="coerce")
    parts.columns = ["year", "month", "day"]
    parsed = pd.to_datetime(parts, errors="coerce")
    if parsed.isna().any():
        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        shown = "-".join(str(frame[c].iloc[bad]) for c in columns)
        raise StefaLandError(f"source {source}: file {url} line {first_line + bad}: unparseable date {shown}")
    return pd.DatetimeIndex(parsed)


def _numeric(frame: pd.DataFrame, columns: list[str], url: str, source: str, first_line: int) -> np.ndarray:
    """The columns as float64 (pandas parsed them already); a non-number is reported with its line."""
    for column in columns:
        if frame[column].dtype.kind not in "fiu":
            coerced = pd.to_numeric(frame[column], errors="coerce")
            bad = coerced.isna() & frame[column].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise StefaLandError(
                    f"source {source}: file {url} line {first_line + row}: column {column} "
                    f"has a non-numeric value {frame[column].iloc[row]!r}"
                )
            frame[column] = coerced
    values = np.array(frame[columns].to_numpy(dtype=np.float64, na_value=np.nan))
    values[values == MISSING_CODE] = np.nan
    return values


def read_forcing_file(url: str, source: str = "forcing", storage_options: dict | None = None) -> xr.Dataset:
    """One ``*_forcing_leap.txt`` file → Dataset(time) with lower-case variables and ``units`` attrs."""
    text = _read_text(url, storage_options)
    lines = text.split("\n", 5)
    if len(lines) < 5:
        raise StefaLandError(f"source {source}: file {url} is too short for a CAMELS forcing file")
    header = lines[3].split()
    if [h.lower() for h in header[:3]] != ["year", "mnth", "day"]:
        raise StefaLandError(
            f"source {source}: file {url} line 4: expected a 'Year Mnth Day Hr ...' header, got {lines[3][:60]!r}"
        )
    check_field_counts(text.splitlines()[4:], 5, len(header), url, source)
    frame = pd.read_csv(io.StringIO(text), sep=r"\s+", skiprows=4, header=None, names=header)
    time = _dates(frame, header[:3], url, source, 5)
    value_columns = header[4:]
    values = _numeric(frame, value_columns, url, source, 5)
    variables = {}
    for index, column in enumerate(value_columns):
        match = _COLUMN_UNIT.match(column)
        name, unit = (match.group("name"), match.group("unit")) if match else (column, "")
        variables[name.strip().lower()] = xr.DataArray(values[:, index], dims="time", attrs={"units": unit})
    dataset = xr.Dataset(variables, coords={"time": time})
    _refuse_duplicate_dates(dataset, url, source)
    return dataset


def read_streamflow_file(url: str, source: str = "streamflow", storage_options: dict | None = None) -> xr.Dataset:
    """One ``*_streamflow_qc.txt`` file → Dataset(time) with ``QObs`` in ft³/s, ``-999`` → NaN."""
    text = _read_text(url, storage_options)
    names = ["gauge", "year", "month", "day", "QObs", "flag"]
    check_field_counts(text.splitlines(), 1, len(names), url, source, what="the CAMELS streamflow format (gauge year month day Q flag)")
    frame = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, names=names, dtype={"gauge": str, "flag": str})
    if frame.empty:
        raise StefaLandError(f"source {source}: file {url} holds no data")
    time = _dates(frame, ["year", "month", "day"], url, source, 1)
    q = _numeric(frame, ["QObs"], url, source, 1)[:, 0]
    q[q <= MISSING_CODE + 0.5] = np.nan  # -999 (and -999.00) is CAMELS' missing code
    dataset = xr.Dataset(
        {"QObs": xr.DataArray(q, dims="time", attrs={"units": "ft3/s"})}, coords={"time": time}
    )
    _refuse_duplicate_dates(dataset, url, source)
    return dataset


def _refuse_duplicate_dates(dataset: xr.Dataset, url: str, source: str) -> None:
    index = dataset.indexes["time"]
    if index.has_duplicates:
        raise StefaLandError(f"source {source}: file {url}: duplicated date {index[index.duplicated()][0]:%Y-%m-%d}")


_NUMERIC_ID = re.compile(r"^(\d+)(?:\.0*)?$")
GAUGE_ID_DIGITS = 8


def normalise_gauge_ids(ids: pd.Series) -> pd.Series:
    """USGS gauge ids as CAMELS writes them: 8 digits, zero-padded, whichever table they come from.

    A table that went through a spreadsheet lost its leading zeros ("01013500" → "1013500", or
    "1013500.0"); joined as text it matched no site, and its attributes were NaN everywhere.
    Ids that are not plain numbers are kept as written (stripped).
    """
    text = ids.astype(str).str.strip()
    digits = text.str.extract(_NUMERIC_ID, expand=False)
    padded = digits.str.zfill(GAUGE_ID_DIGITS)
    return padded.where(digits.notna(), text)


def read_attribute_table_list(urlpath: str | Sequence[str], source: str, site_id: str = "gauge_id",
                              sep: str = ";", storage_options: dict | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Each CAMELS attribute file as ``(url, table indexed by normalised gauge id)``, unjoined.

    Kept apart so a build can say which file matches none of its sites.
    """
    tables: list[tuple[str, pd.DataFrame]] = []
    for url in expand_files(urlpath, source, storage_options):
        text = _read_text(url, storage_options)
        lines = text.splitlines()
        if lines:
            check_field_counts(lines[1:], 2, len(lines[0].split(sep)), url, source, sep=sep)
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str)  # "01" stays "01"
        table.columns = [c.strip() for c in table.columns]
        if site_id not in table.columns:
            raise StefaLandError(
                f"source {source}: file {url} has no site id column {site_id!r} (columns: {', '.join(table.columns[:8])})"
            )
        table[site_id] = normalise_gauge_ids(table[site_id])
        duplicated = table[site_id][table[site_id].duplicated()]
        if not duplicated.empty:
            raise StefaLandError(f"source {source}: file {url}: duplicated site id {duplicated.iloc[0]}")
        tables.append((url, table.set_index(site_id)))
    return tables


def read_attribute_tables(urlpath: str | Sequence[str], source: str, site_id: str = "gauge_id",
                          sep: str = ";", storage_options: dict | None = None) -> pd.DataFrame:
    """Join CAMELS attribute tables on the site id, keeping ids as zero-padded strings."""
    tables = read_attribute_table_list(urlpath, source, site_id, sep, storage_options)
    return join_on_site([t for _, t in tables], site_id, source, [url for url, _ in tables])


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Cell by cell: equal as numbers (to float precision) when both parse, else as stripped text."""
    x, y = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    numeric = x.notna() & y.notna()
    close = pd.Series(np.isclose(x.to_numpy(dtype=float, na_value=np.nan), y.to_numpy(dtype=float, na_value=np.nan),
                                 rtol=1e-6, atol=0.0), index=a.index)
    text = a.astype(str).str.strip() == b.astype(str).str.strip()
    return close.where(numeric, text)


def join_on_site(tables: list[pd.DataFrame], site_id: str, source: str = "", labels: list[str] | None = None) -> pd.DataFrame:
    """Outer-join tables indexed by site id.

    A column in two tables must agree wherever both hold a value (a blank is filled from the other
    table): silently keeping the first table's value hid contradictory inputs.
    """
    labels = labels or [f"table {i + 1}" for i in range(len(tables))]
    merged, origin = tables[0], {c: labels[0] for c in tables[0].columns}
    for table, label in zip(tables[1:], labels[1:]):
        shared = [c for c in table.columns if c in merged.columns]
        for column in shared:
            both = merged.index.intersection(table.index)
            a, b = merged.loc[both, column], table.loc[both, column]
            present = a.notna() & b.notna()
            differ = present & ~_same(a, b)
            if differ.any():
                site = differ[differ].index[0]
                raise StefaLandError(
                    f"source {source}: column {column} of site {site} is {a[site]!r} in {origin[column]} but "
                    f"{b[site]!r} in {label} ({int(differ.sum())} such sites); the tables disagree"
                )
        merged = merged.join(table[[c for c in table.columns if c not in shared]], how="outer")
        for column in shared:  # a blank in the first table takes the other table's value
            merged[column] = merged[column].combine_first(table[column].reindex(merged.index))
        origin.update({c: label for c in table.columns if c not in origin})
    merged.index.name = site_id
    return merged.reset_index()


class SiteFilesSource(DataSource):
    """Shared machinery of the per-site file drivers (one file per site).

    A subclass sets ``name`` and implements ``_read_file(url)``, which returns one site's file as a
    Dataset(time). It overrides :meth:`files` when its file names do not start with an 8-digit
    gauge id.

    Parameters
    ----------
    urlpath : str or list of str
        The files, as paths, URLs or glob patterns (local or object storage).
    storage_options : dict, optional
        fsspec options for remote files.
    metadata : dict, optional
        The catalog entry's metadata; its ``source_name`` names the source in errors.
    """

    container = "xarray"
    version = "1"
    partition_access = False

    def __init__(self, urlpath: str | list[str], storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = urlpath
        self._files: dict[str, str] | None = None

    # -- the per-file reader of each format
    def _read_file(self, url: str) -> xr.Dataset:
        raise NotImplementedError

    def _label(self) -> str:
        return str((self.metadata or {}).get("source_name", self.name))

    def files(self) -> dict[str, str]:
        """Site id → file URL, refusing two files for one site."""
        if self._files is None:
            mapping: dict[str, str] = {}
            for url in expand_files(self.urlpath, self._label(), self.storage_options):
                site = site_id_from_filename(url, self._label())
                if site in mapping:
                    raise StefaLandError(
                        f"source {self._label()}: duplicated site id {site} ({mapping[site]} and {url})"
                    )
                mapping[site] = url
            self._files = mapping
        return self._files

    def _get_schema(self) -> Schema:
        files = self.files()
        return Schema(datashape=None, dtype=None, shape=(len(files),), npartitions=len(files),
                      extra_metadata={"sites": sorted(files)})

    def site_ids(self) -> list[str]:
        """The ids of the sites that have a file, sorted."""
        return sorted(self.files())

    def read_sites(self, sites: Sequence[str], time: pd.DatetimeIndex | None = None) -> xr.Dataset:
        """Read only ``sites`` (missing ones become all-NaN rows), aligned on ``time`` if given."""
        files = self.files()
        pieces: list[xr.Dataset | None] = []
        template: xr.Dataset | None = None
        for site in sites:
            if site not in files:
                pieces.append(None)
                continue
            piece = self._read_file(files[site])
            if time is not None:
                piece = piece.reindex(time=time)
            template = template if template is not None else piece
            pieces.append(piece)
        if template is None:
            template = self._empty_template(time)
        filled = [p if p is not None else xr.full_like(template, np.nan) for p in pieces]
        if time is None:
            combined = xr.concat(filled, dim="site", join="outer")
        else:
            combined = xr.concat(filled, dim="site")
        for name in template.data_vars:
            combined[name].attrs = template[name].attrs
        return combined.assign_coords(site=np.asarray(list(sites), dtype=object))

    def _empty_template(self, time: pd.DatetimeIndex | None) -> xr.Dataset:
        """The variables (and units) of this source for a shard none of whose sites has a file.

        A target source legitimately lacks ungauged sites; with small shards (``--shard-size 1``)
        a shard may hold only such sites, and its rows are all NaN like any ungauged row. The
        variables come from the first file of the source (read once, its values dropped).
        """
        files = self.files()
        if not files:
            raise StefaLandError(f"source {self._label()}: no file to read")
        piece = self._read_file(files[min(files)])
        if time is not None:
            piece = piece.reindex(time=time)
        return xr.full_like(piece, np.nan)

    def time_bounds(self, sites: Sequence[str]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """Earliest and latest date in the files of ``sites`` (each file read once, then dropped)."""
        files = self.files()
        first: pd.Timestamp | None = None
        last: pd.Timestamp | None = None
        for site in sites:
            if site not in files:
                continue
            index = self._read_file(files[site]).indexes["time"]
            if len(index):
                first = index.min() if first is None else min(first, index.min())
                last = index.max() if last is None else max(last, index.max())
        return None if first is None or last is None else (first, last)

    def read(self) -> xr.Dataset:
        """Every site's file as one Dataset(site, time)."""
        return self.read_sites(self.site_ids())

    def to_dask(self) -> xr.Dataset:
        """The same as :meth:`read`: the files are read eagerly."""
        return self.read()

    def _close(self) -> None:
        self._files = None


class CamelsForcingSource(SiteFilesSource):
    """``<gauge>_lump_<product>_forcing_leap.txt`` files → Dataset(site, time)."""

    name = "stefaland_camels_forcing"

    def _read_file(self, url: str) -> xr.Dataset:
        return read_forcing_file(url, self._label(), self.storage_options)


class CamelsStreamflowSource(SiteFilesSource):
    """``<gauge>_streamflow_qc.txt`` files → Dataset(site, time) with ``QObs`` (ft³/s)."""

    name = "stefaland_camels_streamflow"

    def _read_file(self, url: str) -> xr.Dataset:
        return read_streamflow_file(url, self._label(), self.storage_options)


@dataclass(frozen=True)
class TableKeys:
    """One joined table of a source: where it came from, the site ids it holds, its columns."""

    label: str
    ids: pd.Index
    columns: tuple[str, ...]


class SiteTableSource(DataSource):
    """A site table assembled from several files, read once and cached.

    The shared shape of the attribute drivers (CAMELS, Caravan), which differ only in how they read
    and join their files: a subclass sets ``name`` and implements ``_read_table(label)``, which
    returns the joined table (one row per site) and records each file's ids and columns in
    ``self._keys`` (:class:`TableKeys`).

    Parameters
    ----------
    urlpath : str or list of str
        The table files, as paths, URLs or glob patterns (local or object storage).
    site_id : str, default "gauge_id"
        The column holding the site ids.
    storage_options : dict, optional
        fsspec options for remote files.
    metadata : dict, optional
        The catalog entry's metadata; its ``source_name`` names the source in errors.
    """

    container = "dataframe"
    version = "1"
    partition_access = False

    def __init__(self, urlpath: str | list[str], site_id: str = "gauge_id",
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = urlpath
        self.site_id = site_id
        self._frame: pd.DataFrame | None = None
        self._keys: list[TableKeys] = []

    def _read_table(self, label: str) -> pd.DataFrame:
        raise NotImplementedError

    def table_keys(self) -> list[TableKeys]:
        """The ids and columns of each file (or group of files) before the join.

        A file whose ids match no site of the store is then named, not hidden behind NaN columns.
        """
        self.read()
        return list(self._keys)

    def _get_schema(self) -> Schema:
        frame = self.read()
        return Schema(datashape=None, dtype=None, shape=frame.shape, npartitions=1, extra_metadata={})

    def read(self) -> pd.DataFrame:
        """The joined table, one row per site (a copy: the cached table stays as read)."""
        if self._frame is None:
            self._frame = self._read_table(str((self.metadata or {}).get("source_name", self.name)))
        return self._frame.copy()

    def to_dask(self) -> pd.DataFrame:
        """The same as :meth:`read`: the table is small and read eagerly."""
        return self.read()

    def _close(self) -> None:
        self._frame = None


class CamelsAttributesSource(SiteTableSource):
    """``;``-separated CAMELS attribute tables joined on ``gauge_id`` → DataFrame (one row per site)."""

    name = "stefaland_camels_attributes"

    def __init__(self, urlpath: str | list[str], site_id: str = "gauge_id", sep: str = ";",
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(urlpath, site_id, storage_options, metadata)
        self.sep = sep

    def _read_table(self, label: str) -> pd.DataFrame:
        tables = read_attribute_table_list(self.urlpath, label, self.site_id, self.sep, self.storage_options)
        self._keys = [TableKeys(url, t.index, tuple(map(str, t.columns))) for url, t in tables]
        return join_on_site([t for _, t in tables], self.site_id, label, [url for url, _ in tables])
