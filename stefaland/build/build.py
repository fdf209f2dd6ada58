"""``stefaland data build``: every source of a catalog → one harmonised, sharded zarr store.

The order matters for trust and for resumption: check the catalog and the site table, settle the
sites and the time axis, write the skeleton with the static block, then write shard after shard
(each one recorded in the build state), and flip the completeness flag only at the very end.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from .. import __version__
from ..catalog import CatalogSpec, SourceSpec, load_catalog
from ..errors import StefaLandError
from ..progress import ProgressBoard
from ..store.layout import COMPLETE_ATTR
from .harmonise import harmonise, refuse_empty_sites, store_unit
from .readers import SourceReader
from .sites import load_sites
from .state import BuildState, RunningMoments
from .timeaxis import record_missing, report_missing, resolve_time
from .writer import BlockLayout, create_skeleton, finalise, open_group, write_shard

log = logging.getLogger("stefaland.build")

DEFAULT_SHARD_SIZE = 128


@dataclass
class BuildSummary:
    store: str
    n_sites: int
    n_time: int
    n_shards: int
    shards_written: int
    dynamic: list[str]
    target: list[str]
    static: list[str]
    up_to_date: bool = False


def _layout(name: str, dim: str, specs: list[SourceSpec]) -> BlockLayout:
    variables = [(s, v) for s in specs for v in s.variables]
    return BlockLayout(
        name=name,
        dim=dim,
        variables=[v.name for _, v in variables],
        units=[store_unit(v, s.name) for s, v in variables],
        groups=[v.group for _, v in variables],
        descriptions=[v.description for _, v in variables],
        never_mask=[v.never_mask for _, v in variables],
    )


def _fingerprint(catalog: CatalogSpec, sources: list[SourceSpec], shard_size: int, time: pd.DatetimeIndex) -> str:
    key = json.dumps([catalog.sha256, [s.name for s in sources], shard_size, str(time[0]), str(time[-1])])
    return hashlib.sha256(key.encode()).hexdigest()


def _complete_store_fingerprint(out: str) -> str | None:
    """The build fingerprint of a complete store at ``out``; None when there is none (or it is unreadable)."""
    from ..store.reader import _open_zarr

    try:
        attrs = _open_zarr(out).attrs
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not a complete store"
        return None
    return attrs.get("provenance", {}).get("fingerprint") if attrs.get(COMPLETE_ATTR) is True else None


def build_store(
    catalog_url: str,
    out: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    sources: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    quiet: bool = False,
    force: bool = False,
    scheduler: str | None = None,
) -> BuildSummary:
    """Build (or resume, or confirm up to date) the store at ``out`` from ``catalog_url``.

    Gridded sources are extracted by dask on ``scheduler`` ("local": a LocalCluster sized to this
    machine; or the address of an existing dask scheduler); other sources need no cluster.
    """
    catalog = load_catalog(catalog_url)
    if any(s.gridded is not None for s in catalog.select(sources)) or scheduler:
        from ..gridded.scheduler import dask_client

        with dask_client(scheduler or "local"):
            return _build(catalog, out, shard_size, sources, start, end, quiet, force)
    return _build(catalog, out, shard_size, sources, start, end, quiet, force)


def _build(catalog: CatalogSpec, out: str, shard_size: int, sources: list[str] | None, start: str | None,
           end: str | None, quiet: bool, force: bool) -> BuildSummary:
    if shard_size < 1:
        raise StefaLandError(f"shard size must be at least 1 (got {shard_size})")
    selected = catalog.select(sources)
    by_role = {role: [s for s in selected if s.role == role] for role in ("dynamic", "target", "static")}
    if not by_role["dynamic"]:
        raise StefaLandError(f"catalog {catalog.url}: no source with metadata.role: dynamic selected")
    sites = load_sites(catalog)
    readers = {s.name: SourceReader(catalog, s, sites, shard_size) for s in selected}
    keep = pd.Index(sites.index)
    for spec in by_role["dynamic"]:
        available = readers[spec.name].site_ids()
        dropped = keep.difference(pd.Index(sorted(available)))
        if len(dropped):
            log.info("source %s has no data for %d of the %d sites; they are left out", spec.name, len(dropped), len(keep))
        keep = keep[keep.isin(list(available))]
    if len(keep) == 0:
        raise StefaLandError(f"catalog {catalog.url}: no site is in both the site table and every dynamic source")
    sites = sites.loc[keep]
    site_ids = np.asarray(sites.index, dtype=object)
    for reader in readers.values():
        reader.sites = sites  # gridded sources extract exactly the store's sites, in its order
    time = resolve_time(catalog.url, start, end, (catalog.start, catalog.end),
                        [readers[s.name] for s in by_role["dynamic"]], [str(s) for s in site_ids])

    fingerprint = _fingerprint(catalog, selected, shard_size, time)
    state = BuildState.load(out)
    if state is None and not force and _complete_store_fingerprint(out) == fingerprint:
        log.info("%s is up to date (same catalog and options)", out)
        return BuildSummary(out, len(sites), len(time), 0, 0, [], [], [], up_to_date=True)
    resuming = state is not None and state.fingerprint == fingerprint and not force

    layouts = {
        "dynamic": _layout("dynamic", "dvar", by_role["dynamic"]),
        "target": _layout("target", "tvar", by_role["target"]),
        "static": _layout("static", "svar", by_role["static"]),
    }
    blocks = [b for b in layouts.values() if b.variables]
    slices = [slice(a, min(a + shard_size, len(sites))) for a in range(0, len(sites), shard_size)]

    with ProgressBoard(quiet) as board:
        static_values, areas = _static_block(by_role["static"], readers, site_ids, layouts["static"], board)
        if not resuming:
            provenance = {
                "catalog": catalog.url,
                "catalog_sha256": catalog.sha256,
                "dataset": catalog.dataset,
                "sources": [s.name for s in selected],
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "stefaland_version": __version__,
                "start": str(time[0].date()),
                "end": str(time[-1].date()),
                "fingerprint": fingerprint,
            }
            log.info("creating %s: %d sites × %d days, %d shards", out, len(sites), len(time), len(slices))
            create_skeleton(out, sites, time, blocks, static_values, shard_size, provenance)
            state = BuildState(fingerprint)
            state.save(out)
        else:
            log.info("resuming %s: %d of %d shards already written", out, len(state.done), len(slices))
        assert state is not None
        group = open_group(out)
        time_specs = by_role["dynamic"] + by_role["target"]
        for spec in time_specs:
            board.add(f"read {spec.name}", len(slices), completed=len(state.done))
        board.add("write shards", len(slices), completed=len(state.done))
        written = 0
        for index, rows in enumerate(slices):
            if index in state.done:
                continue
            shard_sites = site_ids[rows]
            moments: dict[str, RunningMoments] = {}
            for block_name in ("dynamic", "target"):
                layout = layouts[block_name]
                if not layout.variables:
                    continue
                parts: dict[str, np.ndarray] = {}
                for spec in by_role[block_name]:
                    raw = readers[spec.name].read(list(shard_sites), time)
                    harmonised = harmonise(spec, raw, {k: v[rows] for k, v in areas.items()})
                    refuse_empty_sites(spec, shard_sites, harmonised, fatal=block_name == "dynamic")
                    parts.update(harmonised)
                    board.advance(f"read {spec.name}")
                stacked = np.stack([parts[v] for v in layout.variables], axis=-1)
                write_shard(group, block_name, rows, stacked)
                if block_name == "dynamic":
                    record_missing(group, [str(s) for s in shard_sites], stacked)
                moments[block_name] = RunningMoments.of(stacked)
            state.done[index] = moments
            state.save(out)
            written += 1
            board.advance("write shards")

    statistics = _statistics(state, layouts, static_values)
    report_missing(group, len(time))
    finalise(group, statistics)
    BuildState.clear(out)
    log.info("store %s complete: %d sites, %d days", out, len(sites), len(time))
    return BuildSummary(out, len(sites), len(time), len(slices), written,
                        layouts["dynamic"].variables, layouts["target"].variables, layouts["static"].variables)


def _static_block(specs: list[SourceSpec], readers: dict[str, SourceReader], site_ids: np.ndarray,
                  layout: BlockLayout, board: ProgressBoard) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All static attributes for all sites (small: sites × attributes) in canonical units."""
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        board.add(f"read {spec.name}", 1)
        raw = readers[spec.name].read(list(site_ids), None)
        columns.update(harmonise(spec, raw))
        board.advance(f"read {spec.name}")
    values = np.stack([columns[v] for v in layout.variables], axis=-1) if layout.variables else np.zeros((len(site_ids), 0), np.float32)
    areas = {name: columns[name].astype(np.float64) for name, unit in zip(layout.variables, layout.units) if unit == "km2"}
    return values, areas


def _statistics(state: BuildState, layouts: dict[str, BlockLayout], static_values: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    statistics: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for block in ("dynamic", "target"):
        if not layouts[block].variables:
            continue
        merged: RunningMoments | None = None
        for index in sorted(state.done):
            part = state.done[index][block]
            merged = part if merged is None else merged.merge(part)
        assert merged is not None
        statistics[block] = merged.mean_std()
    if layouts["static"].variables:
        statistics["static"] = RunningMoments.of(static_values).mean_std()
    return statistics
