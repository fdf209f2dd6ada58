"""Build 4,229 sites from a global 0.1° daily grid of 10 years, out of core.

A 0.1° global daily grid of 10 years is 1800 × 3600 cells × 3,653 days ≈ 23.7 G values (≈ 95 GB
as float32): far too big to write here, and it need not be. The grid is a *lazy, deterministic*
dask array: every chunk (one calendar year × ``--tile`` × ``--tile`` cells, default 64 × 64 =
6.4° tiles, ≈ 6 MB) is generated on demand from its block index by a cheap closed-form field (a
seasonal cycle by latitude plus a hash-like anomaly per cell times a hash-like amplitude per day),
so any chunk is reproducible and none is ever stored. The benchmark then runs the code path of
``stefaland data build`` for a gridded source with ``gridded: {method: nearest}``: one lazy
``extract_to_sites(..., site_chunk=128)`` for every site of
:func:`stefaland.synth.sites.draw_sites` — sorted spatially first (``--order spatial``, the
default: a Z-order curve, so a shard covers one compact region and a chunk is read by about one
shard) or in draw order (``--order draw``: every shard mixes all 18 regions, the worst case for
chunk reuse) — computed shard by shard (128 sites) on ``dask_client("local")`` as ``data build``
does, each shard written into a zarr store in a temporary folder (deleted at the end). ``--path
submit`` (default) runs each shard as one task on a worker's synchronous scheduler,
several shards at once (:func:`stefaland.gridded.compute_shards`); ``--path shard`` hands the
scheduler the shard's culled graph task by task, one shard after the other (``compute_shard``).
``--compare`` runs the synchronous scheduler (draw and spatial order) and the local cluster with 1
and 2 workers, task by task and one task per shard, in one run, and prints the ratios.

It prints wall time (cluster start, graph construction and every shard), throughput (site-days
per second), the peak RSS of the whole process tree (this process + the cluster's scheduler and
worker processes, sampled every 0.1 s by a thread), how many grid chunks the shards generated
versus the chunks in the grid (out of core: only chunks holding a site of the shard are ever
generated; summed over shards, and distinct), and checks that the pipeline's value for a few
sites and days equals the field evaluated directly at the site's nearest cell centre (found by
brute force, not by the library's arithmetic). It exits 1 when the peak RSS reaches
``--max-rss-gb`` (4 GB) or a checked value differs.

    .venv/bin/python benchmarks/bench_gridded_global.py                         # the full case, ~7-8 min on 2 busy cores
    .venv/bin/python benchmarks/bench_gridded_global.py --scheduler sync        # same, no cluster: ~1-3 min
    .venv/bin/python benchmarks/bench_gridded_global.py --max-shards 3          # a sample + extrapolation
    .venv/bin/python benchmarks/bench_gridded_global.py --years 2 --sites 500   # a quick look
    .venv/bin/python benchmarks/bench_gridded_global.py --compare --years 2 --sites 1280   # the --compare figures, ~4 min

``--scheduler``: ``local`` (default, the LocalCluster ``data build`` starts), the address of an
existing dask scheduler, or ``sync`` (dask's synchronous scheduler in this process). ``--tile``:
smaller tiles waste fewer generated cells per site but make more (and per task, on a cluster,
costlier) tasks; 16 is faster with ``sync``, 64 with ``local``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

SHARD = 128  # sites per shard, as ``data build`` computes them
VARIABLE = "tmean"
START = "2000-01-01"


# --------------------------------------------------------------------------- the synthetic field


@dataclass(frozen=True)
class GlobalGrid:
    """Cell centres of a global regular grid and its daily time axis."""

    resolution: float
    time: pd.DatetimeIndex

    @property
    def lat(self) -> np.ndarray:
        n = round(180 / self.resolution)
        return -90 + self.resolution * (np.arange(n) + 0.5)

    @property
    def lon(self) -> np.ndarray:
        n = round(360 / self.resolution)
        return -180 + self.resolution * (np.arange(n) + 0.5)


def _hash01(*keys: np.ndarray) -> np.ndarray:
    """A deterministic, well-mixed value in [0, 1) for integer keys (broadcast together)."""
    h = np.uint32(0x811C9DC5)
    for k, prime in zip(keys, (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)):
        h = h ^ (np.asarray(k).astype(np.uint32) * np.uint32(prime))
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x2C1B3C6D)
    h = h ^ (h >> np.uint32(12))
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(2**24)


def field(resolution: float, day: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """The grid's value (a daily temperature, °C) at day/row/col indices, broadcast together.

    Seasonal cycle by latitude (warm tropics, a cycle whose amplitude grows poleward and flips
    between hemispheres) plus a per-cell anomaly in [-1, 1) times a per-day amplitude in [0, 4):
    neighbouring cells and neighbouring days differ, so a wrong cell or a wrong day is caught.
    Only the last multiply-add is on the full chunk, which keeps a chunk cheap to generate.
    """
    lat = np.float32(-90 + resolution / 2) + np.float32(resolution) * np.asarray(row, dtype=np.float32)
    phase = np.float32(2 * np.pi / 365.25) * (np.asarray(day, dtype=np.float32) - np.float32(15))
    season = (np.float32(28) - np.float32(0.45) * np.abs(lat)
              - np.float32(0.3) * lat * np.cos(phase))  # lat > 0: cold around mid-January
    anomaly = np.float32(2) * _hash01(row, col) - np.float32(1)
    amplitude = np.float32(4) * _hash01(day, np.uint32(7))
    return (season + anomaly * amplitude).astype(np.float32)


def _chunk(block_id: tuple[int, int, int] | None = None, resolution: float = 0.1, tile: int = 64,
           day_starts: tuple[int, ...] = (0,)) -> np.ndarray:
    """One grid chunk, generated from its block index (``map_blocks``' ``block_id``; not
    ``block_info``, whose per-task copy of every chunk boundary makes graphs slow to ship)."""
    t, i, j = block_id
    day = np.arange(day_starts[t], day_starts[t + 1])[:, None, None]
    row = np.arange(i * tile, min((i + 1) * tile, round(180 / resolution)))[None, :, None]
    col = np.arange(j * tile, min((j + 1) * tile, round(360 / resolution)))[None, None, :]
    return field(resolution, day, row, col)


def lazy_grid(grid: GlobalGrid, tile: int):
    """The grid as an ``xarray.Dataset`` backed by a never-stored dask array."""
    import dask.array as da
    import xarray as xr

    shape = (grid.time.size, grid.lat.size, grid.lon.size)
    years = tuple(int(n) for n in pd.Series(1, index=grid.time).groupby(grid.time.year).size())
    chunks = (years, *da.core.normalize_chunks((tile, tile), shape[1:]))  # time: one calendar year per chunk
    day_starts = tuple(int(d) for d in np.cumsum((0, *years)))
    data = da.map_blocks(_chunk, chunks=chunks, dtype=np.float32, resolution=grid.resolution, tile=tile,
                         day_starts=day_starts, name=f"synthetic-grid-{grid.resolution}-{tile}-{grid.time.size}")
    return xr.Dataset({VARIABLE: (("time", "lat", "lon"), data, {"units": "degC"})},
                      coords={"time": grid.time, "lat": grid.lat, "lon": grid.lon})


# --------------------------------------------------------------------------- measurement


class PeakRSS:
    """Peak resident memory of this process and all its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a child that just ended
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakRSS:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def chunks_needed(array, layer_name: str) -> set[tuple[int, ...]]:
    """Block indices of the grid chunks that ``array``'s (culled) graph generates."""
    from dask.core import flatten

    graph = array.__dask_graph__().cull(set(flatten(array.__dask_keys__())))
    # culling renames a layer to "<name>-<token of the kept keys>"; keys are (name, t, i, j)
    return {tuple(key[1:]) for name, layer in graph.layers.items() if name.startswith(layer_name)
            for key in layer.get_output_keys()}


# --------------------------------------------------------------------------- the build


def sites_table(n: int, seed: int, order: str = "spatial") -> pd.DataFrame:
    """The build's site table (site, lat, lon) for ``n`` virtual gauges on six continents.

    ``order``: ``draw`` keeps draw order (every shard mixes all 18 regions: each chunk is read by
    almost every shard), ``spatial`` sorts the sites along a Z-order curve first
    (:func:`stefaland.gridded.spatial_order`), so a shard covers one compact region."""
    from stefaland.gridded import spatial_order
    from stefaland.synth.sites import draw_sites

    drawn = draw_sites(n, np.random.default_rng(seed))
    table = pd.DataFrame({"site": drawn["gauge_id"].astype(str).to_numpy(), "lat": drawn["gauge_lat"].to_numpy(float),
                          "lon": drawn["gauge_lon"].to_numpy(float)})
    if order == "spatial":
        table = table.iloc[spatial_order(table["lat"], table["lon"])].reset_index(drop=True)
    return table


def ship_profile(shard, path: str) -> dict:
    """What the client hands the scheduler for one shard: tasks and serialised bytes."""
    import cloudpickle

    from stefaland.gridded import cull_shard
    from stefaland.gridded.shards import _Payload

    culled = cull_shard(shard)
    tasks = len(dict(culled.data.__dask_graph__()))
    if path == "submit":
        return {"tasks_per_shard": 1, "graph_tasks_inside": tasks, "bytes_per_shard": len(cloudpickle.dumps(_Payload(culled)))}
    return {"tasks_per_shard": tasks, "graph_tasks_inside": tasks,
            "bytes_per_shard": len(cloudpickle.dumps(dict(culled.data.__dask_graph__())))}


def build(grid: GlobalGrid, tile: int, sites: pd.DataFrame, out: Path, max_shards: int | None = None,
          path: str = "submit", count: bool = True) -> dict:
    """Extract every site lazily, then compute and write shard by shard, as ``data build`` does
    (only the first ``max_shards`` shards when given: a sample of a run too long to wait for).

    ``path``: ``submit`` runs each shard as one task on a worker's synchronous scheduler, several
    shards at once (:func:`stefaland.gridded.compute_shards`); ``shard`` computes one shard after
    the other through the scheduler task by task (``compute_shard``, what ``data build`` does).
    Timed: graph construction and the shard loop (compute + write); chunk counting is not."""
    import zarr

    from stefaland.gridded import compute_shard, compute_shards, extract_to_sites

    started = time.perf_counter()
    ds = lazy_grid(grid, tile)
    layer = ds[VARIABLE].data.name
    series = extract_to_sites(ds, sites, "nearest", [VARIABLE], None, "synthetic_global", site_chunk=SHARD)
    lazy = series[VARIABLE]
    graph_s = time.perf_counter() - started
    store = zarr.create_array(str(out), shape=(len(sites), grid.time.size), chunks=(SHARD, grid.time.size),
                              dtype="float32", fill_value=np.nan, zarr_format=3)
    all_starts = list(range(0, len(sites), SHARD))
    starts = all_starts[:max_shards]
    computed, distinct = 0, set()
    if count:
        for start in starts:
            needed = chunks_needed(lazy.isel(site=slice(start, start + SHARD)).data, layer)
            computed, distinct = computed + len(needed), distinct | needed
    profile = ship_profile(lazy.isel(site=slice(0, SHARD)), path)
    started = time.perf_counter()
    shards = (lazy.isel(site=slice(start, start + SHARD)) for start in starts)
    results = compute_shards(shards) if path == "submit" else (compute_shard(shard) for shard in shards)
    done = 0
    for k, (start, values) in enumerate(zip(starts, results)):
        store[start:start + values.shape[0]] = values.values.astype(np.float32)
        done = min(start + SHARD, len(sites))
        print(f"\r  shard {k + 1}/{len(all_starts)} ({done} sites)", end="", flush=True)
    print()
    loop_s = time.perf_counter() - started
    total = math.prod(len(c) for c in ds[VARIABLE].data.chunks)
    return {"sites_done": done, "shards_done": len(starts), "shards": len(all_starts), "graph_s": graph_s, "loop_s": loop_s,
            "chunks_computed": computed, "chunks_distinct": len(distinct), "chunks_total": total,
            "chunk_bytes": 365 * tile * tile * 4, **profile}


def nearest_cell(grid: GlobalGrid, lat: float, lon: float) -> tuple[int, int]:
    """The nearest cell centre, found by brute force (independent of the library's arithmetic)."""
    row = int(np.argmin(np.abs(grid.lat - lat)))
    distance = np.abs((grid.lon - lon + 180) % 360 - 180)
    return row, int(np.argmin(distance))


def verify(grid: GlobalGrid, sites: pd.DataFrame, out: Path, n_sites: int = 6, n_days: int = 8) -> int:
    """Compare stored values with the field at each checked site's nearest cell; return mismatches."""
    import zarr

    stored = zarr.open_array(str(out), mode="r")
    rng = np.random.default_rng(1)
    picks = rng.choice(len(sites), size=min(n_sites, len(sites)), replace=False)  # only sites written
    days = np.sort(rng.choice(grid.time.size, size=min(n_days, grid.time.size), replace=False))
    bad = 0
    for i in picks:
        row, col = nearest_cell(grid, sites["lat"].iloc[i], sites["lon"].iloc[i])
        expected = field(grid.resolution, days, np.full(days.size, row), np.full(days.size, col))
        got = stored[int(i), :][days]
        ok = np.array_equal(got, expected)
        bad += 0 if ok else 1
        print(f"  site {sites['site'].iloc[i]} ({sites['lat'].iloc[i]:7.3f}, {sites['lon'].iloc[i]:8.3f}) "
              f"→ cell ({grid.lat[row]:.2f}, {grid.lon[col]:.2f}): "
              f"{'equal' if ok else f'MISMATCH max |diff| {np.nanmax(np.abs(got - expected)):.3g}'} on {days.size} days")
    return bad


def scheduler_context(scheduler: str, workers: int | None):
    """``sync``: dask's synchronous scheduler here; otherwise the build's own ``dask_client``."""
    import dask

    if scheduler == "sync":
        return dask.config.set(scheduler="synchronous")
    from stefaland.gridded.scheduler import dask_client

    return dask_client(scheduler, n_workers=workers)


def one_run(grid: GlobalGrid, tile: int, sites: pd.DataFrame, scheduler: str, workers: int | None, path: str,
            max_shards: int | None, count: bool = True) -> dict:
    """One build in a temporary store; timings, chunk counts, peak RSS and value checks."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_gridded_global_"))
    try:
        with PeakRSS() as rss:
            started = time.perf_counter()
            with scheduler_context(scheduler, workers):
                cluster_s = time.perf_counter() - started
                counts = build(grid, tile, sites, tmp / "sites.zarr", max_shards, path, count)
            wall = time.perf_counter() - started
        mismatches = verify(grid, sites.iloc[:counts["sites_done"]], tmp / "sites.zarr")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    site_days = counts["sites_done"] * grid.time.size
    return {**counts, "wall_s": wall, "cluster_s": cluster_s, "site_days": site_days, "rss_peak": rss.peak,
            "mismatches": mismatches, "rate": site_days / (counts["graph_s"] + counts["loop_s"])}


def compare(args: argparse.Namespace, grid: GlobalGrid) -> int:
    """Baseline and new paths in one run (the box is shared: only same-run ratios mean anything).

    The draw-order and task-by-task runs go once; the three runs the goal compares (one process,
    1 and 2 workers with one task per shard) go ``--repeats`` times, alternated, best of each."""
    once = [  # label, site order, scheduler, workers, path, dask's MALLOC_TRIM_THRESHOLD_ in the workers
        ("sync, draw order (one process)", "draw", "sync", None, "shard", False),
        ("local 1 worker, task by task (before)", "spatial", "local", 1, "shard", True),
        ("local 2 workers, task by task (before)", "spatial", "local", 2, "shard", True),
        ("local 1 worker, one task per shard, trim", "spatial", "local", 1, "submit", True),
    ]
    repeated = [
        ("sync, spatial order (one process)", "spatial", "sync", None, "shard", False),
        ("local 1 worker, one task per shard", "spatial", "local", 1, "submit", False),
        ("local 2 workers, one task per shard", "spatial", "local", 2, "submit", False),
    ]
    tables = {order: sites_table(args.sites, args.seed, order) for order in ("draw", "spatial")}
    results: dict[str, dict] = {}
    rates: dict[str, list[float]] = {}
    import stefaland.gridded.scheduler as scheduler_module

    ours = scheduler_module.LOCAL_WORKER_CONFIG
    had_trim = "MALLOC_TRIM_THRESHOLD_" in os.environ
    for label, order, scheduler, workers, path, trim in once + repeated * args.repeats:
        print(f"--- {label} (load average {os.getloadavg()[0]:.1f})")
        first = label not in results  # chunks are counted (untimed) on the first run of each
        # "trim": the workers as dask starts them (MALLOC_TRIM_THRESHOLD_=65536), not as dask_client does
        scheduler_module.LOCAL_WORKER_CONFIG = {key: 65536 for key in ours} if trim else ours
        try:
            r = one_run(grid, args.tile, tables[order], scheduler, workers, path, args.max_shards, count=first)
        finally:
            scheduler_module.LOCAL_WORKER_CONFIG = ours
            if not had_trim:  # the nanny leaks it into this process's environment, whence later workers inherit it
                os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        rates.setdefault(label, []).append(r["rate"])
        if first or r["rate"] > results[label]["rate"]:
            counted = {} if first else {k: results[label][k] for k in ("chunks_computed", "chunks_distinct")}
            results[label] = {**r, **counted}
    sync = results["sync, spatial order (one process)"]["rate"]
    print(f"\n{'run (best of the runs listed)':44s} {'site-days/s':>12s} {'/ sync':>7s} {'graph':>6s} {'shards':>7s} {'cluster':>8s} "
          f"{'tasks/shard':>11s} {'bytes/shard':>11s} {'chunks gen/distinct':>19s} {'RSS GB':>7s}  runs (site-days/s)")
    for label, r in results.items():
        print(f"{label:44s} {r['rate']:12,.0f} {r['rate'] / sync:7.2f} {r['graph_s']:5.1f}s {r['loop_s']:6.1f}s "
              f"{r['cluster_s']:7.1f}s {r['tasks_per_shard']:11,d} {r['bytes_per_shard']:11,d} "
              f"{r['chunks_computed']:>9,d}/{r['chunks_distinct']:<9,d} {r['rss_peak'] / 1e9:7.2f}  "
              f"{', '.join(f'{x:,.0f}' for x in rates[label])}")
    one, two = results["local 1 worker, one task per shard"]["rate"], results["local 2 workers, one task per shard"]["rate"]
    before = {w: results[f"local {w} worker{'s' if w > 1 else ''}, task by task (before)"]["rate"] for w in (1, 2)}
    print(f"\nspatial / draw order (sync):                  {sync / results['sync, draw order (one process)']['rate']:.2f}x")
    print(f"one process / 1 worker (goal <= 1.5):         {sync / one:.2f}x")
    print(f"2 workers / 1 worker (goal > 1):              {two / one:.2f}x")
    print(f"one task per shard / task by task, 1 worker:  {one / before[1]:.2f}x")
    print(f"one task per shard / task by task, 2 workers: {two / before[2]:.2f}x")
    trimmed = results["local 1 worker, one task per shard, trim"]["rate"]
    print(f"glibc defaults / dask's MALLOC_TRIM_THRESHOLD_, 1 worker: {one / trimmed:.2f}x")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (on {os.cpu_count()} CPUs)")
    bad = sum(r["mismatches"] for r in results.values())
    print(f"values checked: {'all equal to the field at the nearest cell' if bad == 0 else f'{bad} sites differ'}")
    return 0 if bad == 0 else 1


def run(args: argparse.Namespace) -> int:
    time_axis = pd.date_range(START, pd.Timestamp(START) + pd.DateOffset(years=args.years) - pd.Timedelta(days=1), freq="D")
    grid = GlobalGrid(args.resolution, time_axis)
    cells = grid.lat.size * grid.lon.size * grid.time.size
    print(f"grid: {grid.lat.size} x {grid.lon.size} cells x {grid.time.size} days = {cells / 1e9:.1f} G values "
          f"({cells * 4 / 1e9:.0f} GB as float32, never stored); chunks 1 year x {args.tile} x {args.tile} cells")
    if args.compare:
        return compare(args, grid)
    sites = sites_table(args.sites, args.seed, args.order)
    print(f"sites: {len(sites)} from draw_sites ({args.order} order), shards of {SHARD}, nearest cell, "
          f"scheduler {args.scheduler}, path {args.path}")
    r = one_run(grid, args.tile, sites, args.scheduler, args.workers, args.path, args.max_shards)
    print(f"wall time        {r['wall_s']:8.1f} s (cluster start {r['cluster_s']:.1f} s, graph {r['graph_s']:.1f} s, "
          f"{r['shards_done']} of {r['shards']} shards {r['loop_s']:.1f} s)")
    if r["shards_done"] < r["shards"]:
        print(f"  extrapolated   {r['wall_s'] * r['shards'] / r['shards_done']:8.0f} s for all {r['shards']} shards")
    print(f"throughput       {r['site_days'] / r['wall_s']:8.0f} site-days/s ({r['site_days'] / 1e6:.2f} M site-days); "
          f"{r['rate']:.0f} without the cluster start")
    if args.scheduler != "sync":
        print(f"shipped          {r['tasks_per_shard']:,} task(s) and {r['bytes_per_shard']:,} bytes per shard "
              f"({r['graph_tasks_inside']:,} tasks in the culled shard graph)")
    distinct, total, computed, gb = r["chunks_distinct"], r["chunks_total"], r["chunks_computed"], r["chunk_bytes"] / 1e9
    print(f"grid chunks      {distinct} distinct chunks touched of {total} in the grid ({100 * distinct / total:.1f} %, "
          f"≈{distinct * gb:.1f} of ≈{total * gb:.0f} GB); {computed} generated summed over shards "
          f"(x{computed / max(distinct, 1):.1f}: a chunk is regenerated by every shard with a site in it)")
    print(f"peak RSS         {r['rss_peak'] / 1e9:8.2f} GB (process tree) — limit {args.max_rss_gb:g} GB: "
          f"{'OK' if r['rss_peak'] < args.max_rss_gb * 1e9 else 'EXCEEDED'}")
    bad = r["mismatches"]
    print(f"values checked   {'all equal to the field at the nearest cell' if bad == 0 else f'{bad} sites differ'}")
    return 0 if r["rss_peak"] < args.max_rss_gb * 1e9 and r["mismatches"] == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--years", type=int, default=10, help="length of the daily grid (default 10)")
    parser.add_argument("--sites", type=int, default=4229, help="number of sites (default 4229)")
    parser.add_argument("--resolution", type=float, default=0.1, help="grid spacing in degrees (default 0.1)")
    parser.add_argument("--scheduler", default="local", help="local (default), a dask scheduler address, or sync")
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: physical cores, max 8)")
    parser.add_argument("--tile", type=int, default=64, help="grid chunk size in cells, per side (default 64: 6.4° at 0.1°)")
    parser.add_argument("--max-shards", type=int, default=None, help="compute only the first N shards (a sample)")
    parser.add_argument("--seed", type=int, default=0, help="seed of draw_sites")
    parser.add_argument("--order", choices=("spatial", "draw"), default="spatial",
                        help="site order before sharding: spatial (Z-order, default) or draw (every shard mixes all regions)")
    parser.add_argument("--path", choices=("submit", "shard"), default="submit",
                        help="submit: one task per shard on a worker's synchronous scheduler (default); "
                             "shard: the shard's graph task by task through the scheduler")
    parser.add_argument("--compare", action="store_true",
                        help="sync vs local 1 and 2 workers, task by task and one task per shard, draw vs spatial order, in one run")
    parser.add_argument("--repeats", type=int, default=1, help="--compare: alternate the goal's three runs N times, best of each")
    parser.add_argument("--max-rss-gb", type=float, default=4.0, help="fail when the peak RSS reaches this (GB)")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
