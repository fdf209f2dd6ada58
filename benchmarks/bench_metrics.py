"""How long scoring takes at the paper's global scale: 3,434 sites × 40 years daily × 10 models.

Prints the seconds ``stefaland.metrics.site_metrics`` takes for every metric and every model, and the
ratio to a plain per-site loop (the way hydroDL's ``statError`` scores, scipy for the correlation)
measured in the same run on a subset of sites and scaled up linearly (the loop is linear in sites).

    python benchmarks/bench_metrics.py                       # full size (~1.5 GB RAM)
    python benchmarks/bench_metrics.py --sites 500 --models 2  # quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from stefaland.metrics import METRICS, default_workers, keep_freed_memory_for_scoring, site_metrics


def loop_reference(obs: np.ndarray, sim: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric, one site at a time: the baseline the vectorised code is measured against."""
    out = {name: np.full(obs.shape[0], np.nan) for name in METRICS}
    for k in range(obs.shape[0]):
        keep = np.isfinite(obs[k]) & np.isfinite(sim[k])
        o, s = obs[k][keep].astype(np.float64), sim[k][keep].astype(np.float64)
        n = o.size
        r = stats.pearsonr(s, o)[0]
        so, ss = np.sort(o), np.sort(s)
        lo, hi = round(0.3 * n), round(0.98 * n)
        log_o, log_s = np.log(np.maximum(so[:lo], 1e-6)), np.log(np.maximum(ss[:lo], 1e-6))
        qol, qsl = np.sum(log_o - log_o.min()), np.sum(log_s - log_s.min())
        fdc = (np.arange(100) / 100 * n).astype(int)
        values = {
            "RMSE": np.sqrt(np.mean((s - o) ** 2)),
            "ubRMSE": np.sqrt(np.mean(((s - s.mean()) - (o - o.mean())) ** 2)),
            "MAE": np.mean(np.abs(s - o)), "Corr": r, "R2": r * r,
            "NSE": 1 - np.sum((o - s) ** 2) / np.sum((o - o.mean()) ** 2),
            "KGE": 1 - np.sqrt((r - 1) ** 2 + (s.std() / o.std() - 1) ** 2 + (s.mean() / o.mean() - 1) ** 2),
            "PBIAS": np.sum(s - o) / np.sum(o) * 100,
            "FLV": np.sum(ss[:lo] - so[:lo]) / np.sum(so[:lo]) * 100,
            "FHV": np.sum(ss[hi:] - so[hi:]) / np.sum(so[hi:]) * 100,
            "FLV_log": -(qsl - qol) / (qol + 1e-6) * 100,
            "RMSE_FDC": np.sqrt(np.mean((ss[::-1][fdc] - so[::-1][fdc]) ** 2)),
        }
        for name, value in values.items():
            out[name][k] = value
    return out


def synthetic_flows(rng: np.random.Generator, n_sites: int, n_days: int) -> np.ndarray:
    """Skewed, seasonal daily flows with 5 % gaps, in float32 as predictions files store them."""
    season = 1.0 + 0.7 * np.sin(2 * np.pi * np.arange(n_days, dtype=np.float32) / 365.25)
    obs = rng.gamma(0.8, 2.0, (n_sites, n_days)).astype(np.float32) * season
    obs[rng.random(obs.shape, dtype=np.float32) < 0.05] = np.nan
    return obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3434)
    parser.add_argument("--days", type=int, default=14610)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--loop-sites", type=int, default=100, help="sites the loop baseline runs on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="scoring threads (default: CPUs, at most 8)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's malloc thresholds alone (to see what keep_freed_memory_for_scoring buys)")
    args = parser.parse_args()
    tuned = False if args.malloc_default else keep_freed_memory_for_scoring()

    rng = np.random.default_rng(args.seed)
    obs = synthetic_flows(rng, args.sites, args.days)
    vectorised = vectorised_cpu = 0.0
    for model in range(args.models):
        sim = (obs * rng.uniform(0.7, 1.3) + rng.normal(0, 0.5, obs.shape).astype(np.float32)).clip(0)
        start, start_cpu = time.perf_counter(), time.process_time()
        scores = site_metrics(obs, sim, min_valid=30, workers=args.workers)
        vectorised += time.perf_counter() - start
        vectorised_cpu += time.process_time() - start_cpu
        if model == 0:
            subset = slice(0, min(args.loop_sites, args.sites))
            start, start_cpu = time.perf_counter(), time.process_time()
            reference = loop_reference(obs[subset], sim[subset])
            loop_subset = time.perf_counter() - start
            loop_subset_cpu = time.process_time() - start_cpu
            worst = max(float(np.nanmax(np.abs(scores[m][subset] - reference[m]) / (1 + np.abs(reference[m]))))
                        for m in METRICS)
        del sim
    n_loop = min(args.loop_sites, args.sites)
    scale = args.sites / n_loop * args.models
    loop_estimate, loop_estimate_cpu = loop_subset * scale, loop_subset_cpu * scale
    workers = args.workers or default_workers()
    print(f"scored {args.sites} sites × {args.days} days × {args.models} models, {len(METRICS)} metrics each, "
          f"{workers} thread(s), malloc tuned: {tuned}; the loop runs on 1")
    print("                                  wall s     CPU s   (CPU time is the fairer figure on a shared machine)")
    print(f"vectorised (stefaland.metrics): {vectorised:8.1f}  {vectorised_cpu:8.1f}")
    print(f"per-site loop baseline:        {loop_estimate:8.1f}  {loop_estimate_cpu:8.1f}   (measured on {n_loop} sites "
          f"× 1 model, scaled × {scale:.0f})")
    print(f"speed-up:                      {loop_estimate / vectorised:8.1f}× {loop_estimate_cpu / vectorised_cpu:8.1f}×")
    print(f"largest relative difference to the loop on its subset: {worst:.1e}")


if __name__ == "__main__":
    main()
