"""Batch assembly alone: our finetune loader's samples/s against the memory-copy bound, as a ratio.

A batch of the LSTM-SL trainer is ``batch`` windows of ``seq`` days: the forcings (seq x n_dyn), the
target (seq) and the statics of each window's site, all float32. The bound is how fast this machine
can move those same bytes at all: ``np.copyto`` between preallocated contiguous arrays of exactly a
batch's size (no gather, no allocation), once cache-warm (the strictest bound) and once with the
source coming from DRAM (what random windows of a large training array cost at best). Measured in
the same run:

* ``WindowSampler`` (stefaland.finetune.data) as the trainer iterates it: random draws, the
  vectorised check for windows with no observation on their loss days (on the target windows the
  batch gathers anyway), and ``make_batch`` (one contiguous row per window of a zero-copy
  ``sliding_window_view``, + torch.from_numpy);
* ``make_batch`` alone on fresh random windows, to split the gather from the draws and the check;
* the cell-by-cell reference loader (``tests/_reference_loader.py``: a (site, day) fancy
  index per cell and a Python loop for the check) as the baseline; asserted to give identical batches.

``--profile`` additionally runs a few real LSTM-SL training steps (hidden/seq/batch as given) under
``torch.profiler`` with the loader, forward, backward and optimiser labelled, so the share of
batch assembly in an epoch is measured rather than guessed.

    python benchmarks/bench_loader.py                       # 500 sites x 10 years, batch 256, seq 365
    python benchmarks/bench_loader.py --profile --steps 3   # + torch.profiler of 3 training steps
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stefaland.finetune.data import SiteData, WindowRows, WindowSampler, make_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helper modules
from _reference_loader import reference_batches  # noqa: E402


def synthetic_sites(n_sites: int, days: int, n_dyn: int, n_static: int, gap_fraction: float, seed: int) -> SiteData:
    """In-memory z-scored arrays shaped like a store's training sites (targets with gaps)."""
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((n_sites, days), dtype=np.float32)
    target[rng.random((n_sites, days)) < gap_fraction] = np.nan
    return SiteData(np.asarray([f"{i:08d}" for i in range(n_sites)]), pd.date_range("1980-01-01", periods=days),
                    rng.standard_normal((n_sites, days, n_dyn), dtype=np.float32),
                    rng.standard_normal((n_sites, n_static), dtype=np.float32), target,
                    np.zeros(n_sites), np.zeros(n_sites))


def best_rate(step, samples: int, repeats: int) -> float:
    """Samples per second of the fastest of ``repeats`` calls (the machine is shared: best-of is stable)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return samples / best


def copy_bound(batch: int, seq: int, n_dyn: int, n_static: int, repeats: int, from_dram: bool) -> tuple[float, int]:
    """Samples/s of copying one batch's bytes between contiguous arrays; also the bytes per batch.

    ``from_dram``: the source slices rotate through a 256 MiB buffer, so (like the loader's random
    windows of a large training array) they are not in cache; otherwise the same source is copied
    again and again (cache-warm: the strictest bound).
    """
    floats = batch * (seq * (n_dyn + 1) + n_static)
    target = np.empty(floats, np.float32)
    if not from_dram:
        source = np.ones(floats, np.float32)
        return best_rate(lambda: np.copyto(target, source), batch, repeats), floats * 4
    slices = max(2, (256 * 2**20) // (floats * 4))
    pool = np.ones((slices, floats), np.float32)
    counter = iter(range(10**9))

    def step() -> None:
        for _ in range(8):
            np.copyto(target, pool[next(counter) % slices])

    return best_rate(step, 8 * batch, repeats), floats * 4


def profile_training(data: SiteData, args: argparse.Namespace) -> None:
    """torch.profiler over a few LSTM-SL steps: where an epoch's time goes."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from stefaland.finetune.models.lstm import LSTMSL
    from stefaland.finetune.trainer import masked_loss

    torch.manual_seed(0)
    model = LSTMSL(data.dynamic.shape[2], data.static.shape[1], args.hidden, 0.2)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    sampler = iter(WindowSampler(data, args.batch, args.seq, args.seq, args.steps + 1, np.random.default_rng(0)))
    batch = next(sampler)  # warm-up step outside the profile (first-call allocations)
    masked_loss(model(batch.dynamic, batch.static), batch.target, "rmse").backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function("loader: WindowSampler next"):
                batch = next(sampler)
            with record_function("forward + loss"):
                loss = masked_loss(model(batch.dynamic, batch.static), batch.target, "rmse")
            with record_function("backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            with record_function("clip + optimiser step"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--days", type=int, default=3652)
    parser.add_argument("--dynamic", type=int, default=6)
    parser.add_argument("--static", type=int, default=26)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq", type=int, default=365)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--gaps", type=float, default=0.3, help="fraction of missing target days")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="training steps under the profiler")
    args = parser.parse_args()
    data = synthetic_sites(args.sites, args.days, args.dynamic, args.static, args.gaps, 0)
    n = args.batch * args.batches
    bound, nbytes = copy_bound(args.batch, args.seq, args.dynamic, args.static, args.repeats, from_dram=False)
    dram, _ = copy_bound(args.batch, args.seq, args.dynamic, args.static, args.repeats, from_dram=True)
    rows = WindowRows.of(data, args.seq)  # what WindowSampler builds once per epoch

    def drain(make) -> None:
        for _ in make():
            pass

    def ours() -> WindowSampler:
        return WindowSampler(data, args.batch, args.seq, args.seq, args.batches, np.random.default_rng(2))

    def before():
        return reference_batches(data, args.batch, args.seq, args.seq, args.batches, np.random.default_rng(2))

    def fresh_windows(function) -> None:  # new random windows each batch, as in training (not cache-warm)
        for sites, starts in draws:
            function(sites, starts)

    rng = np.random.default_rng(1)
    draws = [(rng.integers(0, args.sites, args.batch), rng.integers(0, args.days - args.seq + 1, args.batch))
             for _ in range(args.batches)]
    for new, old in zip(ours(), before(), strict=True):
        assert torch.equal(new.dynamic, old.dynamic) and torch.equal(new.static, old.static)
        assert torch.equal(new.target.nan_to_num(-9.0), old.target.nan_to_num(-9.0)) and (new.sites == old.sites).all()
    rates = {
        "memory-copy bound (np.copyto, same bytes, cached)": bound,
        "memory-copy bound (np.copyto, source from DRAM)": dram,
        "ours: WindowSampler (trainer's loader)": best_rate(lambda: drain(ours), n, args.repeats),
        "ours: make_batch alone (random windows)": best_rate(
            lambda: fresh_windows(lambda s, t: make_batch(data, s, t, args.seq, rows)), n, args.repeats),
        "before issue 7: fancy-index gather + Python check": best_rate(lambda: drain(before), n, args.repeats),
    }
    print(f"# loader: {args.sites} sites x {args.days} days, {args.dynamic} forcings + {args.static} statics, "
          f"batch {args.batch} x seq {args.seq} = {nbytes / 2**20:.1f} MiB/batch, best of {args.repeats} x "
          f"{args.batches} batches; torch {torch.__version__}")
    print(f"| {'what':<50} | {'samples/s':>10} | {'GB/s':>6} | {'/ cached':>8} | {'/ DRAM':>7} |")
    print(f"| {'-' * 50} | {'-' * 10} | {'-' * 6} | {'-' * 8} | {'-' * 7} |")
    for name, rate in rates.items():
        print(f"| {name:<50} | {rate:>10.0f} | {rate * nbytes / args.batch / 1e9:>6.2f} | {rate / bound:>8.3f} | "
              f"{rate / dram:>7.3f} |")
    speedup = rates["ours: WindowSampler (trainer's loader)"] / rates["before issue 7: fancy-index gather + Python check"]
    print(f"ours / before issue 7: {speedup:.1f}x")
    if args.profile:
        profile_training(data, args)


if __name__ == "__main__":
    main()
