"""Pretraining throughput (samples/s) and peak memory for 500 and 4,229 virtual sites.

The trainer must read the store shard by shard, so its peak RSS may not grow with the number of
sites; this script checks that the 4,229-site run stays within 1.2× of the 500-site run.

Each size runs in a fresh process (peak RSS is per process). Stores are written shard by shard
with the synthetic generator of the tests unless ``--store-500`` / ``--store-4229`` name real
stores (for example the virtual world built by ``stefaland data build``).

    .venv/bin/python benchmarks/bench_pretrain.py                # tiny model, 10 years of days
    .venv/bin/python benchmarks/bench_pretrain.py --days 14610    # 40 years, as in the paper
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    started = time.perf_counter()
    result = pretrain(store, config, out, resume=False, quiet=True)
    seconds = time.perf_counter() - started
    samples = result.global_step * config.data.batch_size
    rows = [row for row in result.metrics if row["kind"] == "train"]
    # steady state: between the first and last log rows, so start-up and the first step don't count
    steady = (rows[-1]["step"] - rows[0]["step"]) * config.data.batch_size / (rows[-1]["time"] - rows[0]["time"]) \
        if len(rows) > 1 and rows[-1]["time"] > rows[0]["time"] else float("nan")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"steps": result.global_step, "samples": samples, "seconds": seconds,
                      "samples_per_s": steady, "samples_per_s_overall": samples / seconds, "peak_rss_mib": peak_kib / 1024,
                      "torch_threads": torch.get_num_threads()}))


def _config(path: Path, base: str, batch: int, threads: int) -> str:
    import yaml

    raw = yaml.safe_load(Path(base).read_text())
    raw.setdefault("data", {}).update({"batch_size": batch, "samples_per_site": 1.0})
    raw.setdefault("train", {}).update({"epochs": 1, "eval_batches": 0, "checkpoint_every": 10**9,
                                        "num_threads": threads, "log_every": 5})
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[500, 4229])
    parser.add_argument("--days", type=int, default=3650, help="days per site in the synthetic stores")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--config", default=str(REPO / "configs" / "pretrain_tiny.yaml"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store-500", default=None)
    parser.add_argument("--store-4229", default=None)
    parser.add_argument("--workdir", default=None, help="where stores and runs go (default: a temp dir)")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    sys.path.insert(0, str(REPO / "tests"))
    from _stores import write_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    config = _config(work / "config.yaml", args.config, args.batch_size, args.threads)
    given = {500: args.store_500, 4229: args.store_4229}
    results = {}
    for n_sites in args.sites:
        store = given.get(n_sites)
        if store is None:
            store = str(work / f"world-{n_sites}.zarr")
            if not Path(store).exists():
                print(f"writing a synthetic store of {n_sites} sites × {args.days} days …", file=sys.stderr)
                write_store(store, n_sites=n_sites, n_days=args.days, shard_size=args.shard_size)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        run = subprocess.run([sys.executable, __file__, "--child", store, config, str(work / f"run-{n_sites}")],
                             env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            sys.exit(f"pretraining on {n_sites} sites failed:\n{run.stderr[-3000:]}")
        results[n_sites] = json.loads(run.stdout.strip().splitlines()[-1])
        r = results[n_sites]
        print(f"{n_sites:>5} sites: {r['steps']:>4} steps, {r['samples_per_s']:8.1f} samples/s, "
              f"peak RSS {r['peak_rss_mib']:7.1f} MiB")
    if 500 in results and 4229 in results:
        ratio = results[4229]["peak_rss_mib"] / results[500]["peak_rss_mib"]
        verdict = "OK" if ratio <= 1.2 else "FAIL"
        print(f"peak RSS 4,229 / 500 sites = {ratio:.3f} (limit 1.2): {verdict}")
        if ratio > 1.2:
            sys.exit(1)


if __name__ == "__main__":
    main()
