"""Intake drivers for ISMN in-situ soil moisture (paper Table C5), read with the ``ismn`` package.

ISMN distributes hourly station records in two native formats (header+values, CEOP-separate),
zipped or unzipped, with quality flags and per-station static metadata (HWSD texture, ESA-CCI land
cover, Köppen–Geiger class). The ``ismn`` package already parses every variant; what StefaLand adds
is the choice a land-surface model needs: one surface layer, only trustworthy readings, daily means,
and sites keyed ``<network>_<station>`` so forcings and statics can join on the same id.

The ``ismn`` reader writes a metadata CSV (and, for zip archives, extracted files) beside its
input unless told otherwise; data folders are often read-only (and may be remote), so everything
it writes goes into a cache folder keyed by the archive's path, size and modification time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from intake.source.base import DataSource, Schema

from ..errors import StefaLandError
from ..fileio import filesystem, is_remote

log = logging.getLogger("stefaland.sources.ismn")

VARIABLE = "soil_moisture"
DEFAULT_GOOD_FLAGS = ("G",)
CACHE_ENV = "STEFALAND_ISMN_CACHE"  # where the ismn reader's metadata and extracted files go
# ISMN static metadata keys → sites-table columns (numbers only; the Köppen class also as a string)
STATIC_KEYS = {
    "sand_fraction": "sand_fraction",
    "silt_fraction": "silt_fraction",
    "clay_fraction": "clay_fraction",
    "organic_carbon": "organic_carbon",
    "saturation": "saturation",
    "lc_2010": "lc_2010",
    "elevation": "elevation",
}


@dataclass(frozen=True)
class IsmnSelection:
    """Which sensors count as 'surface soil moisture' and which readings are trusted."""

    depth_from: float = 0.0
    depth_to: float = 0.10
    only_depth_from: bool = False  # cosmic-ray probes: judge a sensor by its top depth only
    good_flags: tuple[str, ...] = DEFAULT_GOOD_FLAGS
    min_hours: int = 1  # fewest accepted readings that make a daily mean


def _cache_key(urlpath: str, storage_options: dict | None, source: str) -> str:
    fs, path = filesystem(urlpath, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise StefaLandError(f"source {source}: ISMN archive not found: {urlpath}") from None
    stamp = f"{urlpath}|{info.get('size')}|{info.get('mtime') or info.get('LastModified') or info.get('ETag')}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _local_copy(urlpath: str, cache: str, storage_options: dict | None) -> str:
    """The ``ismn`` reader needs a local path: fetch a remote archive or folder once into the cache."""
    if not is_remote(urlpath):
        return urlpath
    fs, path = filesystem(urlpath, storage_options)
    target = os.path.join(cache, "data", os.path.basename(path.rstrip("/")))
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = target + ".partial"
        fs.get(path, partial, recursive=fs.isdir(path))
        os.replace(partial, target)
    return target


def open_interface(urlpath: str, network: str | list[str] | None = None, cache_dir: str | None = None,
                   storage_options: dict | None = None, source: str = "ismn") -> Any:
    """An ``ismn.interface.ISMN_Interface`` whose metadata and temporary files live in a cache."""
    from ismn.interface import ISMN_Interface

    root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "stefaland-ismn")
    cache = os.path.join(root, _cache_key(urlpath, storage_options, source))
    os.makedirs(cache, exist_ok=True)
    local = _local_copy(urlpath, cache, storage_options)
    chatter = io.StringIO()  # ismn prints progress to stdout/stderr; the CLI keeps its output one line
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            interface = ISMN_Interface(local, meta_path=os.path.join(cache, "meta"), network=network,
                                       temp_root=cache)
    except StefaLandError:
        raise
    except Exception as exc:  # noqa: BLE001 - ismn raises many kinds; the user needs one line
        raise StefaLandError(f"source {source}: ismn cannot read {urlpath}: {exc}") from exc
    log.debug("ismn: %s", chatter.getvalue().strip().replace("\n", " | "))
    return interface


def site_id(network: str, station: str) -> str:
    """ISMN station names repeat across networks (e.g. 'A1'), so the network is part of the id."""
    return f"{network}_{station}"


def surface_sensors(interface: Any, selection: IsmnSelection) -> dict[str, tuple[Any, Any, list[Any]]]:
    """site id → (network, station, soil-moisture sensors inside the selected layer)."""
    found: dict[str, tuple[Any, Any, list[Any]]] = {}
    for network in interface.collection.iter_networks():
        for station in network.iter_stations():
            sensors = list(station.iter_sensors(
                variable=VARIABLE, depth=[selection.depth_from, selection.depth_to],
                check_only_sensor_depth_from=selection.only_depth_from))
            if sensors:
                found[site_id(network.name, station.name)] = (network, station, sensors)
    return found


def _depth_hint(interface: Any, selection: IsmnSelection) -> str:
    """What the archive's sensors span, so an empty layer says how to widen it (cosmic-ray probes
    integrate 0-0.2 m and fall outside the default 0-0.10 m unless judged by their top depth)."""
    spans = sorted({(float(s.depth.start), float(s.depth.end))
                    for network in interface.collection.iter_networks() for station in network.iter_stations()
                    for s in station.iter_sensors(variable=VARIABLE)})
    if not spans:
        return ""
    shown = ", ".join(f"{a:g}-{b:g} m" for a, b in spans[:5]) + (", ..." if len(spans) > 5 else "")
    widen = "" if selection.only_depth_from else "only_depth_from: true (ISMN_ONLY_DEPTH_FROM=true for catalog/ismn.yaml) or "
    return f" (its {VARIABLE} sensors span {shown}; set {widen}the layer's depth_from/depth_to)"


def _accepted(flags: pd.Series, good: tuple[str, ...]) -> np.ndarray:
    """A reading counts when every one of its (comma-separated) ISMN flags is an accepted one."""
    allowed = set(good)
    text = flags.astype(str)
    verdict = {f: all(p.strip() in allowed for p in f.split(",")) for f in text.unique()}  # a few distinct codes
    return text.map(verdict).to_numpy(dtype=bool)


def daily_means(sensors: list[Any], selection: IsmnSelection, label: str) -> pd.Series:
    """Daily (UTC) mean of the accepted hourly readings of all sensors in the layer."""
    pieces = []
    for sensor in sensors:
        try:
            data = sensor.read_data()
        except Exception as exc:  # noqa: BLE001
            raise StefaLandError(f"source {label}: ismn cannot read sensor {sensor.name}: {exc}") from exc
        if VARIABLE not in data.columns:
            raise StefaLandError(f"source {label}: sensor {sensor.name} has no {VARIABLE} column")
        keep = _accepted(data[f"{VARIABLE}_flag"], selection.good_flags) & data[VARIABLE].notna().to_numpy()
        pieces.append(data.loc[keep, VARIABLE].astype(np.float64))
    values = pd.concat(pieces) if pieces else pd.Series(dtype=np.float64)
    if values.empty:
        return pd.Series(dtype=np.float64, index=pd.DatetimeIndex([], name="time"))
    grouped = values.groupby(pd.DatetimeIndex(values.index).floor("D"))
    daily = grouped.mean()
    daily[grouped.count() < selection.min_hours] = np.nan
    daily.index = pd.DatetimeIndex(daily.index, name="time")
    return daily


def _static_value(metadata: Any, key: str) -> Any:
    """The shallowest entry of an ISMN metadata variable (HWSD gives 0-0.3 m and 0.3-1 m)."""
    entries = metadata.to_dict().get(key)
    if not entries:
        return np.nan
    entries = sorted(entries, key=lambda e: (e[1] is None, e[1] if e[1] is not None else 0.0))
    return entries[0][0]


def station_table(found: dict[str, tuple[Any, Any, list[Any]]]) -> pd.DataFrame:
    """One row per site: location, network, layer and the static variables ISMN carries."""
    from ismn.const import KOEPPENGEIGER

    classes = list(KOEPPENGEIGER)
    rows = []
    for site, (network, station, sensors) in sorted(found.items()):
        metadata = sensors[0].metadata
        row: dict[str, Any] = {
            "site": site, "network": network.name, "station": station.name,
            "lat": float(station.lat), "lon": float(station.lon),
            "depth_from": min(float(s.depth.start) for s in sensors),
            "depth_to": max(float(s.depth.end) for s in sensors),
        }
        for key, column in STATIC_KEYS.items():
            value = pd.to_numeric(pd.Series([_static_value(metadata, key)]), errors="coerce").iloc[0]
            row[column] = float(value)
        climate = str(_static_value(metadata, "climate_KG"))
        row["climate_kg"] = climate if climate in classes else ""
        row["climate_kg_code"] = float(classes.index(climate)) if climate in classes else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _as_bool(value: bool | str) -> bool:
    """Catalog parameters arrive rendered as text ("False"), where ``bool("False")`` is True."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _as_flags(value: str | Sequence[str]) -> tuple[str, ...]:
    """Accepted ISMN flags as a list or as catalog text ``"G,U"``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    flags = tuple(str(f).strip() for f in items if str(f).strip())
    if not flags:
        raise StefaLandError("ISMN good_flags is empty: accept at least one flag (e.g. G)")
    return flags


class _IsmnBase(DataSource):
    """Opens the archive once and picks the surface-layer sensors of every station."""

    version = "1"
    partition_access = False

    def __init__(self, urlpath: str, depth_from: float = 0.0, depth_to: float = 0.10,
                 only_depth_from: bool = False, good_flags: Sequence[str] = DEFAULT_GOOD_FLAGS,
                 min_hours: int = 1, network: str | list[str] | None = None, cache_dir: str | None = None,
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = str(urlpath)
        self.network = network
        self.cache_dir = cache_dir
        if float(depth_from) > float(depth_to):
            raise StefaLandError(f"source {self._label()}: depth_from {depth_from} m is deeper than depth_to {depth_to} m")
        self.selection = IsmnSelection(float(depth_from), float(depth_to), _as_bool(only_depth_from),
                                       _as_flags(good_flags), int(min_hours))
        self._found: dict[str, tuple[Any, Any, list[Any]]] | None = None

    def _label(self) -> str:
        return str((self.metadata or {}).get("source_name", self.name))

    def stations(self) -> dict[str, tuple[Any, Any, list[Any]]]:
        if self._found is None:
            interface = open_interface(self.urlpath, self.network, self.cache_dir, self.storage_options, self._label())
            self._found = surface_sensors(interface, self.selection)
            if not self._found:
                raise StefaLandError(
                    f"source {self._label()}: no {VARIABLE} sensor between {self.selection.depth_from} and "
                    f"{self.selection.depth_to} m in {self.urlpath}{_depth_hint(interface, self.selection)}"
                )
        return self._found

    def site_ids(self) -> list[str]:
        return sorted(self.stations())

    def _close(self) -> None:
        self._found = None


class IsmnSoilMoistureSource(_IsmnBase):
    """Surface-layer daily mean soil moisture (m³/m³) → Dataset(site, time)."""

    name = "stefaland_ismn"
    container = "xarray"

    def _get_schema(self) -> Schema:
        sites = self.site_ids()
        return Schema(datashape=None, dtype=None, shape=(len(sites),), npartitions=len(sites),
                      extra_metadata={"sites": sites})

    def read_sites(self, sites: Sequence[str], time: pd.DatetimeIndex | None = None) -> xr.Dataset:
        """Daily means of ``sites`` on ``time`` if given; a site without a surface sensor is all NaN
        (an ungauged site for the target, not an error: the site table may come from elsewhere)."""
        found = self.stations()
        series = {s: daily_means(found[s][2], self.selection, self._label()) for s in sites if s in found}
        if time is None:
            present = [s.index for s in series.values() if len(s)]
            time = pd.DatetimeIndex(sorted(set().union(*present)), name="time") if present else pd.DatetimeIndex([], name="time")
        values = np.full((len(sites), len(time)), np.nan)
        for row, site in enumerate(sites):
            if site in series:
                values[row] = series[site].reindex(time).to_numpy(dtype=np.float64)
        return xr.Dataset(
            {VARIABLE: xr.DataArray(values, dims=("site", "time"), attrs={"units": "m3/m3"})},
            coords={"site": np.asarray(list(sites), dtype=object), "time": pd.DatetimeIndex(time)},
        )

    def read(self) -> xr.Dataset:
        return self.read_sites(self.site_ids())

    def to_dask(self) -> xr.Dataset:
        return self.read()


class IsmnSitesSource(_IsmnBase):
    """The stations with a surface sensor: site, network, lat, lon and ISMN's static metadata."""

    name = "stefaland_ismn_sites"
    container = "dataframe"

    def _get_schema(self) -> Schema:
        frame = self.read()
        return Schema(datashape=None, dtype=None, shape=frame.shape, npartitions=1, extra_metadata={})

    def read(self) -> pd.DataFrame:
        return station_table(self.stations())

    def to_dask(self) -> pd.DataFrame:
        return self.read()
