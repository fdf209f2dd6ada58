"""StefaLand's GPU suite: one unattended run of every GPU path at the paper's sizes.

    python benchmarks/gpu_suite.py --json gpu_suite.json          # on a CUDA machine, ~6 min on one H200
    python benchmarks/gpu_suite.py --cpu-smoke --json smoke.json  # every part at toy size on CPU, < 1 min

One printed line per measurement (``[part] name  value unit  (note)``) and a JSON of all of them.
Each part runs under its own time box; a part that fails or runs out of time is recorded with its
error and the suite goes on to the next, and the JSON is rewritten after every part, so a killed
run keeps what it measured.

Parts (``--parts`` selects):

* ``pretrain`` — masked-reconstruction pretraining at the paper's size (d 256, 4 heads, 4 layers,
  FFN 512, sequence 365, batch 256, Table C1: 6 forcings and 16 static attributes, the trainer's own
  ``PretrainObjective`` step: autocast forward, backward, clip 1.0, AdamW): samples/s and peak
  memory for fp32 eager, bf16 autocast, bf16 + ``torch.compile``, bf16 + compile + fused AdamW;
  then the epoch time that implies for 4,229 sites × 40 years next to the paper's 16,000 s on
  6×V100. Samples per epoch, stated in the JSON: the main figure takes one 365-day sample per
  site-year (4,229 × 40 = 169,160 samples: every day seen once); also given for hydroDL's
  99 %-coverage rule and for StefaLand's default ``samples_per_site: 1`` (4,229 samples).
* ``supply`` — the pretraining loader (``ShardBatches.batch``, the trainer's code) from a local
  store against the GPU step rate: one process, + pinned host→device copy, + 4 worker threads.
  The store is written with zarr to a temporary folder when zarr is importable; otherwise (the GPU
  machine has no zarr) the same layout is built in process from NumPy arrays — stated in the JSON.
* ``finetune`` — LSTM-SL and StefaLand-resConn (frozen encoder) training steps at the paper's
  settings (seq 365, hidden 256, dropout 0.2, batch 64, Adadelta, RMSE, clip 1.0) on a 531-site
  virtual CAMELS (5 forcings, 17 attributes, 1989-10-01..2008-09-30 = 6,940 days): s/epoch with
  hydroDL's iterations-per-epoch rule (the trainer's default), next to the paper's 12 s / 30 s on
  2×V100; and LSTM-SL against a neuralhydrology-style ``nn.LSTM`` (cudalstm) of the same hidden size.
* ``foreign`` — the paper's foreign-encoder rows against StefaLand-resConn, timed in the same part
  with the same heads, batch and optimiser: TerraMind-resConn (``base``; 16 x 16 DEM/LULC/NDVI
  patches as ``data build`` cuts them) frozen, where a site is encoded once and then served from
  the cache, and unfrozen ("TerraMind + finetuning"), and PrithviWxC-resConn (``2300m``, frozen;
  one encoder pass per site-day, so measured on ``wxc_batch`` x ``wxc_seq`` site-days and scaled
  to the epoch); each as s/epoch and as a multiple of StefaLand-resConn's. A model whose package
  is missing is recorded as "not available". The CPU smoke uses the tiny variants.
* ``hbv`` — HBV 1.1p forward + backward, 531 basins × 730 days (365 warm-up), nmul 16, eager and
  with the daily step compiled; hydrodl2 on the same device only when it is importable.
* ``ddp`` — ``stefaland.pretrain.distributed``: one NCCL process group (gloo in the CPU smoke, two
  processes), one DDP step of the pretraining objective, then the documented teardown
  (``dist.barrier(); del model, opt; gc.collect(); dist.destroy_process_group()``), in a child process.

Imports: the GPU machine has torch, numpy, pandas, xarray, scipy, pyyaml but no pydantic, zarr,
intake or fsspec and no package index. The suite imports StefaLand's modules one by one (package
``__init__`` files of ``stefaland.pretrain``/``stefaland.finetune`` pull in zarr and are skipped);
pydantic (``stefaland.model.config``) and fsspec (``stefaland.fileio``) are installed, when
missing, from the wheels in ``benchmarks/wheels/`` (cp312, manylinux x86_64) into a temporary
folder with ``pip install --no-index``; ``stefaland.store`` (zarr) is replaced, when it cannot be
imported, by its two functions the loader uses, on an in-memory dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "benchmarks" / "wheels"
PARTS = ("pretrain", "supply", "finetune", "foreign", "hbv", "ddp")

PAPER = {
    "pretrain_epoch_s": 16_000, "pretrain_gpus": "6x V100", "finetune_lstm_epoch_s": 12,
    "finetune_resconn_epoch_s": 30, "finetune_gpus": "2x V100",
}
CORPUS_SITES, CORPUS_YEARS = 4229, 40

# Paper sizes (GPU) and toy sizes (--cpu-smoke). Time boxes in seconds per part (GPU total ≈ 330 s).
FULL = dict(d_model=256, n_heads=4, n_layers=4, d_ff=512, seq=365, batch=256, n_dyn=6, n_static=16,
            steps=20, warmup=3, ft_sites=531, ft_days=6940, ft_dyn=5, ft_static=17, ft_batch=64, ft_hidden=256,
            ft_steps=15, hbv_basins=531, hbv_days=730, hbv_warmup=365, nmul=16, hbv_repeats=3,
            sup_sites=1024, sup_days=14610, sup_shard=256, sup_batches=24, ddp_world=1,
            tm_variant="base", wxc_variant="2300m", wxc_batch=2, wxc_seq=2,
            box={"pretrain": 170, "supply": 45, "finetune": 80, "foreign": 120, "hbv": 75, "ddp": 60},
            compile_backend="inductor")
SMOKE = dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, seq=20, batch=8, n_dyn=6, n_static=16,
             steps=2, warmup=1, ft_sites=12, ft_days=120, ft_dyn=5, ft_static=17, ft_batch=4, ft_hidden=8,
             ft_steps=2, hbv_basins=4, hbv_days=40, hbv_warmup=20, nmul=2, hbv_repeats=1,
             sup_sites=32, sup_days=200, sup_shard=8, sup_batches=4, ddp_world=2,
             tm_variant="tiny", wxc_variant="tiny", wxc_batch=2, wxc_seq=4,
             box={"pretrain": 40, "supply": 20, "finetune": 20, "foreign": 20, "hbv": 20, "ddp": 40},
             compile_backend="eager")


# --------------------------------------------------------------------------- imports


def _bootstrap_wheels(record: dict) -> None:
    """Install pydantic / fsspec from benchmarks/wheels when this Python lacks them: ``pip install
    --no-index`` into a temporary folder, or, without pip, by unpacking the wheels there (a wheel
    is a zip of importable files). DDP children reuse the parent's folder (``GPU_SUITE_WHEEL_DIR``)."""
    reuse = os.environ.get("GPU_SUITE_WHEEL_DIR")
    if reuse and Path(reuse).is_dir() and reuse not in sys.path:
        sys.path.insert(0, reuse)
        importlib.invalidate_caches()
    missing = []
    for module, package in (("pydantic", "pydantic"), ("fsspec", "fsspec")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    record["missing_packages"] = missing
    if not missing:
        return
    target = Path(tempfile.mkdtemp(prefix="gpu_suite_wheels_"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(WHEELS),
               "--target", str(target), *missing]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        rc, err = done.returncode, done.stderr[-2000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        rc, err = -1, str(exc)
    how = "pip install --no-index"
    if rc != 0:  # no pip: unpack every wheel of the folder (pure Python + pydantic_core for cp312)
        import zipfile

        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        for wheel in sorted(WHEELS.glob("*.whl")):
            if "-none-any" in wheel.name or f"-{tag}-" in wheel.name:
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(target)
        how = f"unpacked (pip failed: {err.strip()[-300:]})"
    record["wheel_install"] = {"packages": missing, "how": how, "folder": str(target)}
    sys.path.insert(0, str(target))
    os.environ["GPU_SUITE_WHEEL_DIR"] = str(target)
    importlib.invalidate_caches()


def _placeholder(package: str) -> None:
    """Register ``package`` without running its ``__init__`` (which imports zarr), so its
    submodules import one by one."""
    if package in sys.modules:
        return
    module = types.ModuleType(package)
    module.__path__ = [str(REPO / Path(*package.split(".")))]
    module.__package__ = package
    sys.modules[package] = module


def _store_shim() -> str:
    """``stefaland.store`` when importable; otherwise its two functions the loader uses."""
    try:
        importlib.import_module("stefaland.store")
        return "stefaland.store"
    except ImportError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    import numpy as np

    shim = types.ModuleType("stefaland.store")

    def shard_slices(dataset):
        size, n = int(dataset.attrs.get("shard_size", dataset.sizes["site"])), dataset.sizes["site"]
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def read_shard(dataset, index, time=None):
        part = dataset.isel(site=shard_slices(dataset)[index])
        if time is not None:
            part = part.sel(time=time)
        return types.SimpleNamespace(sites=part["site"].values.astype(str), dynamic=np.asarray(part["dynamic"].values),
                                     static=np.asarray(part["static"].values), target=None)

    shim.shard_slices, shim.read_shard = shard_slices, read_shard
    sys.modules["stefaland.store"] = shim
    return f"shim (stefaland.store not importable: {reason})"


class _Blocked:
    """``GPU_SUITE_BLOCK=zarr,intake``: make these imports fail, as on the GPU machine (the test's hook)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} blocked by GPU_SUITE_BLOCK (simulating the GPU machine)")
        return None


def setup_imports(env: dict) -> None:
    blocked = {n for n in os.environ.get("GPU_SUITE_BLOCK", "").split(",") if n}
    if blocked and not any(isinstance(f, _Blocked) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocked(blocked))
        env["blocked_imports"] = sorted(blocked)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    _bootstrap_wheels(env)
    for package in ("stefaland.pretrain", "stefaland.finetune", "stefaland.finetune.models"):
        _placeholder(package)
    env["store_module"] = _store_shim()


# --------------------------------------------------------------------------- recording


class Suite:
    def __init__(self, json_path: Path | None, smoke: bool, device) -> None:
        self.json_path, self.smoke, self.device = json_path, smoke, device
        self.results: dict = {"smoke": smoke, "env": {}, "parts": {}}
        self.started = time.perf_counter()

    def record(self, part: str, name: str, value, unit: str = "", note: str = "") -> None:
        entry = self.results["parts"].setdefault(part, {"status": "running", "measurements": {}})
        entry["measurements"][name] = {"value": value, "unit": unit, **({"note": note} if note else {})}
        shown = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        print(f"[{part:8s}] {name:46s} {shown:>12s} {unit}{'  (' + note + ')' if note else ''}", flush=True)

    def info(self, part: str, key: str, value) -> None:
        self.results["parts"].setdefault(part, {"status": "running", "measurements": {}})[key] = value

    def save(self) -> None:
        self.results["wall_s"] = round(time.perf_counter() - self.started, 2)
        if self.json_path:
            self.json_path.write_text(json.dumps(self.results, indent=1, default=str))


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_box(seconds: float):
    """Raise PartTimeout in the main thread after ``seconds`` (interrupts Python code, e.g. compiling)."""
    def fire(signum, frame):
        raise PartTimeout(f"time box of {seconds:.0f} s exceeded")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), else this process's peak RSS."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finetune_step(model, batches: list):
    """One finetuning update as the trainer makes it (Adadelta, RMSE, gradient norm clipped at 1),
    cycling through ``batches``; only the parameters that train (a frozen encoder's do not)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adadelta(params, lr=1.0)
    counter = [0]

    def step() -> None:
        dyn, sta, target = batches[counter[0] % len(batches)]
        counter[0] += 1
        loss = torch.sqrt(torch.mean((model(dyn, sta) - target) ** 2) + 1e-8)  # RMSE
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def time_finetuning(make, batches: list, device, steps: int, budget_s: float) -> tuple[float, int, float]:
    """(seconds a step, steps done, peak MiB) of finetuning the model ``make()`` builds, from seed 0;
    the model and its optimiser are dropped before the next one is timed."""
    import torch

    torch.manual_seed(0)
    model = make().to(device).train()
    step = finetune_step(model, batches)
    reset_peak(device)
    seconds, done = timed_steps(step, device, 1, steps, time.perf_counter() + budget_s)
    peak = peak_mib(device)
    del step, model
    return seconds, done, peak


def timed_steps(step, device, warmup: int, steps: int, deadline: float) -> tuple[float, int]:
    """Seconds per step (mean over up to ``steps`` after ``warmup``), stopping early at ``deadline``."""
    for _ in range(warmup):
        step()
    sync(device)
    start, done = time.perf_counter(), 0
    while done < steps and (done < 2 or time.perf_counter() < deadline):
        step()
        done += 1
    sync(device)
    return (time.perf_counter() - start) / done, done


# --------------------------------------------------------------------------- pretraining


def pretrain_batch(size: dict, device, seed: int = 0):
    """A normalised pretraining batch with CVGM masks, as ``ShardBatches`` makes it."""
    import numpy as np
    import torch

    from stefaland.pretrain.masking import StaticGrouping, dynamic_mask, static_mask

    rng = np.random.default_rng(seed)
    b, t = size["batch"], size["seq"]
    dynamic = rng.standard_normal((b, t, size["n_dyn"]), dtype=np.float32)
    dynamic[rng.random(dynamic.shape) < 0.02] = np.nan  # some missing days
    static = rng.standard_normal((b, size["n_static"]), dtype=np.float32)
    groups = ["climate"] * 2 + ["soil"] * 3 + ["topography"] * 3 + [""] * (size["n_static"] - 8)
    grouping = StaticGrouping.from_metadata(groups, [False] * size["n_static"])
    d_mask = dynamic_mask(rng, b, t, size["n_dyn"], 0.5, min(30, t // 3), min(90, t // 2))
    s_mask = static_mask(rng, b, grouping, 0.5)
    return [torch.as_tensor(x).to(device) for x in (dynamic, static, d_mask, s_mask)]


def pretrain_objective(size: dict, device):
    import torch

    from stefaland.model import MaskedReconstructionModel, ModelConfig
    from stefaland.pretrain.loss import ReconstructionLoss
    from stefaland.pretrain.objective import PretrainObjective

    torch.manual_seed(0)
    config = ModelConfig(d_model=size["d_model"], n_heads=size["n_heads"], n_layers=size["n_layers"], d_ff=size["d_ff"])
    model = MaskedReconstructionModel(size["n_dyn"], size["n_static"], config)
    return PretrainObjective(model, ReconstructionLoss(size["n_dyn"], size["n_static"])).to(device)


def part_pretrain(suite: Suite, size: dict, deadline: float) -> None:
    import torch

    device = suite.device
    objective = pretrain_objective(size, device)
    n_params = sum(p.numel() for p in objective.parameters())
    suite.record("pretrain", "parameters", n_params, "", f"d {size['d_model']}, {size['n_heads']} heads, "
                 f"{size['n_layers']} layers, FFN {size['d_ff']}, seq {size['seq']}, batch {size['batch']}, "
                 f"{size['n_dyn']} dyn / {size['n_static']} static")
    batches = [pretrain_batch(size, device, seed) for seed in range(2)]
    compiled = None
    variants = [("fp32_eager", False, False, False), ("bf16_autocast", True, False, False),
                ("bf16_compile", True, True, False), ("bf16_compile_fused_adamw", True, True, True)]
    best = 0.0
    for index, (name, bf16, use_compile, fused) in enumerate(variants):
        remaining = deadline - time.perf_counter()
        share = remaining / (len(variants) - index)
        try:
            runner = objective
            if use_compile:
                if compiled is None:
                    compiled = torch.compile(objective, backend=suite.results["env"]["compile_backend"])
                runner = compiled
            params = [p for p in objective.parameters() if p.requires_grad]
            kwargs = {"fused": True} if fused else {}
            optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs)
            counter = [0]

            def step(runner=runner, optimizer=optimizer, params=params, counter=counter, bf16=bf16) -> None:
                tensors = batches[counter[0] % len(batches)]
                counter[0] += 1
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    output = runner(*tensors, 1)
                optimizer.zero_grad(set_to_none=True)
                output.total.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()

            reset_peak(device)
            started = time.perf_counter()
            step()  # the first step: compiles when compiled
            sync(device)
            first = time.perf_counter() - started
            per_step, done = timed_steps(step, device, size["warmup"] - 1, size["steps"],
                                         time.perf_counter() + max(share - first, 1.0))
            rate = size["batch"] / per_step
            best = max(best, rate)
            suite.record("pretrain", f"{name} samples/s", rate, "samples/s", f"{done} steps, {per_step * 1e3:.1f} ms/step")
            suite.record("pretrain", f"{name} peak memory", peak_mib(device), "MiB",
                         "max allocated" if device.type == "cuda" else "process peak RSS")
            if use_compile:
                suite.record("pretrain", f"{name} first step", first, "s", "includes compiling")
            del step, optimizer  # the next variant starts without this one's optimiser state
        except PartTimeout:
            raise
        except Exception as exc:  # one variant failing (e.g. fused AdamW on an old torch) keeps the others
            suite.record("pretrain", f"{name} error", f"{type(exc).__name__}: {str(exc)[:200]}")
    if best <= 0:
        raise RuntimeError("no pretraining variant ran")
    suite.info("pretrain", "best_samples_per_s", best)
    site_years = CORPUS_SITES * CORPUS_YEARS
    coverage = min(256 * 365 / (CORPUS_SITES * CORPUS_YEARS * 365.25), 0.99)  # hydroDL rule at batch 256
    hydrodl_samples = math.ceil(math.log(0.01) / math.log(1 - coverage)) * 256
    assumptions = {"one 365-day sample per site-year": site_years, "hydroDL 99 % coverage rule (batch 256)": hydrodl_samples,
                   "StefaLand default samples_per_site 1": CORPUS_SITES}
    suite.info("pretrain", "samples_per_epoch_assumptions", assumptions)
    for label, samples in assumptions.items():
        epoch = samples / best
        suite.record("pretrain", f"epoch s ({label})", epoch, "s",
                     f"{samples:,} samples at the best rate; paper {PAPER['pretrain_epoch_s']:,} s on {PAPER['pretrain_gpus']}"
                     f" = {PAPER['pretrain_epoch_s'] / epoch:.1f}x this")


# --------------------------------------------------------------------------- batch supply


def supply_store(size: dict, folder: Path):
    """A pretraining store in the StefaLand layout; on disk with zarr when importable."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    rng = np.random.default_rng(0)
    n, t, nd, ns = size["sup_sites"], size["sup_days"], size["n_dyn"], size["n_static"]
    dynamic = rng.standard_normal((n, t, nd), dtype=np.float32) * 3 + 10
    static = rng.standard_normal((n, ns), dtype=np.float32)
    ds = xr.Dataset(
        {"dynamic": (("site", "time", "dvar"), dynamic), "static": (("site", "svar"), static),
         "dynamic_mean": ("dvar", np.full(nd, 10.0)), "dynamic_std": ("dvar", np.full(nd, 3.0)),
         "static_mean": ("svar", np.zeros(ns)), "static_std": ("svar", np.ones(ns))},
        coords={"site": [f"s{i:05d}" for i in range(n)], "time": pd.date_range("1980-01-01", periods=t),
                "dvar": [f"d{i}" for i in range(nd)], "svar": [f"a{i}" for i in range(ns)],
                "svar_group": ("svar", ["soil"] * 3 + ["topography"] * 3 + [""] * (ns - 6))},
        attrs={"shard_size": size["sup_shard"], "stefaland_complete": True})
    try:
        import zarr  # noqa: F401
    except ImportError as exc:
        return ds, f"in-process NumPy arrays in the store layout (zarr not importable: {exc})"
    import warnings

    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
    path = folder / "store.zarr"
    ds.chunk({"site": size["sup_shard"], "time": -1}).to_zarr(path, mode="w", consolidated=False)
    return xr.open_zarr(path, consolidated=False), f"zarr on local disk ({path.parent})"


def part_supply(suite: Suite, size: dict, deadline: float) -> None:
    import concurrent.futures

    import torch

    from stefaland.pretrain.config import PretrainConfig
    from stefaland.pretrain.data import ShardBatches, store_schema

    device = suite.device
    with tempfile.TemporaryDirectory(prefix="gpu_suite_store_") as folder:
        started = time.perf_counter()
        ds, kind = supply_store(size, Path(folder))
        suite.info("supply", "store", kind)
        suite.record("supply", "store ready", time.perf_counter() - started, "s",
                     f"{size['sup_sites']} sites x {size['sup_days']} days, shards of {size['sup_shard']}; {kind.split(' (')[0]}")
        n = size["sup_batches"]
        gpu = suite.results["parts"].get("pretrain", {}).get("best_samples_per_s")
        cases = {"sps 1": 1.0, "sps 16": 16.0}  # samples_per_site 1 (default): a new shard every step; 16: a shard serves 16 steps
        budget = max(deadline - time.perf_counter(), 6.0) / (3 * len(cases))
        best_default = 0.0
        for label, per_site in cases.items():
            config = PretrainConfig.model_validate({"data": {"seq_len": size["seq"], "batch_size": size["batch"],
                                                              "samples_per_site": per_site}})
            data = ShardBatches(ds, store_schema(ds, config, "bench"), config)
            steps = data.steps_per_epoch
            order = [(k // steps + 1, k % steps) for k in range(n)]  # epoch 0 is the warm-up

            data.batch(0, 0)

            def plain(steps_: int, order=order, data=data):
                end = time.perf_counter() + budget
                for k, (epoch, step) in enumerate(order[:steps_]):
                    if k > 1 and time.perf_counter() > end:
                        return
                    yield data.batch(epoch, step)

            def to_device(batch):
                tensors = [torch.from_numpy(x) for x in (batch.dynamic, batch.static, batch.dynamic_mask, batch.static_mask)]
                if device.type == "cuda":
                    tensors = [t.pin_memory().to(device, non_blocking=True) for t in tensors]
                    torch.cuda.current_stream(device).synchronize()
                return tensors

            def pinned(steps_: int):
                for batch in plain(steps_):
                    yield to_device(batch)

            def threaded(steps_: int, workers: int = 4, order=order, data=data):
                # ShardBatches is deterministic per (epoch, step): workers may build different steps at once
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    yield from pool.map(lambda es: to_device(data.batch(*es)), order[:steps_])

            def run(fetch) -> float:
                start, count = time.perf_counter(), 0
                for _ in fetch(n):
                    count += 1
                return count * size["batch"] / (time.perf_counter() - start)

            rates = {"one process": run(plain), "one process + pinned H2D copy": run(pinned),
                     "4 worker threads + pinned H2D copy": run(threaded)}
            if per_site == 1.0:
                best_default = max(rates.values())
            for name, rate in rates.items():
                note = f"{rate / gpu:.2f}x the best pretraining step rate {gpu:,.0f}/s" if gpu else "no step rate measured"
                suite.record("supply", f"{label}: {name}", rate, "samples/s", note)
        suite.info("supply", "cases", {"sps 1": "data.samples_per_site 1 (the default): a new shard is read for every step",
                                       "sps 16": "data.samples_per_site 16: each shard read serves 16 steps"})
        if gpu:
            suite.record("supply", "loader (default config, best) / GPU rate", best_default / gpu, "x",
                         "GPU never waits" if best_default >= gpu else
                         "the GPU would WAIT on the loader at samples_per_site 1: raise it or add lanes/workers")


# --------------------------------------------------------------------------- finetuning


def hydrodl_iterations(n_sites: int, n_days: int, batch: int, seq: int) -> int:
    """The trainer's default batches per epoch (``WindowSampler``: 99 % of (site, day) drawn)."""
    coverage = min(batch * seq / (n_sites * max(n_days - seq + seq, 1)), 0.99)
    return max(1, math.ceil(math.log(0.01) / math.log(1.0 - coverage)))


class NHStyleLSTM:
    """neuralhydrology's ``cudalstm``: LSTM(inputs → h) on [forcings, statics], output dropout, Linear head."""

    @staticmethod
    def build(n_in: int, hidden: int):
        import torch
        from torch import nn

        class CudaLSTM(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(n_in, hidden, batch_first=True)
                self.dropout = nn.Dropout(0.4)
                self.head = nn.Linear(hidden, 1)

            def forward(self, dynamic, static):
                x = torch.cat([torch.nan_to_num(dynamic),
                               torch.nan_to_num(static).unsqueeze(1).expand(-1, dynamic.shape[1], -1)], -1)
                h, _ = self.lstm(x)
                return self.head(self.dropout(h)).squeeze(-1)

        return CudaLSTM()


def part_finetune(suite: Suite, size: dict, deadline: float) -> None:
    import numpy as np
    import torch

    from stefaland.finetune.models.lstm import LSTMSL
    from stefaland.finetune.models.stefaland import DirectModel, EncoderFeatures, ResConnNetwork
    from stefaland.model import ModelConfig, StefaLandEncoder

    device = suite.device
    nd, ns, b, seq, h = size["ft_dyn"], size["ft_static"], size["ft_batch"], size["seq"], size["ft_hidden"]
    iterations = hydrodl_iterations(size["ft_sites"], size["ft_days"], b, seq)
    suite.record("finetune", "batches per epoch", iterations, "", f"hydroDL rule: {size['ft_sites']} sites x "
                 f"{size['ft_days']} days, batch {b}, seq {seq}")
    # A virtual CAMELS in memory; batches drawn as random (site, window) pairs.
    rng = np.random.default_rng(0)
    dyn_all = rng.standard_normal((size["ft_sites"], size["ft_days"], nd), dtype=np.float32)
    sta_all = rng.standard_normal((size["ft_sites"], ns), dtype=np.float32)

    def batch(seed: int):
        r = np.random.default_rng(seed)
        sites, starts = r.integers(0, size["ft_sites"], b), r.integers(0, size["ft_days"] - seq + 1, b)
        dyn = dyn_all[sites[:, None], starts[:, None] + np.arange(seq)]
        target = dyn[..., 0] * 0.5 + sta_all[sites, :1]
        return [torch.as_tensor(x).to(device) for x in (dyn, sta_all[sites], target)]

    batches = [batch(s) for s in range(3)]

    def lstm_sl():
        return LSTMSL(nd, ns, h, 0.2)

    def resconn():
        config = ModelConfig(d_model=size["d_model"], n_heads=size["n_heads"], n_layers=size["n_layers"],
                             d_ff=size["d_ff"], decoder="lstm")
        features = EncoderFeatures(StefaLandEncoder(nd, ns, config), "none", True, range(nd), range(ns))
        return DirectModel(ResConnNetwork(features, nd, ns, h, 0.2))

    models = [("LSTM-SL", lstm_sl, PAPER["finetune_lstm_epoch_s"]), ("StefaLand-resConn", resconn, PAPER["finetune_resconn_epoch_s"]),
              ("neuralhydrology-style nn.LSTM", lambda: NHStyleLSTM.build(nd + ns, h), None)]
    per_step: dict[str, float] = {}
    for index, (name, make, paper) in enumerate(models):
        share = (deadline - time.perf_counter()) / (len(models) - index)
        try:
            seconds, done, peak = time_finetuning(make, batches, device, size["ft_steps"], share)
            per_step[name] = seconds
            epoch = seconds * iterations
            note = f"{done} steps of {seconds * 1e3:.1f} ms"
            if paper:
                note += f"; paper {paper} s/epoch on {PAPER['finetune_gpus']} = {paper / epoch:.2f}x this"
            suite.record("finetune", f"{name} s/epoch", epoch, "s", note)
            suite.record("finetune", f"{name} peak memory", peak, "MiB")
        except PartTimeout:
            raise
        except Exception as exc:
            suite.record("finetune", f"{name} error", f"{type(exc).__name__}: {str(exc)[:200]}")
    if "LSTM-SL" in per_step and "neuralhydrology-style nn.LSTM" in per_step:
        suite.record("finetune", "LSTM-SL / nh-style step time", per_step["LSTM-SL"] / per_step["neuralhydrology-style nn.LSTM"],
                     "x", "LSTM-SL has a 256-wide input layer: ~1.8x the LSTM arithmetic at hidden 256")
    if "LSTM-SL" not in per_step:
        raise RuntimeError("LSTM-SL did not run")


def part_foreign(suite: Suite, size: dict, deadline: float) -> None:
    """TerraMind-resConn and PrithviWxC-resConn finetuning steps against StefaLand-resConn's (module docstring)."""
    import numpy as np
    import torch

    from stefaland.finetune.models.foreign import PrithviWxCFeatures, TerraMindFeatures, availability
    from stefaland.finetune.models.stefaland import DirectModel, EncoderFeatures, ResConnNetwork
    from stefaland.finetune.models.terramind import TerraMindEncoder
    from stefaland.model import ModelConfig, StefaLandEncoder

    device = suite.device
    nd, ns, b, seq, h = size["ft_dyn"], size["ft_static"], size["ft_batch"], size["seq"], size["ft_hidden"]
    iterations = hydrodl_iterations(size["ft_sites"], size["ft_days"], b, seq)
    patch = 16 * 16
    rng = np.random.default_rng(0)
    sites = 8  # distinct patches a batch draws from (the cache's hit rate is what a frozen run sees)
    patches = np.concatenate([rng.uniform(0, 3000, (sites, patch)), rng.choice([1, 2, 5, 11], (sites, patch)),
                              rng.uniform(0, 0.9, (sites, patch))], axis=1).astype(np.float32)
    mean = np.concatenate([np.zeros(ns), patches.mean(0)])
    std = np.concatenate([np.ones(ns), np.where(patches.std(0) > 0, patches.std(0), 1.0)])

    def batch(seed: int, n: int = b, days: int = seq):
        r = np.random.default_rng(seed)
        dyn = r.standard_normal((n, days, nd), dtype=np.float32)
        sta = np.concatenate([r.standard_normal((n, ns), dtype=np.float32),
                              (patches[r.integers(0, sites, n)] - mean[ns:]) / std[ns:]], axis=1).astype(np.float32)
        return [torch.as_tensor(x).to(device) for x in (dyn, sta, dyn[..., 0] * 0.5)]

    def stefaland_resconn():
        config = ModelConfig(d_model=size["d_model"], n_heads=size["n_heads"], n_layers=size["n_layers"],
                             d_ff=size["d_ff"], decoder="lstm")
        features = EncoderFeatures(StefaLandEncoder(nd, ns, config), "none", True, range(nd), range(ns))
        return DirectModel(ResConnNetwork(features, nd, ns + 3 * patch, h, 0.2, static_inputs=range(ns)))

    def terramind(freeze: bool):
        def make():
            columns = {m: list(range(ns + k * patch, ns + (k + 1) * patch)) for k, m in enumerate(("dem", "lulc", "ndvi"))}
            encoder = TerraMindEncoder(size["tm_variant"], tuple(columns))
            features = TerraMindFeatures(encoder, "none", freeze, columns, 16, mean, std)
            return DirectModel(ResConnNetwork(features, nd, ns + 3 * patch, h, 0.2, static_inputs=range(ns)))
        return make

    def prithviwxc():
        from stefaland.finetune.models.prithviwxc import PrithviWxCEncoder

        encoder = PrithviWxCEncoder(size["wxc_variant"])
        features = PrithviWxCFeatures(encoder, "none", True, [1, 2, 3], 0, (np.array([10.0, 0.0, 60.0]), 500.0),
                                      (np.array([8.0, 8.0, 20.0]), 400.0))
        return DirectModel(ResConnNetwork(features, nd, ns + 3 * patch, h, 0.2, static_inputs=range(ns)))

    wxc_days = size["wxc_batch"] * size["wxc_seq"]
    models = [("StefaLand-resConn", stefaland_resconn, 1.0, None), ("TerraMind-resConn", terramind(True), 1.0, None),
              ("TerraMind + finetuning", terramind(False), 1.0, None),
              ("PrithviWxC-resConn", prithviwxc, b * seq / wxc_days, "prithviwxc_resconn")]
    per_step: dict[str, float] = {}
    for index, (name, make, scale, registry_name) in enumerate(models):
        missing = availability(registry_name) if registry_name else None
        if missing:
            suite.record("foreign", f"{name} not available", missing)
            continue
        share = (deadline - time.perf_counter()) / (len(models) - index)
        small = scale != 1.0
        batches = [batch(s, size["wxc_batch"], size["wxc_seq"]) if small else batch(s) for s in range(3)]
        try:
            seconds, done, peak = time_finetuning(make, batches, device, size["ft_steps"], share)
            per_step[name] = seconds * scale
            note = f"{done} steps of {seconds * 1e3:.1f} ms"
            if small:
                note += f" on {wxc_days} site-days, x{scale:.0f} to a batch of {b} x {seq} days"
            suite.record("foreign", f"{name} s/epoch", per_step[name] * iterations, "s", note)
            suite.record("foreign", f"{name} peak memory", peak, "MiB")
        except PartTimeout:
            raise
        except Exception as exc:
            suite.record("foreign", f"{name} error", f"{type(exc).__name__}: {str(exc)[:200]}")
    if "StefaLand-resConn" not in per_step:
        raise RuntimeError("StefaLand-resConn did not run")
    for name, seconds in per_step.items():
        if name != "StefaLand-resConn":
            suite.record("foreign", f"{name} / StefaLand-resConn", seconds / per_step["StefaLand-resConn"], "x",
                         "the paper: the foreign encoders are orders of magnitude costlier")


# --------------------------------------------------------------------------- HBV


def part_hbv(suite: Suite, size: dict, deadline: float) -> None:
    import torch

    from stefaland.hbv import HBV11p, hbv_step

    device = suite.device
    n_time, n_basin = size["hbv_days"], size["hbv_basins"]
    model = HBV11p(nmul=size["nmul"], warmup_days=size["hbv_warmup"])
    g = torch.Generator().manual_seed(0)
    wet = torch.rand(n_time, n_basin, generator=g) < 0.4
    precipitation = torch.where(wet, torch.rand(n_time, n_basin, generator=g) * 25, 0.0)
    day = torch.arange(n_time, dtype=torch.float32).unsqueeze(-1)
    temperature = 8 - 12 * torch.cos(2 * torch.pi * day / 365) + 3 * torch.randn(n_time, n_basin, generator=g)
    pet = torch.clamp(1.5 + 0.15 * temperature, min=0.05)
    raw = torch.randn(n_time, n_basin, model.n_outputs, generator=g)
    inputs = [x.to(device) for x in (precipitation, temperature, pet, raw)]

    def step() -> None:
        leaf = inputs[3].detach().requires_grad_()
        out = model(*inputs[:3], leaf)
        out.streamflow.square().mean().backward()

    label = f"{n_basin} basins x {n_time} days (warm-up {size['hbv_warmup']}), nmul {size['nmul']}"
    reset_peak(device)
    eager, done = timed_steps(step, device, 1, size["hbv_repeats"], time.perf_counter() + (deadline - time.perf_counter()) / 3)
    suite.record("hbv", "eager fwd+bwd", eager, "s", f"{label}; {done} runs")
    suite.record("hbv", "eager peak memory", peak_mib(device), "MiB")
    try:
        model.step = torch.compile(hbv_step, dynamic=False, backend=suite.results["env"]["compile_backend"])
        compiled, done = timed_steps(step, device, 1, size["hbv_repeats"], deadline - 2)
        suite.record("hbv", "compiled step fwd+bwd", compiled, "s", f"eager/compiled {eager / compiled:.2f}x")
    except PartTimeout:  # compiling ran past the box: the eager figures stand
        suite.record("hbv", "compiled step error", "compiling ran past the part's time box")
    except Exception as exc:
        suite.record("hbv", "compiled step error", f"{type(exc).__name__}: {str(exc)[:200]}")
    try:
        import hydrodl2  # noqa: F401
        suite.info("hbv", "hydrodl2", f"importable ({getattr(hydrodl2, '__version__', '?')}); comparison not wired "
                                      "(run benchmarks/bench_hbv.py-style timing of its HBV_1_1p by hand)")
    except ImportError:
        suite.info("hbv", "hydrodl2", "not importable on this machine: no comparison")


# --------------------------------------------------------------------------- DDP


def ddp_child(smoke: bool, result_path: str) -> int:
    """One rank: join the group, one DDP step of the pretraining objective, documented teardown."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if "stefaland.store" not in sys.modules:  # a fresh process (a fork has them already)
        setup_imports({})
    from stefaland.pretrain import distributed

    context = distributed.context_from_env()
    cuda = torch.cuda.is_available() and not smoke
    device = torch.device("cuda", context.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    times = {}
    started = time.perf_counter()
    distributed.init_process_group(context, device)
    if not dist.is_initialized():  # world size 1: init_process_group skips it; the suite wants one group
        dist.init_process_group("nccl" if cuda else "gloo", rank=context.rank, world_size=context.world_size)
    times["init_s"] = time.perf_counter() - started
    size = SMOKE if smoke else FULL
    objective = pretrain_objective(size, device)
    model = DistributedDataParallel(objective, device_ids=[device.index] if cuda else None)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
    tensors = pretrain_batch(size, device, seed=context.rank)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        output = model(*tensors, 1)
    opt.zero_grad(set_to_none=True)
    output.total.backward()
    opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    times["step_s"] = time.perf_counter() - started
    check = torch.tensor([float(output.total.detach())], device=device)
    dist.all_reduce(check)
    times["loss_sum"] = float(check.item())
    started = time.perf_counter()
    dist.barrier()
    del model, opt
    gc.collect()
    backend = dist.get_backend()
    dist.destroy_process_group()
    times["teardown_s"] = time.perf_counter() - started
    times["backend"] = backend
    if context.rank == 0:
        Path(result_path).write_text(json.dumps(times))
    return 0


def _fork_rank(rank: int, world: int, port: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    os._exit(ddp_child(True, result))


def part_ddp(suite: Suite, size: dict, deadline: float) -> None:
    """Ranks as fresh processes on CUDA (as torchrun starts them: CUDA must not be forked); in the CPU
    smoke as forks of this process, which has torch imported already (saves ~10 s per rank)."""
    import multiprocessing
    import socket

    world = size["ddp_world"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="gpu_suite_ddp_") as folder:
        result = Path(folder) / "ddp.json"
        started = time.perf_counter()
        outputs = []
        if suite.smoke:
            context = multiprocessing.get_context("fork")
            procs = [context.Process(target=_fork_rank, args=(rank, world, port, str(result))) for rank in range(world)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join(timeout=max(deadline - time.perf_counter(), 1))
            if any(proc.is_alive() for proc in procs):
                for proc in procs:
                    proc.kill()
                raise PartTimeout("DDP ranks did not finish in their time box")
            outputs = [(proc.exitcode, "(forked rank: output above)") for proc in procs]
        else:
            procs = []
            for rank in range(world):
                env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                           WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
                command = [sys.executable, __file__, "--ddp-child", str(result)]
                procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            for proc in procs:
                try:
                    out, _ = proc.communicate(timeout=max(deadline - time.perf_counter(), 1))
                except subprocess.TimeoutExpired:
                    for p in procs:
                        p.kill()
                    raise PartTimeout("DDP child processes did not finish in their time box") from None
                outputs.append((proc.returncode, out))
        wall = time.perf_counter() - started
        failed = [(rc, out) for rc, out in outputs if rc != 0]
        if failed or not result.exists():
            rc, out = failed[0] if failed else outputs[0]
            raise RuntimeError(f"DDP rank exited {rc}: {out[-1500:]}")
        times = json.loads(result.read_text())
    suite.info("ddp", "backend", times["backend"])
    suite.record("ddp", "process group init", times["init_s"], "s", f"{times['backend']}, world size {world}")
    suite.record("ddp", "one DDP step", times["step_s"], "s", "forward, backward (gradient all-reduce), AdamW")
    suite.record("ddp", "teardown", times["teardown_s"], "s", "barrier; del model, opt; gc.collect(); destroy_process_group()")
    suite.record("ddp", "all-reduced loss", times["loss_sum"], "", "finite = every rank stepped")
    suite.record("ddp", "ranks wall", wall, "s", "forked ranks" if suite.smoke else "including Python and torch start-up")


# --------------------------------------------------------------------------- main


def describe_env(suite: Suite, smoke: bool) -> None:
    import platform

    import torch

    env = suite.results["env"]
    env.update(python=platform.python_version(), torch=torch.__version__, device=str(suite.device),
               compile_backend=(SMOKE if smoke else FULL)["compile_backend"])
    if suite.device.type == "cuda":
        props = torch.cuda.get_device_properties(suite.device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    print(f"gpu_suite: {'CPU smoke (toy sizes)' if smoke else 'paper sizes'} on {env.get('gpu', suite.device)}, "
          f"torch {env['torch']}, Python {env['python']}; store module: {env.get('store_module')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at toy size on CPU (< 1 min)")
    parser.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time box")
    parser.add_argument("--ddp-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_child:
        return ddp_child(args.cpu_smoke, args.ddp_child)

    env: dict = {}
    setup_imports(env)
    import torch

    if args.cpu_smoke:
        torch.set_num_threads(1)  # toy sizes gain nothing from threads; on a loaded box OpenMP threads spin and stall
    elif not torch.cuda.is_available():
        print("gpu_suite: no CUDA device (use --cpu-smoke for the toy run on CPU)", file=sys.stderr)
        return 2
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    suite = Suite(args.json, args.cpu_smoke, device)
    suite.results["env"].update(env)
    describe_env(suite, args.cpu_smoke)
    size = SMOKE if args.cpu_smoke else FULL
    parts = {"pretrain": part_pretrain, "supply": part_supply, "finetune": part_finetune, "foreign": part_foreign,
             "hbv": part_hbv, "ddp": part_ddp}
    for name in [p for p in args.parts.split(",") if p]:
        box = size["box"][name] * args.budget_scale
        entry = suite.results["parts"].setdefault(name, {"status": "running", "measurements": {}})
        started = time.perf_counter()
        try:
            with time_box(box + 10):  # the part's own loops stop at the deadline; the alarm is the backstop
                parts[name](suite, size, started + box)
            entry["status"] = "ok"
        except Exception as exc:
            entry["status"] = "timeout" if isinstance(exc, PartTimeout) else "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            print(f"[{name:8s}] {entry['status'].upper()}: {entry['error'][:300]}", flush=True)
        entry["wall_s"] = round(time.perf_counter() - started, 2)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        suite.save()
    suite.save()
    statuses = {name: entry["status"] for name, entry in suite.results["parts"].items()}
    print(f"gpu_suite: {suite.results['wall_s']:.1f} s in all; parts {statuses}", flush=True)
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
