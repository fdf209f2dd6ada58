"""Pretraining throughput (samples/s) and peak memory for 500 and 4,229 virtual sites.

The trainer must read the store shard by shard, so its peak RSS may not grow with the number of
sites; this script checks that the 4,229-site run stays within 1.2× of the 500-site run.

Each size runs in a fresh process (peak RSS is per process). Stores are written shard by shard
with the synthetic generator of the tests unless ``--store-500`` / ``--store-4229`` name real
stores (for example the virtual world built by ``stefaland data build``).

``--compile`` also runs each size with ``train.compile: on`` in a second fresh process,
after the eager one (``train.compile: off``) on the same store and config, and prints both
steady-state samples/s, their ratio, and the compile cost: the compiled process's extra start-up
over the eager one (time to the first logged step less that many steady steps). The first compiled
run gets an empty inductor cache, so this is the cost of a first compile, not of a cache hit.
``--repeats N`` alternates N eager/compiled pairs and compares the best samples/s of each: on a
shared machine one pair alone can swing either way with the neighbours' load.

    .venv/bin/python benchmarks/bench_pretrain.py                # tiny model, 10 years of days
    .venv/bin/python benchmarks/bench_pretrain.py --days 14610    # 40 years, as in the paper
    .venv/bin/python benchmarks/bench_pretrain.py --sites 500 --days 730 --compile --samples-per-site 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(store: str, config_path: str, out: str) -> None:
    """Runs inside the measured process: one pretraining epoch, then print JSON measurements."""
    import torch

    from stefaland.pretrain import load_config, pretrain

    config = load_config(config_path)
    started, wall_started = time.perf_counter(), time.time()
    result = pretrain(store, config, out, resume=False, quiet=True)
    seconds = time.perf_counter() - started
    samples = result.global_step * config.data.batch_size
    rows = [row for row in result.metrics if row["kind"] == "train"]
    # steady state: between the first and last log rows, so start-up and the first step don't count
    steady = (rows[-1]["step"] - rows[0]["step"]) * config.data.batch_size / (rows[-1]["time"] - rows[0]["time"]) \
        if len(rows) > 1 and rows[-1]["time"] > rows[0]["time"] else float("nan")
    # start-up: wall time to the first logged step beyond that many steady steps (store opening,
    # model building, and with train.compile the compile); compared across processes by the parent
    startup = rows[0]["time"] - wall_started - rows[0]["step"] * config.data.batch_size / steady \
        if rows and math.isfinite(steady) else float("nan")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"steps": result.global_step, "samples": samples, "seconds": seconds,
                      "samples_per_s": steady, "samples_per_s_overall": samples / seconds, "peak_rss_mib": peak_kib / 1024,
                      "startup_s": startup, "torch_threads": torch.get_num_threads()}))


def _config(path: Path, base: str, batch: int, threads: int, samples_per_site: float = 1.0,
            compile: str | None = None) -> str:
    import yaml

    raw = yaml.safe_load(Path(base).read_text())
    raw.setdefault("data", {}).update({"batch_size": batch, "samples_per_site": samples_per_site})
    raw.setdefault("train", {}).update({"epochs": 1, "eval_batches": 0, "checkpoint_every": 10**9,
                                        "num_threads": threads, "log_every": 5})
    if compile is not None:
        raw["train"]["compile"] = compile
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _measure(store: str, config: str, out: Path, threads: int, inductor_cache: Path | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if inductor_cache is not None:  # empty: the compile is measured, not a hit in an earlier run's cache
        shutil.rmtree(inductor_cache, ignore_errors=True)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache)
    run = subprocess.run([sys.executable, __file__, "--child", store, config, str(out)],
                         env=env, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"pretraining ({out.name}) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[500, 4229])
    parser.add_argument("--days", type=int, default=3650, help="days per site in the synthetic stores")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--config", default=str(REPO / "configs" / "pretrain_tiny.yaml"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples-per-site", type=float, default=1.0,
                        help="samples per site in the one epoch: more steps, a longer steady-state window")
    parser.add_argument("--store-500", default=None)
    parser.add_argument("--store-4229", default=None)
    parser.add_argument("--workdir", default=None, help="where stores and runs go (default: a temp dir)")
    parser.add_argument("--compile", action="store_true",
                        help="also run each size with train.compile: on and compare with eager (train.compile: off)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --compile: eager/compiled pairs per size, alternated; the ratio is of the best "
                             "samples/s of each (a shared machine's load changes between runs)")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    sys.path.insert(0, str(REPO / "tests"))
    from _stores import write_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    config = _config(work / "config.yaml", args.config, args.batch_size, args.threads, args.samples_per_site,
                     compile="off" if args.compile else None)
    compiled_config = _config(work / "config-compiled.yaml", args.config, args.batch_size, args.threads,
                              args.samples_per_site, compile="on")
    given = {500: args.store_500, 4229: args.store_4229}
    results = {}
    for n_sites in args.sites:
        store = given.get(n_sites)
        if store is None:
            store = str(work / f"world-{n_sites}.zarr")
            if not Path(store).exists():
                print(f"writing a synthetic store of {n_sites} sites × {args.days} days …", file=sys.stderr)
                write_store(store, n_sites=n_sites, n_days=args.days, shard_size=args.shard_size)
        results[n_sites] = r = _measure(store, config, work / f"run-{n_sites}", args.threads)
        label = " eager" if args.compile else ""
        print(f"{n_sites:>5} sites{label}: {r['steps']:>4} steps, {r['samples_per_s']:8.1f} samples/s, "
              f"peak RSS {r['peak_rss_mib']:7.1f} MiB")
        if not args.compile:
            continue
        cache = work / f"inductor-cache-{n_sites}"
        c = _measure(store, compiled_config, work / f"run-{n_sites}-compiled", args.threads, inductor_cache=cache)
        print(f"{n_sites:>5} sites compiled: {c['steps']:>4} steps, {c['samples_per_s']:8.1f} samples/s, "
              f"peak RSS {c['peak_rss_mib']:7.1f} MiB")
        print(f"{n_sites:>5} sites: compile cost {c['startup_s'] - r['startup_s']:.1f} s (start-up {c['startup_s']:.1f} s "
              f"compiled vs {r['startup_s']:.1f} s eager, empty inductor cache); whole run {c['seconds']:.1f} s "
              f"compiled vs {r['seconds']:.1f} s eager")
        eager_rates, compiled_rates = [r["samples_per_s"]], [c["samples_per_s"]]
        for _ in range(args.repeats - 1):  # alternated, the compiled runs now hitting the cache
            eager_rates.append(_measure(store, config, work / f"run-{n_sites}", args.threads)["samples_per_s"])
            compiled_rates.append(_measure(store, compiled_config, work / f"run-{n_sites}-compiled",
                                           args.threads)["samples_per_s"])
        if args.repeats > 1:
            print(f"{n_sites:>5} sites: samples/s per repeat: eager {' '.join(f'{x:.1f}' for x in eager_rates)}; "
                  f"compiled {' '.join(f'{x:.1f}' for x in compiled_rates)}")
        best = "best of each" if args.repeats > 1 else "one run each"
        print(f"{n_sites:>5} sites: torch.compile / eager samples/s = {max(compiled_rates) / max(eager_rates):.2f}x "
              f"({max(compiled_rates):.1f} vs {max(eager_rates):.1f}, {best})")
    if 500 in results and 4229 in results:
        ratio = results[4229]["peak_rss_mib"] / results[500]["peak_rss_mib"]
        verdict = "OK" if ratio <= 1.2 else "FAIL"
        print(f"peak RSS 4,229 / 500 sites = {ratio:.3f} (limit 1.2): {verdict}")
        if ratio > 1.2:
            sys.exit(1)


if __name__ == "__main__":
    main()
