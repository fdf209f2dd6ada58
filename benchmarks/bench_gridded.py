"""Peak memory of gridded extraction stays flat when the period grows (1 vs 4 decades).

Writes a synthetic daily grid (zarr, one chunk per year) for 10 and for 40 years and extracts
area-weighted basin means for a set of basins, streamed to a zarr output chunk by chunk
("stream") or computed shard by shard as ``data build`` does ("shards"; a shard's own output,
25 basins x the period, is the only part that grows), each case in a fresh process. Peak memory is measured two ways:
Python-level allocations (tracemalloc, which sees NumPy buffers) and the process's maximum RSS.
As a contrast, the same extraction after loading the grid whole (what an in-memory tool does)
grows with the period. Prints the 4-decade / 1-decade ratios; the baseline is the 1-decade run
of the same invocation.

    .venv/bin/python benchmarks/bench_gridded.py            # ~1-2 min on 2 cores, ~150 MB disk
    .venv/bin/python benchmarks/bench_gridded.py --cells 60 --basins 200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def write_grid(path: Path, years: int, cells: int, seed: int) -> None:
    import dask
    import dask.array as da
    import numpy as np
    import pandas as pd
    import xarray as xr

    time_axis = pd.date_range("1980-01-01", periods=365 * years, freq="D")
    lat = 40.0 + 0.25 * (np.arange(cells) + 0.5)
    lon = -100.0 + 0.25 * (np.arange(cells) + 0.5)
    rng = da.random.default_rng(seed)
    prcp = rng.gamma(0.8, 6.0, size=(time_axis.size, cells, cells), chunks=(365, cells, cells)).astype("float32")
    grid = xr.Dataset({"prcp": (("time", "lat", "lon"), prcp, {"units": "mm/day"})},
                      coords={"time": time_axis, "lat": lat, "lon": lon})
    with dask.config.set(scheduler="threads", num_workers=2):
        grid.to_zarr(path, mode="w", consolidated=False)


def basins(cells: int, count: int):
    import numpy as np
    import pandas as pd
    from shapely.geometry import box

    rng = np.random.default_rng(0)
    span = 0.25 * cells
    lat = 40.0 + rng.uniform(0.6, span - 0.6, count)
    lon = -100.0 + rng.uniform(0.6, span - 0.6, count)
    half = rng.uniform(0.1, 0.5, count)
    return pd.DataFrame({"site": [f"b{i:04d}" for i in range(count)], "lat": lat, "lon": lon,
                         "geometry": [box(x - h, y - h, x + h, y + h) for x, y, h in zip(lon, lat, half)]})


MODES = ("stream", "shards", "eager")
SHARD = 25  # sites per shard in the "shards" mode, as data build computes them


def run_case(grid_path: Path, out_path: Path, cells: int, count: int, mode: str) -> dict:
    """One extraction, measured; runs in its own process (see main).

    ``stream``: every basin, written to zarr one year-chunk at a time. ``shards``: one lazy
    extraction, computed shard by shard (each shard's full period held, then dropped), the way
    ``data build`` does. ``eager``: the grid loaded whole first.
    """
    import dask
    import xarray as xr

    from stefaland.gridded import extract_to_sites

    sites = basins(cells, count)
    tracemalloc.start()
    started = time.perf_counter()
    grid = xr.open_zarr(grid_path, consolidated=False)
    if mode == "eager":
        grid = grid.load()  # the in-memory way: the whole period at once
    with dask.config.set(scheduler="threads", num_workers=2):
        if mode == "shards":
            series = extract_to_sites(grid, sites, "polygon", ["prcp"], None, "bench", site_chunk=SHARD)
            for start in range(0, count, SHARD):
                series["prcp"].isel(site=slice(start, start + SHARD)).values.sum()
        else:
            series = extract_to_sites(grid, sites, "polygon", ["prcp"], None, "bench")
            series.to_zarr(out_path, mode="w", consolidated=False)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"traced_peak": peak, "max_rss": max_rss, "seconds": seconds}


def measure(grid_path: Path, out_path: Path, cells: int, count: int, mode: str) -> dict:
    command = [sys.executable, __file__, "--case", str(grid_path), "--out", str(out_path),
               "--cells", str(cells), "--basins", str(count), "--mode", mode]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=40, help="grid cells per side (0.25°)")
    parser.add_argument("--basins", type=int, default=100)
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.out, args.cells, args.basins, args.mode)))
        return

    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_gridded_") as tmp:
        for decades in (1, 4):
            grid_path = Path(tmp) / f"grid_{decades}0y.zarr"
            write_grid(grid_path, 10 * decades, args.cells, seed=decades)
            for mode in MODES:
                results[(mode, decades)] = measure(grid_path, Path(tmp) / f"out_{mode}_{decades}.zarr",
                                                   args.cells, args.basins, mode)
                r = results[(mode, decades)]
                print(f"{mode:8s} {10 * decades:2d} years: traced peak {r['traced_peak'] / 2**20:8.1f} MiB, "
                      f"max RSS {r['max_rss'] / 2**20:8.1f} MiB, {r['seconds']:6.1f} s")
    grid_mib = {d: 365 * 10 * d * args.cells**2 * 4 / 2**20 for d in (1, 4)}
    print(f"grid size: {grid_mib[1]:.0f} MiB (10 years) vs {grid_mib[4]:.0f} MiB (40 years); {args.basins} basins")
    for mode in MODES:
        traced = results[(mode, 4)]["traced_peak"] / results[(mode, 1)]["traced_peak"]
        rss = results[(mode, 4)]["max_rss"] / results[(mode, 1)]["max_rss"]
        print(f"ratio 40y/10y {mode:8s}: traced peak x{traced:.2f}, max RSS x{rss:.2f}")


if __name__ == "__main__":
    main()
