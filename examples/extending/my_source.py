"""Template: an intake driver for a new file format (here station records in JSON Lines).

Copy this file, rename the class and its ``name``, and change :func:`read_jsonl`. A driver turns one
format into what ``stefaland data build`` reads: an ``xarray.Dataset`` with dims ``(site, time)``
(a ``site`` coordinate of string ids, a daily ``time`` coordinate) holding the file's own variable
names in the file's own units. Everything after that -- choosing variables, converting units,
discharge to depth, range checks, aligning time, sharding, statistics -- is the build's job and is
declared in the catalog (examples/extending/my_catalog.yaml), so a driver never converts anything.

The format: one JSON object per line, one line per station and day::

    {"station": "ST01", "date": "2001-03-01", "precip": 2.4, "tair": 41.5, "discharge": 12.0}

``null`` or an absent key is a missing value. A driver is the only code that sees the raw bytes,
so it must say exactly where a file is wrong: every problem is a
:class:`~stefaland.errors.StefaLandError` with one line naming the file and line number.

Register the driver under ``name`` through intake's entry points, in your package's
pyproject.toml (as StefaLand registers its own)::

    [project.entry-points."intake.drivers"]
    my_jsonl = "my_package.my_source:JsonLinesStationSource"

or, for a test or a notebook, at run time with ``intake.register_driver("my_jsonl", JsonLinesStationSource)``.
Catalogs name drivers only by their registered name: a dotted ``driver:`` path or ``plugins:`` is
refused, because a catalog is data and must not import code.

Docs: docs/EXTENDING.md ("Adding a data source"). Test: tests/test_extending.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from intake.source.base import DataSource, Schema

from stefaland.errors import StefaLandError
from stefaland.fileio import filesystem
from stefaland.sources.camels import expand_files


def read_jsonl(url: str, source: str, site_field: str = "station", date_field: str = "date",
               storage_options: dict | None = None) -> pd.DataFrame:
    """One JSON Lines file -> long table (site, time, one float column per variable).

    Parsed record by record rather than with ``pandas.read_json(lines=True)``, because that reports
    neither the line of a broken record nor a string where a number belongs -- it would turn
    ``"12,5"`` into an object column the build then refuses far from its cause."""
    fs, path = filesystem(url, storage_options)  # local paths and s3:// URLs alike
    with fs.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    rows: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"source {source}: file {url} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StefaLandError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or site_field not in record or date_field not in record:
            raise StefaLandError(f"{where}: a record needs {site_field!r} and {date_field!r}")
        row = {"site": str(record.pop(site_field)).strip()}
        try:
            row["time"] = pd.Timestamp(record.pop(date_field))
        except ValueError:
            raise StefaLandError(f"{where}: unparseable date") from None
        for key, value in record.items():
            if value is None:
                value = math.nan
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StefaLandError(f"{where}: {key} is not a number ({value!r})")
            row[key] = float(value)
        rows.append(row)
    if not rows:
        raise StefaLandError(f"source {source}: file {url} holds no records")
    return pd.DataFrame(rows)


class JsonLinesStationSource(DataSource):
    """JSON Lines station records (one or more files, globs allowed) -> Dataset(site, time)."""

    name = "my_jsonl"  # the name catalogs use in ``driver:``; must match the registration
    container = "xarray"
    version = "1"
    partition_access = False

    def __init__(self, urlpath: str | list[str], site_field: str = "station", date_field: str = "date",
                 storage_options: dict | None = None, metadata: dict | None = None) -> None:
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = urlpath  # the build fingerprints the files named here, so an edit forces a rebuild
        self.site_field = site_field
        self.date_field = date_field
        self._dataset: xr.Dataset | None = None

    def _label(self) -> str:
        """The catalog's source name (intake passes it in the metadata), for error messages."""
        return (self.metadata or {}).get("source_name", self.name)

    def read(self) -> xr.Dataset:
        """Every file, read once and cached: the build asks for the sites, the time span and then
        each shard, and a JSON Lines file cannot be read one station at a time."""
        if self._dataset is None:
            label = self._label()
            files = expand_files(self.urlpath, label, self.storage_options)
            table = pd.concat([read_jsonl(url, label, self.site_field, self.date_field, self.storage_options)
                               for url in files], ignore_index=True)
            repeated = table.duplicated(["site", "time"])
            if repeated.any():
                row = table[repeated].iloc[0]
                raise StefaLandError(f"source {label}: station {row['site']} has two records for {row['time']:%Y-%m-%d}")
            dataset = table.set_index(["site", "time"]).sort_index().to_xarray()  # absent (site, day) -> NaN
            self._dataset = dataset.assign_coords(site=np.asarray(dataset["site"].values, dtype=object))
        return self._dataset

    def to_dask(self) -> xr.Dataset:
        """What the build calls. Small files need no laziness; a large format would return a
        dask-backed Dataset here (or offer ``read_sites(sites, time)``, as the per-site CAMELS
        drivers do, so that a shard reads only its own stations)."""
        return self.read()

    def site_ids(self) -> Sequence[str]:
        """Optional: the build uses it to match sites against the site table without loading values."""
        return [str(s) for s in self.read()["site"].values]

    def _get_schema(self) -> Schema:
        dataset = self.read()
        return Schema(datashape=None, dtype=None, shape=(dataset.sizes["site"], dataset.sizes["time"]),
                      npartitions=1, extra_metadata={"variables": list(dataset.data_vars)})

    def _close(self) -> None:
        self._dataset = None
