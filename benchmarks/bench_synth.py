"""Virtual-world generator: text rendering speed, and the full 4,229-site × 40-year run.

Rendering ~60 million CAMELS forcing rows is the generator's bottleneck, so it renders numbers
with numpy byte arithmetic (``stefaland.synth.camels_files.fixed_point``) instead of printf-style
formatting. Part 1 times both on the same rows in the same run and prints the ratio (and checks
they print identical text). Part 2 (``--full``) writes a whole world into a temporary folder,
prints wall time, CPU time and peak RSS, and deletes it.

    python benchmarks/bench_synth.py [--days 14610] [--sites 8]
    python benchmarks/bench_synth.py --full --sites 4229 --years 40
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stefaland.synth import write_virtual_world
from stefaland.synth.camels_files import FORCING_COLUMNS, DateBlocks, forcing_file_bytes


def printf_forcing(dates: pd.DatetimeIndex, series: dict[str, np.ndarray]) -> bytes:
    """The obvious implementation: one ``%`` format per row."""
    row = "%04d %02d %02d 12\t" + "\t".join(["%.2f"] * len(FORCING_COLUMNS)) + "\n"
    columns = [series[name] for name in FORCING_COLUMNS]
    lines = [row % (d.year, d.month, d.day, *values) for d, *values in zip(dates, *columns)]
    return "".join(lines).encode()


def bench_rendering(days: int, sites: int) -> None:
    dates = pd.date_range("1980-01-01", periods=days)
    blocks = DateBlocks(dates)
    rng = np.random.default_rng(0)
    worlds = [{name: np.round(np.abs(rng.normal(100, 80, days)), 2) for name in FORCING_COLUMNS} for _ in range(sites)]
    start = time.perf_counter()
    fast = [forcing_file_bytes(45.0, 100.0, 1e8, blocks, series) for series in worlds]
    numpy_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = [printf_forcing(dates, series) for series in worlds]
    printf_s = time.perf_counter() - start
    identical = all(f.split(b"\n", 4)[4] == s for f, s in zip(fast, slow))
    print(f"rendering {sites} sites x {days} days: numpy {numpy_s:.2f} s, printf {printf_s:.2f} s, "
          f"speed-up x{printf_s / numpy_s:.1f}, identical text: {identical}")


def bench_full(sites: int, years: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="stefaland-synth-bench-"))
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        write_virtual_world(out / "world", n_sites=sites, years=years, seed=0, quiet=True)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"full world {sites} sites x {years} years: wall {wall:.0f} s, CPU {cpu:.0f} s, "
              f"peak RSS {peak_mib:.0f} MiB, {size / 2**30:.1f} GiB written")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14610)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--years", type=int, default=40)
    parser.add_argument("--full", action="store_true", help="write a whole world instead of timing rendering")
    args = parser.parse_args()
    if args.full:
        bench_full(args.sites, args.years)
    else:
        bench_rendering(args.days, args.sites)


if __name__ == "__main__":
    main()
