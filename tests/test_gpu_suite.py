"""``benchmarks/gpu_suite.py --cpu-smoke`` keeps running, so the GPU suite is ready whenever a GPU is.

The suite runs in a subprocess as it would on the GPU machine, with zarr and intake made
unimportable (``GPU_SUITE_BLOCK``: that machine has neither), and must record every part with
finite numbers in its JSON within the smoke's one-minute budget.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("pretrain", "supply", "finetune", "foreign", "hbv", "ddp")


def _numbers(measurements: dict) -> list[float]:
    return [m["value"] for m in measurements.values() if isinstance(m["value"], (int, float))]


def test_cpu_smoke_records_every_part(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = dict(os.environ, GPU_SUITE_BLOCK="zarr,intake", CUDA_VISIBLE_DEVICES="")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--cpu-smoke", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["env"]["device"] == "cpu"
    assert results["env"]["blocked_imports"] == ["intake", "zarr"]
    assert results["env"]["store_module"].startswith("shim")  # the GPU machine's path: no zarr
    for part in PARTS:
        entry = results["parts"][part]
        assert entry["status"] == "ok", (part, entry.get("error"), entry.get("traceback"))
        numbers = _numbers(entry["measurements"])
        assert numbers and all(math.isfinite(v) for v in numbers), (part, entry["measurements"])
        assert not [k for k in entry["measurements"] if k.endswith("error")], (part, entry["measurements"])
    pretrain = results["parts"]["pretrain"]["measurements"]
    for variant in ("fp32_eager", "bf16_autocast", "bf16_compile", "bf16_compile_fused_adamw"):
        assert pretrain[f"{variant} samples/s"]["value"] > 0
    assert any(k.startswith("epoch s") for k in pretrain)
    assert "in-process" in results["parts"]["supply"]["store"]
    finetune = results["parts"]["finetune"]["measurements"]
    assert {"LSTM-SL s/epoch", "StefaLand-resConn s/epoch", "neuralhydrology-style nn.LSTM s/epoch"} <= set(finetune)
    foreign = results["parts"]["foreign"]["measurements"]
    assert {"TerraMind-resConn / StefaLand-resConn", "PrithviWxC-resConn / StefaLand-resConn"} <= set(foreign)
    assert results["parts"]["ddp"]["backend"] == "gloo"
    # one printed line per measurement
    printed = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(printed) >= sum(len(results["parts"][p]["measurements"]) for p in PARTS)
    assert wall < 60, f"the CPU smoke took {wall:.0f} s (budget: one minute)"
