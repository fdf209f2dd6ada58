"""Intake drivers for Caravan (Kratzert et al. 2023), the global streamflow collection (paper Table C6).

Caravan ships one daily CSV per basin (``timeseries/csv/<source>/<source>_<id>.csv``: a ``date``
column, ERA5-Land forcings, ``streamflow`` in mm/day, blanks = missing) and per-source attribute
tables (``attributes/<source>/attributes_<kind>_<source>.csv`` keyed by ``gauge_id``). Basin ids
are already globally unique (``camelsch_4001``, ``GRDC_1159100``), so they are the site ids as is.
The NetCDF layout (dims ``basin_id`` × ``time``) needs no driver: intake-xarray's ``netcdf`` opens
it and the build's generic xarray path keys it by ``basin_id``.

The paper's own basin lists use other prefixes (``USGS_``, ``Canada_``, ``Brazil_``…);
:func:`match_basin_ids` maps them onto Caravan ids where a Caravan source holds the same gauge.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from ..fileio import filesystem
from .camels import SiteFilesSource, SiteTableSource, TableKeys, expand_files, join_on_site
from .textcheck import check_field_counts

DATE_COLUMN = "date"
_KIND = re.compile(r"^(?P<kind>attributes_[a-z]+)_(?P<source>[A-Za-z0-9]+)\.csv$")


def _read_text(url: str, storage_options: dict | None) -> str:
    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


def site_id_from_filename(url: str) -> str:
    """Caravan names each CSV after its basin id: ``camelsch_4001.csv`` → ``camelsch_4001``."""
    return os.path.splitext(os.path.basename(url))[0]


def read_timeseries_csv(url: str, source: str = "caravan", storage_options: dict | None = None) -> xr.Dataset:
    """One Caravan daily CSV → Dataset(time); blanks are NaN, a non-numeric cell is an error."""
    text = _read_text(url, storage_options)
    lines = text.splitlines()
    if lines:
        check_field_counts(lines[1:], 2, len(lines[0].split(",")), url, source, sep=",")
    frame = pd.read_csv(io.StringIO(text), dtype={DATE_COLUMN: str},
                        keep_default_na=False, na_values=["", "nan", "NaN"])  # not "n/a", "NA"…: those are errors
    if DATE_COLUMN not in frame.columns:
        raise StefaLandError(f"source {source}: file {url} has no {DATE_COLUMN!r} column")
    time = pd.to_datetime(frame[DATE_COLUMN], format="%Y-%m-%d", errors="coerce")
    if time.isna().any():
        row = int(np.flatnonzero(time.isna().to_numpy())[0])
        raise StefaLandError(f"source {source}: file {url} line {row + 2}: unparseable date {frame[DATE_COLUMN].iat[row]!r}")
    index = pd.DatetimeIndex(time, name="time")
    if index.has_duplicates:
        raise StefaLandError(f"source {source}: file {url}: duplicated date {index[index.duplicated()][0]:%Y-%m-%d}")
    variables = {}
    for column in frame.columns:
        if column == DATE_COLUMN:
            continue
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values):  # pandas parses numbers and blanks itself; else a bad cell
            parsed = pd.to_numeric(values, errors="coerce")
            bad = parsed.isna() & values.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise StefaLandError(
                    f"source {source}: file {url} line {row + 2}: column {column} has a non-numeric value {values.iat[row]!r}"
                )
            values = parsed
        variables[column] = xr.DataArray(np.array(values.to_numpy(dtype=np.float64, na_value=np.nan)), dims="time")
    return xr.Dataset(variables, coords={"time": index})


class CaravanCsvSource(SiteFilesSource):
    """``timeseries/csv/<source>/<basin id>.csv`` files → Dataset(site, time), one shard at a time."""

    name = "stefaland_caravan_csv"

    def files(self) -> dict[str, str]:
        """basin id → file URL, refusing two files for one basin."""
        if self._files is None:
            mapping: dict[str, str] = {}
            for url in expand_files(self.urlpath, self._label(), self.storage_options):
                site = site_id_from_filename(url)
                if site in mapping:
                    raise StefaLandError(f"source {self._label()}: duplicated site id {site} ({mapping[site]} and {url})")
                mapping[site] = url
            self._files = mapping
        return self._files

    def _read_file(self, url: str) -> xr.Dataset:
        return read_timeseries_csv(url, self._label(), self.storage_options)


def read_attribute_files(urlpath: str | Sequence[str], source: str, site_id: str = "gauge_id",
                         storage_options: dict | None = None) -> pd.DataFrame:
    """Caravan attribute CSVs → one table: rows of the same kind (``attributes_other_*``) are
    stacked across Caravan sources, different kinds are joined on the gauge id."""
    kinds = read_attribute_kinds(urlpath, source, site_id, storage_options)
    return join_on_site([t for _, t in kinds], site_id, source, [label for label, _ in kinds])


def read_attribute_kinds(urlpath: str | Sequence[str], source: str, site_id: str = "gauge_id",
                         storage_options: dict | None = None) -> list[tuple[str, pd.DataFrame]]:
    """``(label, table indexed by gauge id)`` per kind, unjoined. Every file's ids are read as text
    and stripped (never as numbers, which would drop leading zeros), so all kinds key alike."""
    kinds: dict[str, list[pd.DataFrame]] = {}
    for url in expand_files(urlpath, source, storage_options):
        match = _KIND.match(os.path.basename(url))
        kind = match.group("kind") if match else os.path.basename(url)
        table = pd.read_csv(io.StringIO(_read_text(url, storage_options)), dtype={site_id: str})
        if site_id not in table.columns:
            raise StefaLandError(f"source {source}: file {url} has no site id column {site_id!r}")
        table[site_id] = table[site_id].astype(str).str.strip()
        kinds.setdefault(kind, []).append(table)
    indexed: list[tuple[str, pd.DataFrame]] = []
    for kind, tables in kinds.items():
        stacked = pd.concat(tables, ignore_index=True)
        duplicated = stacked[site_id][stacked[site_id].duplicated()]
        if not duplicated.empty:
            raise StefaLandError(f"source {source}: duplicated site id {duplicated.iloc[0]} in the {kind} tables")
        indexed.append((f"the {kind} tables", stacked.set_index(site_id)))
    return indexed


class CaravanAttributesSource(SiteTableSource):
    """Caravan attribute tables (any kinds, any sources) → DataFrame, one row per gauge."""

    name = "stefaland_caravan_attributes"

    def _read_table(self, label: str) -> pd.DataFrame:
        kinds = read_attribute_kinds(self.urlpath, label, self.site_id, self.storage_options)
        self._keys = [TableKeys(kind, t.index, tuple(map(str, t.columns))) for kind, t in kinds]
        return join_on_site([t for _, t in kinds], self.site_id, label, [kind for kind, _ in kinds])


# StefaLand list prefix → Caravan sources that may hold the same gauge, and how the id is written there.
_STRIP_ZEROS = "strip_zeros"
_ANY_SUFFIX = "any_letter_suffix"
LIST_PREFIXES: dict[str, list[tuple[str, str]]] = {
    "USGS": [("camels", ""), ("hysets", "")],
    "Canada": [("hysets", "")],
    "GRDC": [("GRDC", "")],
    "Brazil": [("camelsbr", "")],
    "Chile": [("camelscl", _STRIP_ZEROS)],
    "Australia": [("camelsaus", _ANY_SUFFIX)],
}


def match_basin_ids(ids: Iterable[str], caravan_ids: Iterable[str]) -> dict[str, str]:
    """StefaLand list id → Caravan id, for the ids a Caravan source holds.

    Rules (from the two id schemes): ``USGS_x`` → ``camels_x`` else ``hysets_x``; ``Canada_x`` →
    ``hysets_x``; ``GRDC_x`` → ``GRDC_x``; ``Brazil_x`` → ``camelsbr_x``; ``Chile_x`` →
    ``camelscl_<x without leading zeros>``; ``Australia_x`` → ``camelsaus_x`` plus the station's
    letter suffix (``102101A``). ``EWA_`` (European Water Archive) and malformed ids have no rule
    and stay unmatched.
    """
    known = set(caravan_ids)
    australian: dict[str, list[str]] = {}
    for cid in known:
        if cid.startswith("camelsaus_"):
            australian.setdefault(cid[len("camelsaus_"):].rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), []).append(cid)
    matched: dict[str, str] = {}
    for list_id in ids:
        prefix, _, number = str(list_id).strip().partition("_")
        for caravan_source, rule in LIST_PREFIXES.get(prefix, []):
            if not number:
                break
            if rule == _ANY_SUFFIX:
                candidates = sorted(australian.get(number, []))
                if len(candidates) == 1:
                    matched[list_id] = candidates[0]
                    break
                continue
            key = (number.lstrip("0") or "0") if rule == _STRIP_ZEROS else number
            candidate = f"{caravan_source}_{key}"
            if candidate in known:
                matched[list_id] = candidate
                break
    return matched
