"""Scale check of the spine: `data synth` then `data build` at the paper's pretraining size.

Prints wall time, store size and peak RSS of each step, each in its own process so the RSS figures
belong to one step. Default: 4,229 sites × 40 years (about 10 minutes on 2 cores); use
--sites/--years for a quicker look. Also prints the build's throughput relative to reading the same
text files with a bare pandas loop measured in the same run (the baseline every build pays).

    .venv/bin/python benchmarks/bench_build.py --sites 4229 --years 40 --workdir /tmp/stefaland-scale
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _run(command: list[str]) -> tuple[float, float]:
    """Run a command in a fresh wrapper process; return (wall seconds, peak RSS in GiB of it alone)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return wall, peak_kib / 2**20


def _size_gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


def _baseline_read(world: Path, n_files: int) -> float:
    """Seconds per file to parse forcing files with a plain pandas loop (no checks, no store)."""
    import pandas as pd

    files = sorted(glob.glob(str(world / "basin_mean_forcing" / "synthetic" / "*" / "*.txt")))[:n_files]
    start = time.perf_counter()
    for path in files:
        pd.read_csv(path, sep=r"\s+", skiprows=4, header=None)
    return (time.perf_counter() - start) / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=4229)
    parser.add_argument("--years", type=int, default=40)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stefaland-scale"))
    parser.add_argument("--keep", action="store_true", help="Keep the world and the store.")
    args = parser.parse_args()

    stefaland = [sys.executable, "-m", "stefaland_cli.main"]
    world, store = args.workdir / "world", args.workdir / "world.zarr"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)

    synth_wall, synth_rss = _run(stefaland + ["data", "synth", str(world), "--sites", str(args.sites),
                                              "--years", str(args.years), "--quiet"])
    build_wall, build_rss = _run(stefaland + ["data", "build", "--catalog", str(world / "virtual_world.yaml"),
                                              "--out", str(store), "--shard-size", str(args.shard_size), "--quiet"])
    per_file = _baseline_read(world, n_files=min(200, args.sites))
    n_files = len(glob.glob(str(world / "basin_mean_forcing" / "synthetic" / "*" / "*.txt"))) + len(
        glob.glob(str(world / "usgs_streamflow" / "*" / "*.txt")))
    baseline = per_file * n_files

    print(f"sites × years           : {args.sites} × {args.years}")
    print(f"synth  wall / peak RSS  : {synth_wall:8.1f} s / {synth_rss:5.2f} GiB   world {_size_gib(world):.2f} GiB")
    print(f"build  wall / peak RSS  : {build_wall:8.1f} s / {build_rss:5.2f} GiB   store {_size_gib(store):.2f} GiB")
    print(f"bare pandas parse of the same {n_files} files (estimated from {min(200, args.sites)}): {baseline:.1f} s")
    print(f"build / bare-parse ratio: {build_wall / baseline:.2f}×")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
