"""``train.compile: on``: real pretraining steps through ``torch.compile`` follow the eager run, and
checkpoints stay interchangeable (no ``_orig_mod.`` keys; a compiled run resumes eagerly and back).

Two backends: ``aot_eager`` traces the forward and backward exactly as inductor receives them but
generates no code (seconds), so the wiring is checked in every run; ``inductor`` is the real
compile (~2 min on 2 shared CPU cores with a cold inductor cache, ~20 s with a warm one), so it is
marked slow, as is the 2-process gloo run of a compiled DDP module (~2.5 min cold).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stefaland.fileio import join, read_bytes
from stefaland.pretrain import load_config, pretrain
from stefaland.pretrain.trainer import build_objective_and_optimiser
from stefaland.run.checkpoint import checkpoint_name, load_latest

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain_tiny.yaml"
RTOL = 1e-4


def _config(path: Path, compile: str, data: dict | None = None, **train: object) -> str:
    """The tiny config cut to 2 epochs × 2 steps on the virtual store (24 sites, batch 16)."""
    raw = yaml.safe_load(TINY.read_text())
    raw["data"].update({"samples_per_site": 1, **(data or {})})
    raw["train"].update({"epochs": 2, "log_every": 1, "checkpoint_every": 100, "eval_batches": 1,
                         "compile": compile, **train})
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _run(store: Path, config: str, out: Path, backend: str, resume: bool | None = False):
    real = torch.compile
    with pytest.MonkeyPatch.context() as patch:
        if backend != "inductor":
            patch.setattr(torch, "compile", functools.partial(real, backend=backend))
        torch._dynamo.reset()  # each run compiles afresh, as a new process would
        return pretrain(str(store), load_config(config), str(out), resume=resume, quiet=True)


def _train_losses(metrics: list[dict]) -> list[float]:
    return [float(row["loss"]) for row in metrics if row["kind"] == "train"]


def _assert_close_states(a: dict, b: dict) -> None:
    """Weights agree to 1 % of one AdamW step (lr 5e-3): Adam's g/sqrt(v) turns float-rounding
    differences in near-zero gradients into visible (~1e-6) weight differences."""
    assert list(a) == list(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=RTOL, atol=5e-5, msg=lambda m, name=name: f"{name}: {m}")


def _rewind_to(out: Path, step: int) -> None:
    """Leave ``out`` as a run killed right after its step-``step`` (epoch-end) checkpoint."""
    state = torch.load(out / "checkpoints" / checkpoint_name(step), weights_only=False)
    for later in (out / "checkpoints").glob("ckpt-*.pt"):
        if int(later.stem.split("-")[1]) > step:
            later.unlink()
    pointer = {"step": step, "file": checkpoint_name(step), "epoch": state["epoch"], "step_in_epoch": state["step_in_epoch"]}
    (out / "checkpoints" / "latest.json").write_text(json.dumps(pointer))


@pytest.fixture(scope="module")
def eager_run(virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("eager")
    out = work / "run"
    result = _run(virtual_store, _config(work / "eager.yaml", "off"), out, "inductor")
    assert result.global_step == 4
    return out


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_pretraining_follows_eager_and_checkpoints_are_interchangeable(
        backend: str, eager_run: Path, virtual_store: Path, tmp_path: Path) -> None:
    compiled_config = _config(tmp_path / "compiled.yaml", "on")
    result = _run(virtual_store, compiled_config, tmp_path / "compiled", backend)
    eager, compiled = load_latest(str(eager_run)), load_latest(str(tmp_path / "compiled"))

    losses = _train_losses(result.metrics)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses == pytest.approx(_train_losses(eager["metrics"]), rel=RTOL)
    assert losses[0] != pytest.approx(losses[-1], rel=1e-3)  # it did train
    # keys of the uncompiled module: nothing like "_orig_mod." that an eager model could not load
    assert list(compiled["objective"]) == list(eager["objective"])
    assert not any("_orig_mod" in key or key.startswith("module.") for key in compiled["objective"])
    _assert_close_states(compiled["objective"], eager["objective"])

    # compiled checkpoint -> eager resume, and eager checkpoint -> compiled resume, both reach the
    # uninterrupted eager run's final state (the run folder's config check ignores train.compile)
    for source, resume_with in ((tmp_path / "compiled", "off"), (eager_run, "on")):
        resumed = tmp_path / f"resumed-{resume_with}"
        shutil.copytree(source, resumed)
        _rewind_to(resumed, 2)
        result = _run(virtual_store, _config(tmp_path / f"resume-{resume_with}.yaml", resume_with), resumed, backend,
                      resume=True)
        assert result.resumed_from == 2 and result.global_step == 4
        assert load_config(resumed / "config.yaml").train.compile == resume_with
        final = load_latest(str(resumed))
        _assert_close_states(final["objective"], eager["objective"])
        assert _train_losses(final["metrics"]) == pytest.approx(_train_losses(eager["metrics"]), rel=RTOL)

    # a freshly built, never compiled objective loads the compiled run's weights strictly
    fresh, _, _ = build_objective_and_optimiser(load_config(compiled_config), result.schema, 2, torch.device("cpu"))
    fresh.load_state_dict(compiled["objective"], strict=True)


def _metrics(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(read_bytes(join(str(out), "metrics.csv")).decode())))


@pytest.mark.slow
def test_two_gloo_processes_with_a_compiled_ddp_module_follow_the_eager_run(virtual_store: Path, tmp_path: Path) -> None:
    compiled = _config(tmp_path / "ddp-compiled.yaml", "on", data={"lanes": 2}, epochs=1)
    eager = _config(tmp_path / "ddp-eager.yaml", "off", data={"lanes": 2}, epochs=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "stefaland_cli.main", "pretrain", "--store", str(virtual_store),
                          "--config", compiled, "--out", str(tmp_path / "two"), "--nproc", "2", "--quiet"],
                         env=env, capture_output=True, text=True, timeout=500)
    assert two.returncode == 0, two.stderr[-3000:]
    _run(virtual_store, eager, tmp_path / "one", "inductor")
    one_rows, two_rows = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in one_rows] == [r["step"] for r in two_rows] and len(one_rows) == 3
    for a, b in zip(one_rows, two_rows):
        for key in ("loss", "recon", "baseline"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=RTOL), (a["step"], key)
    assert not any("_orig_mod" in key or key.startswith("module.") for key in load_latest(str(tmp_path / "two"))["objective"])
