"""The store's time axis: the union of the dynamic records, and a per-site count of the days missing.

docs/DESIGN.md promises that a store spans the union of its dynamic sources. Taking the span of
whichever site happens to be first loses data silently: on the real CAMELS sample, basin 01022500
has forcings from 1980 but was stored from 1993, because basin 01013500 (sorted first) starts then.
So, unless the user gives a window, every dynamic source is asked for the earliest
and latest date it holds over *all* the store's sites; a site is NaN wherever it has no record, and
the number of such days is reported per site (log, and the store attribute ``missing_days``), so a
short record is visible instead of hidden. A catalog's declared window clips that union.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..catalog.readers import SourceReader
from ..errors import StefaLandError

log = logging.getLogger("stefaland.assemble")

MISSING_DAYS_ATTR = "missing_days"  # {site id: days of the time axis with no dynamic value at all}


def union_bounds(readers: Sequence[SourceReader], sites: Sequence[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Earliest and latest date any dynamic source holds for any of ``sites``."""
    starts, ends = [], []
    for reader in readers:
        bounds = reader.time_bounds(list(sites))
        if bounds is None:
            continue
        log.info("source %s holds %s .. %s", reader.spec.name, bounds[0].date(), bounds[1].date())
        starts.append(bounds[0])
        ends.append(bounds[1])
    if not starts:
        raise StefaLandError("no dynamic source has a time axis; give --start and --end")
    return min(starts), max(ends)


def resolve_time(catalog_url: str, start: str | None, end: str | None, declared: tuple[str | None, str | None],
                 readers: Sequence[SourceReader], sites: Sequence[str]) -> pd.DatetimeIndex:
    """Daily axis from ``--start/--end``, else the union of records within the catalog's window.

    A catalog's ``start``/``end`` say which period the data set is about (global.yaml: 1980-2019),
    not that the files hold all of it: a user with five years of MSWX, or the miniature products,
    gets a store of those five years, not 40 years of NaN.
    """
    if not (start and end) and readers:
        first, last = union_bounds(readers, sites)
        if declared[0]:
            first = max(first, pd.Timestamp(declared[0]))
        if declared[1]:
            last = min(last, pd.Timestamp(declared[1]))
        start, end = start or str(first.date()), end or str(last.date())
        log.info("time axis: union of the dynamic sources over %d sites%s: %s .. %s", len(sites),
                 " within the catalog's window" if any(declared) else "", start, end)
    start, end = start or declared[0], end or declared[1]
    if not (start and end):
        raise StefaLandError(f"catalog {catalog_url}: no dynamic source; give --start and --end")
    try:
        time = pd.date_range(start, end, freq="D")
    except (ValueError, TypeError) as exc:
        raise StefaLandError(f"catalog {catalog_url}: unparseable start/end {start!r}..{end!r}") from exc
    if len(time) == 0:
        raise StefaLandError(f"catalog {catalog_url}: empty time window {start}..{end}")
    return time


def missing_days(dynamic: np.ndarray) -> np.ndarray:
    """Per site, the days of a (site, time, variable) block holding no finite value at all."""
    return (~np.isfinite(dynamic).any(axis=-1)).sum(axis=1).astype(np.int64)


def record_missing(group, sites: Sequence[str], dynamic: np.ndarray) -> None:
    """Add one shard's counts to the store attribute (idempotent: a resumed shard overwrites its own)."""
    counts = dict(group.attrs.get(MISSING_DAYS_ATTR, {}))
    counts.update({str(s): int(n) for s, n in zip(sites, missing_days(dynamic))})
    group.attrs.update({MISSING_DAYS_ATTR: counts})


def report_missing(group, n_time: int) -> dict[str, int]:
    """Log the per-site counts (a summary at INFO, every site at DEBUG); return them."""
    counts = {s: int(n) for s, n in dict(group.attrs.get(MISSING_DAYS_ATTR, {})).items()}
    short = sorted(((n, s) for s, n in counts.items() if n), reverse=True)
    for n, site in short:
        log.debug("site %s: %d of %d days have no dynamic value (NaN in the store)", site, n, n_time)
    if short:
        worst = ", ".join(f"{s} {n}" for n, s in short[:10])
        log.info("%d of %d sites miss days of the %d-day axis (NaN; store attribute %s); most: %s",
                 len(short), len(counts), n_time, MISSING_DAYS_ATTR, worst)
    return counts
