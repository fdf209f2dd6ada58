"""``stefaland data build`` of a gridded virtual world, shard by shard ("before") and through ``read_shards`` ("after"), in one run.

Before: the build reads a gridded source shard by shard (``SourceReader.read``: one shard's culled
graph handed to the scheduler task by task, one shard after the other, sites in store order).
After: ``SourceReader.read_shards`` extracts a window of shards at once with the sites sorted
spatially, one task per batch on the workers (``compute_shards``), and hands the shards back in
store order. The "before" runs use the same code with ``read_shards`` replaced by a per-shard
loop, so nothing else differs. Each configuration builds the same world (``data synth --gridded``)
into a fresh store; the wall time of ``build_store`` (cluster start included) is printed, with
ratios, and every store is checked equal to the first, value for value.

    .venv/bin/python benchmarks/bench_gridded_build.py                        # 384 sites x 2 years, ~3-4 min on 2 busy cores
    .venv/bin/python benchmarks/bench_gridded_build.py --sites 64 --years 1   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COMPARED = ("dynamic", "target", "static", "dynamic_mean", "dynamic_std", "target_mean", "target_std", "static_mean", "static_std")


GRIDDED_S = [0.0]  # seconds spent reading gridded sources in the current build


@contextlib.contextmanager
def old_path(enabled: bool):
    """``enabled``: the build reads each shard on its own, as before. Either way the seconds spent
    reading gridded sources are added up in ``GRIDDED_S``."""
    from stefaland.catalog.readers import SourceReader

    fast = SourceReader.read_shards
    chosen = (lambda self, shards, time: (self.read(s, time) for s in shards)) if enabled else fast

    def timed(self, shards, time_axis):
        stream = chosen(self, shards, time_axis)
        while True:
            started = time.perf_counter()
            try:
                value = next(stream)
            except StopIteration:
                return
            finally:
                if self.spec.gridded is not None:
                    GRIDDED_S[0] += time.perf_counter() - started
            yield value

    SourceReader.read_shards = timed
    GRIDDED_S[0] = 0.0
    try:
        yield
    finally:
        SourceReader.read_shards = fast


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=384)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--grid-resolution", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    args = parser.parse_args()

    from click.testing import CliRunner

    import stefaland.gridded.scheduler as scheduler_module
    from stefaland.assemble import build_store
    from stefaland.store import open_store
    from stefaland_cli.main import cli

    tmp = Path(tempfile.mkdtemp(prefix="bench_gridded_build_"))
    try:
        started = time.perf_counter()
        result = CliRunner().invoke(cli, ["data", "synth", str(tmp / "world"), "--sites", str(args.sites), "--years",
                                          str(args.years), "--gridded", "--grid-resolution", str(args.grid_resolution)])
        assert result.exit_code == 0, result.output
        (catalog,) = (tmp / "world").glob("*.yaml")
        print(f"world: {args.sites} sites x {args.years} years, gridded forcing at {args.grid_resolution} deg "
              f"({time.perf_counter() - started:.1f} s to synthesise); shards of {args.shard_size}; "
              f"local cluster {args.workers} workers", flush=True)
        local_size = scheduler_module.local_size
        scheduler_module.local_size = lambda n=None: local_size(n or args.workers)
        runs = [("sync, before (shard by shard)", "sync", True), ("sync, after (read_shards)", "sync", False),
                ("local, before (shard by shard)", "local", True), ("local, after (read_shards)", "local", False)]
        walls: dict[str, float] = {}
        gridded: dict[str, float] = {}
        first: Path | None = None
        for k, (label, scheduler, before) in enumerate(runs):
            out = tmp / f"store{k}.zarr"
            print(f"--- {label} (load average {os.getloadavg()[0]:.1f})", flush=True)
            started = time.perf_counter()
            with old_path(before):
                summary = build_store(str(catalog), str(out), shard_size=args.shard_size, quiet=True, scheduler=scheduler)
            walls[label] = time.perf_counter() - started
            gridded[label] = GRIDDED_S[0]
            print(f"    {walls[label]:.1f} s ({gridded[label]:.1f} s reading gridded sources), "
                  f"{summary.n_sites} sites x {summary.n_time} days, {summary.n_shards} shards", flush=True)
            if first is None:
                first = out
                continue
            a, b = open_store(str(first)), open_store(str(out))
            for name in COMPARED:
                if name in a:
                    np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{label}: {name}")
        site_days = summary.n_sites * summary.n_time
        print(f"\n{'run':34s} {'wall s':>8s} {'site-days/s':>12s} {'gridded reads s':>16s}")
        for label, wall in walls.items():
            print(f"{label:34s} {wall:8.1f} {site_days / wall:12,.0f} {gridded[label]:16.1f}")
        before, after = "local, before (shard by shard)", "local, after (read_shards)"
        print(f"\nlocal cluster, before / after:       {walls[before] / walls[after]:.2f}x")
        print(f"gridded reads, local before / after: {gridded[before] / gridded[after]:.2f}x")
        print(f"sync, before / after:                {walls['sync, before (shard by shard)'] / walls['sync, after (read_shards)']:.2f}x")
        print(f"local after / sync after (goal <=1.5): {walls['local, after (read_shards)'] / walls['sync, after (read_shards)']:.2f}x")
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (on {os.cpu_count()} CPUs)")
        print("stores: all equal, value for value")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
