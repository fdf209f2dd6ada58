"""``stefaland data build``: every source of a catalog → one harmonised, sharded zarr store.

The order matters for trust and for resumption: claim ``--out`` (lock it; refuse what StefaLand did
not write), check the catalog and the site table, settle the sites and the time axis, write the
output marker and the skeleton with the static block, then write shard after shard (each one
recorded in the build state), write the integrity record and flip the completeness flag only at
the very end.

What an existing ``--out`` gets (the careful answer in every case, ``--force`` to override):

* not a StefaLand store (a file, a folder of other things, another kind of output): refused,
  even with ``--force``;
* an interrupted build with the same catalog, options and input files: resumed;
* an interrupted build whose catalog/options or any input file changed: refused, naming what
  changed (resuming would mix old and new shards); ``--force`` starts over;
* a complete store with the same catalog, options and inputs: "up to date", nothing written;
* a complete store whose catalog/options or inputs changed, or which is damaged: refused, naming
  the change — it may be what finished runs were trained on, so it is replaced only with ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time as clock
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from .. import __version__, fileio
from ..catalog import CatalogSpec, SourceSpec, load_catalog
from ..catalog.readers import SourceReader
from ..catalog.sites import load_catalog_sites
from ..errors import StefaLandError
from ..outputs import Claim, claim_output, read_marker
from ..progress import ProgressBoard
from ..store.integrity import RECORD_KEY, check_on_open
from ..store.layout import COMPLETE_ATTR
from .harmonise import harmonise, refuse_empty_sites, refuse_empty_static, store_unit
from .inputs import fingerprint_inputs, first_change
from .state import BuildState, RunningMoments
from .timeaxis import record_missing, report_missing, resolve_time
from .writer import BlockLayout, create_skeleton, finalise, open_group, write_shard

log = logging.getLogger("stefaland.assemble")

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


def _complete_store(out: str) -> dict | None:
    """The marker of a complete store at ``out`` (fingerprint, inputs, record); None if incomplete."""
    try:
        root = json.loads(fileio.read_bytes(fileio.join(out, "zarr.json")))
    except (StefaLandError, ValueError, OSError):
        return None
    if (root.get("attributes") or {}).get(COMPLETE_ATTR) is not True:
        return None
    return read_marker(out)


def _decide(out: str, claim: Claim, force: bool, fingerprint: str, inputs: dict[str, str]) -> tuple[str, BuildState | None]:
    """``("create" | "resume" | "up to date", state)`` for ``out`` by the rules of the module docstring."""
    state = BuildState.load(out) if claim.existed else None
    if not claim.existed or force:
        return "create", None
    if state is not None:
        if state.fingerprint != fingerprint:
            raise StefaLandError(f"{out}: holds an interrupted build with another catalog or other options; "
                                 "pass --force to start over")
        change = first_change(state.inputs, inputs)
        if change:
            raise StefaLandError(f"{out}: {change} since the interrupted build began; resuming would mix old and new "
                                 "shards — pass --force to start over")
        return "resume", state
    marker = _complete_store(out)
    if marker is None:
        return "create", None  # an interrupted skeleton: nothing to resume
    if marker.get("fingerprint") != fingerprint:
        raise StefaLandError(f"{out}: the complete store there was built from another catalog or other options; "
                             "pass --force to rebuild it (or choose another --out)")
    change = first_change(marker.get("inputs") or {}, inputs)
    if change:
        raise StefaLandError(f"{out}: {change} since the store was built, so it is not up to date; "
                             "pass --force to rebuild it")
    record = marker.get(RECORD_KEY)
    if not isinstance(record, dict):
        raise StefaLandError(f"{out}: the store's integrity record is missing; pass --force to rebuild it")
    try:
        check_on_open(out, record)
    except StefaLandError as exc:
        raise StefaLandError(f"{exc} — pass --force to rebuild it") from exc
    return "up to date", None


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
    machine; or the address of an existing dask scheduler; "sync": dask's synchronous scheduler in
    this process, no cluster); other sources need no cluster.
    """
    catalog = load_catalog(catalog_url)
    catalog.refuse_unset([catalog.sites_source, *(s.name for s in catalog.select(sources))])
    if scheduler in ("sync", "synchronous"):
        import dask

        with dask.config.set(scheduler="synchronous"):
            return _build(catalog, out, shard_size, sources, start, end, quiet, force)
    if any(s.gridded is not None for s in catalog.select(sources)) or scheduler:
        from ..gridded.scheduler import dask_client

        with dask_client(scheduler or "local"):
            return _build(catalog, out, shard_size, sources, start, end, quiet, force)
    return _build(catalog, out, shard_size, sources, start, end, quiet, force)


def _build(catalog: CatalogSpec, out: str, shard_size: int, sources: list[str] | None, start: str | None,
           end: str | None, quiet: bool, force: bool) -> BuildSummary:
    if shard_size < 1:
        raise StefaLandError(f"shard size must be at least 1 (got {shard_size})")
    out = str(out).rstrip("/") or str(out)
    with claim_output(out, "store", force=force, resumable=True) as claim:
        # a heartbeat every minute: a build killed elsewhere (a client pod on another node) can be
        # resumed by a new submission minutes later, not only after the default stale time
        claim.keep_alive()
        return _build_claimed(claim, catalog, out, shard_size, sources, start, end, quiet, force)


def _build_claimed(claim: Claim, catalog: CatalogSpec, out: str, shard_size: int, sources: list[str] | None,
                   start: str | None, end: str | None, quiet: bool, force: bool) -> BuildSummary:
    """The steps of a build, in the order of the module docstring, once ``out`` is claimed."""
    chosen = _choose(catalog, sources, shard_size, start, end)
    fingerprint = _fingerprint(catalog, chosen.selected, shard_size, chosen.time)
    inputs = fingerprint_inputs(catalog, chosen.selected)
    action, state = _decide(out, claim, force, fingerprint, inputs)
    if action == "up to date":
        log.info("%s is up to date (same catalog, options and input files)", out)
        return BuildSummary(out, len(chosen.sites), len(chosen.time), 0, 0, [], [], [], up_to_date=True)

    layouts = {
        "dynamic": _layout("dynamic", "dvar", chosen.by_role["dynamic"]),
        "target": _layout("target", "tvar", chosen.by_role["target"]),
        "static": _layout("static", "svar", chosen.by_role["static"]),
    }
    n_sites = len(chosen.sites)
    slices = [slice(a, min(a + shard_size, n_sites)) for a in range(0, n_sites, shard_size)]

    with ProgressBoard(quiet) as board:
        static_values, areas = _static_block(chosen.by_role["static"], chosen.readers, chosen.site_ids,
                                             layouts["static"], board)
        if action == "resume":
            assert state is not None
            log.info("resuming %s: %d of %d shards already written", out, len(state.done), len(slices))
        else:
            log.info("creating %s: %d sites × %d days, %d shards", out, n_sites, len(chosen.time), len(slices))
            state = _create(out, claim, catalog, chosen, layouts, static_values, shard_size, fingerprint, inputs)
        group = open_group(out, state.chunks)
        written = _write_shards(out, claim, group, state, chosen, layouts, slices, areas, board)

    _finish(out, claim, catalog, chosen, group, state, layouts, static_values, fingerprint)
    return BuildSummary(out, n_sites, len(chosen.time), len(slices), written,
                        layouts["dynamic"].variables, layouts["target"].variables, layouts["static"].variables)


@dataclass
class _Chosen:
    """What a build reads: the selected sources (and by role) with their readers, the sites, the days."""

    selected: list[SourceSpec]
    by_role: dict[str, list[SourceSpec]]
    readers: dict[str, SourceReader]
    sites: pd.DataFrame
    site_ids: np.ndarray
    time: pd.DatetimeIndex


def _choose(catalog: CatalogSpec, sources: list[str] | None, shard_size: int, start: str | None,
            end: str | None) -> _Chosen:
    """The selected sources, the sites every dynamic source has, and the store's time axis."""
    selected = catalog.select(sources)
    by_role = {role: [s for s in selected if s.role == role] for role in ("dynamic", "target", "static")}
    if not by_role["dynamic"]:
        raise StefaLandError(f"catalog {catalog.url}: no source with metadata.role: dynamic selected")
    sites = load_catalog_sites(catalog)
    readers = {s.name: SourceReader(catalog, s, sites, shard_size) for s in selected}
    sites = sites.loc[_sites_with_dynamic_data(catalog, sites, [readers[s.name] for s in by_role["dynamic"]])]
    site_ids = np.asarray(sites.index, dtype=object)
    for reader in readers.values():
        reader.sites = sites  # gridded sources extract exactly the store's sites, in its order
    time = resolve_time(catalog.url, start, end, (catalog.start, catalog.end),
                        [readers[s.name] for s in by_role["dynamic"]], [str(s) for s in site_ids])
    return _Chosen(selected, by_role, readers, sites, site_ids, time)


def _sites_with_dynamic_data(catalog: CatalogSpec, sites: pd.DataFrame, dynamic: list[SourceReader]) -> pd.Index:
    """The site table's ids that every dynamic source has data for, in table order."""
    keep = pd.Index(sites.index)
    for reader in dynamic:
        available = reader.site_ids()
        dropped = keep.difference(pd.Index(sorted(available)))
        if len(dropped):
            log.info("source %s has no data for %d of the %d sites; they are left out", reader.spec.name, len(dropped),
                     len(keep))
        keep = keep[keep.isin(list(available))]
    if len(keep) == 0:
        raise StefaLandError(f"catalog {catalog.url}: no site is in both the site table and every dynamic source")
    return keep


def _create(out: str, claim: Claim, catalog: CatalogSpec, chosen: _Chosen, layouts: dict[str, BlockLayout],
            static_values: np.ndarray, shard_size: int, fingerprint: str, inputs: dict[str, str]) -> BuildState:
    """Start a fresh build: the output marker first, then the skeleton with the static block, then its state."""
    provenance = {
        "catalog": catalog.url,
        "catalog_sha256": catalog.sha256,
        "dataset": catalog.dataset,
        "sources": [s.name for s in chosen.selected],
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stefaland_version": __version__,
        "start": str(chosen.time[0].date()),
        "end": str(chosen.time[-1].date()),
        "fingerprint": fingerprint,
    }
    BuildState.clear(out)
    if claim.existed:
        claim.clear()
    claim.mark()  # first: even a half-written skeleton is recognisably ours
    state = BuildState(fingerprint, inputs=inputs)
    blocks = [b for b in layouts.values() if b.variables]
    create_skeleton(out, chosen.sites, chosen.time, blocks, static_values, shard_size, provenance, state.chunks)
    state.save(out)
    return state


def _write_shards(out: str, claim: Claim, group, state: BuildState, chosen: _Chosen, layouts: dict[str, BlockLayout],
                  slices: list[slice], areas: dict[str, np.ndarray], board: ProgressBoard) -> int:
    """Write every shard the state does not record as done, recording each; return how many were written."""
    beat = clock.monotonic()
    time_specs = chosen.by_role["dynamic"] + chosen.by_role["target"]
    for spec in time_specs:
        board.add(f"read {spec.name}", len(slices), completed=len(state.done))
    board.add("write shards", len(slices), completed=len(state.done))
    written = 0
    pending = [index for index in range(len(slices)) if index not in state.done]
    # one lazy stream of shards per time-varying source: a gridded one extracts several shards
    # at once (sites sorted spatially, one task per batch on the cluster) and hands them back
    # one by one in store order; every other source reads each shard when it is asked for it
    streams = {spec.name: chosen.readers[spec.name].read_shards([list(chosen.site_ids[slices[i]]) for i in pending],
                                                                chosen.time)
               for spec in time_specs}
    for index in pending:
        state.done[index] = _write_shard(group, slices[index], chosen, layouts, streams, areas, board)
        state.save(out)
        written += 1
        board.advance("write shards")
        if clock.monotonic() - beat > 60:
            claim.heartbeat()
            beat = clock.monotonic()
    return written


def _write_shard(group, rows: slice, chosen: _Chosen, layouts: dict[str, BlockLayout], streams: dict,
                 areas: dict[str, np.ndarray], board: ProgressBoard) -> dict[str, RunningMoments]:
    """Read, harmonise and write one shard of the time-varying blocks; return each block's moments."""
    shard_sites = chosen.site_ids[rows]
    moments: dict[str, RunningMoments] = {}
    for block_name in ("dynamic", "target"):
        layout = layouts[block_name]
        if not layout.variables:
            continue
        parts: dict[str, np.ndarray] = {}
        for spec in chosen.by_role[block_name]:
            raw = next(streams[spec.name])
            harmonised = harmonise(spec, raw, {k: v[rows] for k, v in areas.items()})
            refuse_empty_sites(spec, shard_sites, harmonised, fatal=block_name == "dynamic")
            parts.update(harmonised)
            board.advance(f"read {spec.name}")
        stacked = np.stack([parts[v] for v in layout.variables], axis=-1)
        write_shard(group, block_name, rows, stacked)
        if block_name == "dynamic":
            record_missing(group, [str(s) for s in shard_sites], stacked)
        moments[block_name] = RunningMoments.of(stacked)
    return moments


def _finish(out: str, claim: Claim, catalog: CatalogSpec, chosen: _Chosen, group, state: BuildState,
            layouts: dict[str, BlockLayout], static_values: np.ndarray, fingerprint: str) -> None:
    """Refuse inputs changed during the build; write statistics, the integrity record, the completeness flag."""
    change = first_change(state.inputs, fingerprint_inputs(catalog, chosen.selected))
    if change:
        raise StefaLandError(f"{out}: {change} while the store was being built; it is left incomplete — "
                             "pass --force to rebuild it")
    statistics = _statistics(state, layouts, static_values)
    report_missing(group, len(chosen.time))
    finalise(group, statistics, state.chunks,
             lambda record: claim.mark(**{RECORD_KEY: record, "fingerprint": fingerprint, "inputs": state.inputs}))
    BuildState.clear(out)
    log.info("store %s complete: %d sites, %d days", out, len(chosen.sites), len(chosen.time))


def _static_block(specs: list[SourceSpec], readers: dict[str, SourceReader], site_ids: np.ndarray,
                  layout: BlockLayout, board: ProgressBoard) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All static attributes for all sites (small: sites × attributes) in canonical units."""
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        board.add(f"read {spec.name}", 1)
        keyed = readers[spec.name].check_table_keys(site_ids)
        raw = next(readers[spec.name].read_shards([list(site_ids)], None))
        harmonised = harmonise(spec, raw)
        refuse_empty_static(spec, site_ids, harmonised, fatal=keyed)
        columns.update(harmonised)
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
