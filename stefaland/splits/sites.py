"""Load the sites a split is made for: CSV/TXT tables (local or s3://) or a ``data build`` store.

Tables come in many dialects (CAMELS ``;``-separated ``gauge_id``/``gauge_lat``, Caravan
``gauge_id``/``gauge_lat``, AfSP ``SOURCEID``/``LATWGS84``...). Rather than asking the user to
name columns, the usual names are recognised; several tables are combined by site id (rows of
different tables about the same site are merged, so ``camels_topo.txt`` + ``camels_name.txt``
gives coordinates and HUC-02 together). The result is a DataFrame indexed by site id (str) with
``lat``, ``lon`` and, where known, ``region`` / ``huc_02``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from stefaland import fileio
from stefaland.errors import StefaLandError

log = logging.getLogger("stefaland.splits")

ID_COLUMNS = ("site", "site_id", "gauge_id", "basin_id", "station_id", "station", "sourceid",
              "gage", "id")
LAT_COLUMNS = ("lat", "latitude", "gauge_lat", "latwgs84", "lat_gage")
LON_COLUMNS = ("lon", "longitude", "long", "gauge_lon", "lonwgs84", "lng", "long_gage")
EXTRA_COLUMNS = ("region", "huc_02")


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def is_store(url: str) -> bool:
    """A zarr group (v3 ``zarr.json`` or v2 ``.zgroup``) rather than a table file."""
    return any(fileio.exists(fileio.join(url, name)) for name in ("zarr.json", ".zgroup"))


def read_table(url: str, id_column: str | None = None) -> pd.DataFrame:
    """One site table; separator sniffed, ids kept as strings (CAMELS ids have leading zeros)."""
    raw = fileio.read_bytes(url)
    try:
        sample = raw[:8192].decode("utf-8", errors="replace")
        separator = csv.Sniffer().sniff(sample.splitlines()[0], delimiters=",;\t|").delimiter
    except (csv.Error, IndexError):
        separator = ","
    try:
        frame = pd.read_csv(io.BytesIO(raw), sep=separator, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise StefaLandError(f"{url}: not a readable site table ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    site = id_column if id_column in frame.columns else _pick(frame.columns, ID_COLUMNS)
    if site is None:
        raise StefaLandError(
            f"{url}: no site id column (looked for {', '.join(ID_COLUMNS)}; columns: "
            f"{', '.join(frame.columns[:8])})"
        )
    out = pd.DataFrame({"site": frame[site].str.strip()})
    for name, candidates in (("lat", LAT_COLUMNS), ("lon", LON_COLUMNS)):
        column = _pick(frame.columns, candidates)
        if column is not None:
            out[name] = pd.to_numeric(frame[column], errors="coerce")
    for name in EXTRA_COLUMNS:
        column = _pick(frame.columns, (name,))
        if column is not None:
            out[name] = frame[column].str.strip()
    if out["site"].isna().any() or (out["site"] == "").any():
        raise StefaLandError(f"{url}: a row has an empty site id in column {site}")
    return out


def read_store_sites(url: str) -> pd.DataFrame:
    """Sites of a store written by ``data build`` (coords ``site``, ``lat``, ``lon``, ``region``);
    :func:`stefaland.store.open_store` refuses an incomplete one."""
    from stefaland.store import open_store

    dataset = open_store(url)
    if "site" not in dataset.coords:
        raise StefaLandError(f"{url}: store has no 'site' coordinate")
    out = pd.DataFrame({"site": dataset["site"].values.astype(str)})
    for name in ("lat", "lon"):
        if name in dataset.coords:
            out[name] = dataset[name].values.astype(float)
    for name in EXTRA_COLUMNS:
        if name in dataset.coords:
            out[name] = dataset[name].values.astype(str)
    return out


def expand(urls: Sequence[str]) -> list[str]:
    """Expand glob patterns (``attributes/*/attributes_other_*.csv``) locally or on S3."""
    result: list[str] = []
    for url in urls:
        if any(ch in url for ch in "*?["):
            fs, path = fileio.filesystem(url)
            matches = sorted(fs.glob(path))
            if not matches:
                raise StefaLandError(f"{url}: no file matches")
            protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
            result.extend(protocol + m if protocol and not m.startswith(protocol) else m
                          for m in matches)
        else:
            result.append(url)
    return result


def load_site_tables(urls: Sequence[str], id_column: str | None = None) -> pd.DataFrame:
    """All sites of the given tables/stores, one row per site id, indexed by site.

    A CAMELS attribute folder (holding ``camels_topo.txt`` and ``camels_name.txt``) counts as
    those two tables.
    """
    frames = []
    for url in expand(urls):
        if fileio.exists(fileio.join(url, "camels_name.txt")):
            frames += [read_table(fileio.join(url, name), id_column)
                       for name in ("camels_topo.txt", "camels_name.txt")]
        elif is_store(url):
            frames.append(read_store_sites(url))
        elif not fileio.exists(url):
            raise StefaLandError(f"{url}: site table or store not found")
        else:
            frames.append(read_table(url, id_column))
    table = pd.concat(frames, ignore_index=True)
    # rows about the same site from different tables complete each other
    table = table.groupby("site", sort=False).first()
    table.index = table.index.astype(str)
    log.info("%d sites from %s", len(table), ", ".join(map(str, urls)))
    return table


def read_site_list(url: str) -> list[str]:
    """A plain list of site ids, one per line (e.g. ``531_basin_list.txt``)."""
    text = fileio.read_bytes(url).decode()
    ids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not ids:
        raise StefaLandError(f"{url}: empty site list")
    return ids


def restrict(table: pd.DataFrame, ids: Sequence[str], source: str) -> tuple[pd.DataFrame, list[str]]:
    """Keep the sites of ``ids`` that the table has (in table order), and return the listed ids it
    lacks: a basin list is often longer than a store (a 531-basin list, an 18-basin sample). Only a
    list sharing no site with the table is an error."""
    wanted = pd.Index(list(dict.fromkeys(str(i) for i in ids)))
    missing = [str(i) for i in wanted.difference(table.index, sort=False)]
    kept = table.loc[table.index[np.isin(table.index, wanted)]]
    if kept.empty:
        raise StefaLandError(f"none of the {len(wanted)} sites listed in {source} is in the site table "
                             f"(first listed: {wanted[0] if len(wanted) else 'none'}; first in the table: "
                             f"{table.index[0] if len(table) else 'none'})")
    return kept, missing
