"""HBV 1.1p forward+backward cost per basin-year, eager vs ``torch.compile`` of the daily step.

Why compile only the step: the day loop cannot be fused (each day needs the previous one), but
the ~60 small element-wise operations inside one day can; compiling the whole unrolled loop would
take minutes. Both variants are measured in the same run, so the printed ratio is meaningful on
whatever machine runs it. A compile failure (no C++ compiler, unsupported platform) is reported,
not raised.

    python benchmarks/bench_hbv.py --basins 100 --years 2 --nmul 16 [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from stefaland.hbv import HBV11p, hbv_step


def make_inputs(n_time: int, n_basin: int, n_raw: int, device: str, seed: int = 0):
    """Synthetic but hydrologically plausible forcings (wet/dry days, seasonal snow)."""
    g = torch.Generator().manual_seed(seed)
    wet = torch.rand(n_time, n_basin, generator=g) < 0.4
    precipitation = torch.where(wet, torch.rand(n_time, n_basin, generator=g) * 25, 0.0)
    day = torch.arange(n_time, dtype=torch.float32).unsqueeze(-1)
    temperature = 8 - 12 * torch.cos(2 * torch.pi * day / 365) + 3 * torch.randn(n_time, n_basin, generator=g)
    pet = torch.clamp(1.5 + 0.15 * temperature, min=0.05)
    raw = torch.randn(n_time, n_basin, n_raw, generator=g)
    return [x.to(device) for x in (precipitation, temperature, pet, raw)]


def time_step(model: HBV11p, inputs: list[torch.Tensor], repeats: int, device: str) -> float:
    """Median seconds of one forward+backward pass (the first, warm-up call is not counted)."""
    precipitation, temperature, pet, raw = inputs
    times = []
    for attempt in range(repeats + 1):
        leaf = raw.detach().requires_grad_()
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(precipitation, temperature, pet, leaf)
        out.streamflow.square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if attempt > 0:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--basins", type=int, default=100)
    parser.add_argument("--years", type=float, default=2.0, help="total years incl. warm-up")
    parser.add_argument("--warmup-days", type=int, default=365)
    parser.add_argument("--nmul", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    n_time = int(round(args.years * 365))
    model = HBV11p(nmul=args.nmul, warmup_days=args.warmup_days)
    inputs = make_inputs(n_time, args.basins, model.n_outputs, args.device)
    basin_years = args.basins * n_time / 365.0
    print(f"HBV 1.1p: {args.basins} basins x {n_time} days (warm-up {args.warmup_days}) "
          f"x nmul {args.nmul}, device {args.device}, threads {args.threads}")

    eager = time_step(model, inputs, args.repeats, args.device)
    print(f"eager:    {eager:8.3f} s per forward+backward, {eager / basin_years:.2e} s per basin-year")

    try:
        model.step = torch.compile(hbv_step, dynamic=False)
        compile_start = time.perf_counter()
        compiled = time_step(model, inputs, args.repeats, args.device)
        total = time.perf_counter() - compile_start
        print(f"compiled: {compiled:8.3f} s per forward+backward, "
              f"{compiled / basin_years:.2e} s per basin-year (compile+runs took {total:.1f} s)")
        print(f"speed-up of torch.compile over eager: {eager / compiled:.2f}x")
    except Exception as exc:  # noqa: BLE001 - any backend failure is a result to report
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"compiled: torch.compile failed ({type(exc).__name__}: {first_line})")
    finally:
        model.step = hbv_step


if __name__ == "__main__":
    main()
