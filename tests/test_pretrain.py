"""Pretraining end to end: config validation, shard loading, learning, kill -9 + resume (local and
S3), and a 2-process gloo run against a 1-process run on the same global batch."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.fileio import join, read_bytes
from stefaland.pretrain import PretrainConfig, load_config, parse_config
from stefaland.pretrain.data import ShardBatches, store_schema
from stefaland.run.checkpoint import latest_pointer, load_latest
from stefaland.store import open_store
from stefaland_cli.main import cli

from _stores import write_store

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain_tiny.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(str(tmp_path_factory.mktemp("store") / "world.zarr"), n_sites=24, n_days=400, shard_size=8)


def _write_config(path: Path, **overrides: dict) -> str:
    raw = yaml.safe_load(TINY.read_text())
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["pretrain", *args], catch_exceptions=False)


def _metrics(out: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(read_bytes(join(out, "metrics.csv")).decode())))


@pytest.fixture(scope="module")
def short_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny config cut to 2 epochs × 12 steps (checkpoints at steps 5, 10, 12, 15, 20, 24)."""
    return _write_config(tmp_path_factory.mktemp("config") / "short.yaml", train={"epochs": 2})


@pytest.fixture(scope="module")
def reference_run(store: str, short_config: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The short config, uninterrupted, through the real CLI."""
    out = str(tmp_path_factory.mktemp("runs") / "reference")
    result = _invoke("--store", store, "--config", short_config, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "pretrained 24 steps" in result.output
    return out


# -- configuration --------------------------------------------------------------------------

def test_default_config_file_holds_the_defaults() -> None:
    assert load_config(REPO / "configs" / "pretrain_default.yaml") == PretrainConfig()
    assert PretrainConfig().model.n_layers == 4 and PretrainConfig().model.d_model == 256


@pytest.mark.parametrize("text,expected", [
    ("train: {epoch: 3}", "unknown key 'train.epoch'"),
    ("optim: {lr: -1}", "optim.lr"),
    ("model: {d_model: 30, n_heads: 4}", "divisible"),
    ("data: {batch_size: 15, lanes: 2}", "multiple of lanes"),
    ("- just a list", "expected a mapping"),
    ("train: {epochs: [1, 2}", "line 1 column 22: YAML error"),
])
def test_bad_configs_fail_with_one_line_naming_the_key(text: str, expected: str, tmp_path: Path, store: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0] and expected in lines[0], result.output
    assert not (tmp_path / "o").exists()



def test_command_line_overrides_are_validated_like_the_file(tmp_path: Path, store: str) -> None:
    """--decoder goes through the config schema (pydantic does not validate assignment): a bidirectional
    decoder on an odd d_model is one line before anything starts, not a traceback in the first step."""
    config = _write_config(tmp_path / "odd.yaml", model={"d_model": 15, "n_heads": 3, "decoder": "lstm"})
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", config, "--out", str(tmp_path / "o"),
                                      "--decoder", "bilstm"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {config} with --decoder bilstm: ") and "even d_model" in result.output
    assert not (tmp_path / "o").exists()

def test_store_problems_name_the_store_and_variable(tmp_path: Path, store: str) -> None:
    incomplete = write_store(str(tmp_path / "half.zarr"), n_sites=8, n_days=100, shard_size=4, complete=False)
    result = CliRunner().invoke(cli, ["pretrain", "--store", incomplete, "--config", str(TINY), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.startswith(f"error: {incomplete}: store is incomplete")
    dataset = open_store(store)
    with pytest.raises(StefaLandError, match=r"dynamic variable 'pet' is not in the store"):
        store_schema(dataset, parse_config("data: {dynamic_vars: [prcp, pet]}"), store)
    with pytest.raises(StefaLandError, match=r"never_mask: 'basin_area'"):
        store_schema(dataset, parse_config("masking: {never_mask: [basin_area]}"), store)
    with pytest.raises(StefaLandError, match="seq_len 500 exceeds the 400 days"):
        store_schema(dataset, parse_config("data: {seq_len: 500}"), store)


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path, store: str) -> None:
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", str(TINY),
                                      "--out", str(tmp_path / "empty"), "--resume"])
    assert result.exit_code == 1 and "holds no checkpoint" in result.output, result.output


# -- shard loading ----------------------------------------------------------------------------

def test_batches_come_from_one_shard_at_a_time_and_are_normalised(store: str) -> None:
    config = load_config(TINY)
    dataset = open_store(store)
    schema = store_schema(dataset, config, store)
    data = ShardBatches(dataset, schema, config)
    assert schema.n_shards == 3 and data.steps_per_epoch == 12
    visited = [data.shard_for(0, step, 0) for step in range(data.steps_per_epoch)]
    assert sorted(set(visited)) == [0, 1, 2]  # each shard once, in contiguous blocks of steps
    assert sum(1 for a, b in zip(visited, visited[1:]) if a != b) == 2
    assert data.shard_order(0) != data.shard_order(1) or data.shard_order(1) != data.shard_order(2)
    for step in range(data.steps_per_epoch):
        batch = data.batch(0, step)
        assert len(data._loaded) == 1  # never more than the current shard in memory
    assert data.shards_loaded == 3
    assert batch.dynamic.shape == (16, 60, 5) and batch.static.shape == (16, 10)
    assert batch.dynamic_mask.shape == batch.dynamic.shape and batch.static_mask.shape == batch.static.shape
    # z-scores with the store's statistics: across a whole shard they have the store's scale
    shard = data._loaded[0]
    raw = dataset["dynamic"].isel(site=slice(shard.index * 8, shard.index * 8 + 8)).values
    expected = (raw - dataset["dynamic_mean"].values) / dataset["dynamic_std"].values
    np.testing.assert_allclose(shard.dynamic, expected, rtol=1e-5, atol=1e-5)
    again = ShardBatches(dataset, schema, config).batch(0, 11)
    np.testing.assert_array_equal(np.nan_to_num(again.dynamic), np.nan_to_num(batch.dynamic))
    np.testing.assert_array_equal(again.dynamic_mask, batch.dynamic_mask)


def test_a_held_out_fold_is_never_loaded_for_pretraining(virtual_store: Path) -> None:
    """The paper's PUB setup: basins scored after finetuning are left out of pretraining too."""
    url = str(virtual_store)
    dataset = open_store(url)
    config = parse_config(TINY.read_text() + "\ndata: {seq_len: 60, batch_size: 16, samples_per_site: 8, exclude: {split: pub, fold: 3}}\n")
    data = ShardBatches(dataset, store_schema(dataset, config, url), config)
    folds = dataset["fold_pub"].values
    assert (folds == 3).any()
    static = dataset["static"].values
    for step in range(data.steps_per_epoch):
        data.batch(0, step)
        shard = data._loaded[0]
        rows = slice(shard.index * 8, shard.index * 8 + 8)
        kept = folds[rows] != 3
        assert shard.static.shape[0] == kept.sum()  # held-out rows dropped from the shard
        expected = (static[rows][kept] - dataset["static_mean"].values) / dataset["static_std"].values
        np.testing.assert_allclose(np.nan_to_num(shard.static), np.nan_to_num(expected), rtol=1e-5, atol=1e-5)
    bad = parse_config(TINY.read_text() + "\ndata: {seq_len: 60, batch_size: 16, exclude: {split: pur, fold: 99}}\n")
    with pytest.raises(StefaLandError, match="no site is in fold 99 of pur"):
        ShardBatches(dataset, store_schema(dataset, bad, url), bad)


def test_ranks_split_lanes_so_the_global_batch_does_not_depend_on_the_process_count(store: str) -> None:
    config = parse_config(TINY.read_text()).model_copy(deep=True)
    config.data.lanes = 2
    dataset = open_store(store)
    schema = store_schema(dataset, config, store)
    single = ShardBatches(dataset, schema, config, rank=0, world_size=1).batch(1, 3)
    rank0 = ShardBatches(dataset, schema, config, rank=0, world_size=2)
    rank1 = ShardBatches(dataset, schema, config, rank=1, world_size=2)
    assert rank0.lanes == [0] and rank1.lanes == [1]
    assert set(rank0.shard_order(1)[0]).isdisjoint(rank1.shard_order(1)[1])  # each rank its own shards
    joined = np.concatenate([rank0.batch(1, 3).dynamic, rank1.batch(1, 3).dynamic])
    np.testing.assert_array_equal(np.nan_to_num(joined), np.nan_to_num(single.dynamic))
    with pytest.raises(StefaLandError, match="fewer than the 4 lanes"):
        ShardBatches(dataset, schema, config, rank=0, world_size=4)


# -- learning -------------------------------------------------------------------------------

def test_pretraining_on_the_virtual_world_beats_predicting_the_mean(virtual_store: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    result = _invoke("--store", str(virtual_store), "--config", str(TINY), "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rows = _metrics(out)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 5
    first, last = evals[0], evals[-1]
    assert float(first["recon"]) > 0.85 * float(first["baseline"])  # an untrained model is no better than the mean
    assert float(last["recon"]) < 0.6 * float(last["baseline"]), last
    assert float(last["recon_dynamic"]) < 0.6 * float(last["baseline_dynamic"]), last
    assert float(last["recon_static"]) < 0.85 * float(last["baseline_static"]), last
    assert {"dyn:climate", "static:soil", "static:terrain", "static:vegetation"} <= set(rows[0])
    assert f"masked reconstruction {float(last['recon']):.4f}" in result.output


def test_run_folder_holds_everything_needed_to_repeat_the_run(reference_run: str, store: str, short_config: str) -> None:
    out = Path(reference_run)
    assert load_config(out / "config.yaml") == load_config(short_config)
    run = json.loads((out / "run.json").read_text())
    assert run["store"] == store and run["store_provenance"]["dataset"] == "synthetic-test"
    assert run["stefaland_version"] and run["variables"]["dynamic_vars"] == ["prcp", "tmax", "tmin", "srad", "rh"]
    assert len(run["variables"]["static_std"]) == 10
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pointer = latest_pointer(str(out))
    assert pointer["step"] == 24 and (out / "checkpoints" / pointer["file"]).exists()
    assert len(list((out / "checkpoints").glob("ckpt-*.pt"))) == 3  # keep_checkpoints
    state = load_latest(str(out))
    assert {"objective", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch", "config"} <= set(state)
    # the encoder alone loads from the checkpoint for finetuning
    from stefaland.model import ModelConfig, StefaLandEncoder
    encoder = StefaLandEncoder(5, 10, ModelConfig(**state["config"]["model"]))
    prefix = "model.encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state["objective"].items() if k.startswith(prefix)})


def test_a_finished_run_is_not_retrained_and_a_changed_config_is_refused(reference_run: str, tmp_path: Path, store: str,
                                                                        short_config: str) -> None:
    before = (Path(reference_run) / "checkpoints" / "latest.json").read_text()
    result = _invoke("--store", store, "--config", short_config, "--out", reference_run, "--quiet")
    assert result.exit_code == 0 and "pretrained 24 steps" in result.output
    assert (Path(reference_run) / "checkpoints" / "latest.json").read_text() == before
    changed = _write_config(tmp_path / "changed.yaml", optim={"lr": 0.001})
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", changed, "--out", reference_run])
    assert result.exit_code == 1 and "different config" in result.output


def test_no_resume_starts_over_and_drops_the_old_checkpoints(reference_run: str, tmp_path: Path, store: str) -> None:
    restarted = tmp_path / "restarted"
    shutil.copytree(reference_run, restarted)  # a finished 24-step run
    one_epoch = _write_config(tmp_path / "one.yaml", train={"epochs": 1})
    result = _invoke("--store", store, "--config", one_epoch, "--out", str(restarted), "--quiet", "--no-resume")
    assert result.exit_code == 0 and "pretrained 12 steps" in result.output, result.output
    steps = sorted(int(p.stem.split("-")[1]) for p in (restarted / "checkpoints").glob("ckpt-*.pt"))
    assert steps == [5, 10, 12] and latest_pointer(str(restarted))["step"] == 12
    assert load_config(restarted / "config.yaml").train.epochs == 1


# -- kill -9 and resume ----------------------------------------------------------------------

def _kill_mid_epoch(store: str, config: str, out: str, timeout: float = 240.0) -> dict:
    """Start the CLI in a subprocess, kill -9 it right after its first mid-epoch checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "stefaland_cli.main", "pretrain", "--store", store, "--config", config,
         "--out", out, "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                pointer = latest_pointer(out)
            except (StefaLandError, OSError):
                pointer = None
            if pointer and pointer["step_in_epoch"] > 0:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return pointer
            if process.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        pytest.fail("no checkpoint appeared in time")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _assert_same_final_state(reference: str, resumed: str) -> None:
    a, b = load_latest(reference), load_latest(resumed)
    assert a["global_step"] == b["global_step"] == 24
    for name, tensor in a["objective"].items():
        assert torch.equal(tensor, b["objective"][name]), f"{name} differs after resume"
    for key, value in a["optimizer"]["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][field]), f"optimizer {key}.{field}"
    train_a = [{k: v for k, v in r.items() if k != "time"} for r in _metrics(reference) if r["kind"] == "train"]
    train_b = [{k: v for k, v in r.items() if k != "time"} for r in _metrics(resumed) if r["kind"] == "train"]
    assert train_a == train_b  # bitwise, so the logged curve is identical too


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(reference_run: str, store: str, short_config: str,
                                                                  tmp_path: Path) -> None:
    out = str(tmp_path / "killed")
    pointer = _kill_mid_epoch(store, short_config, out)
    assert 0 < pointer["step"] < 24
    result = _invoke("--store", store, "--config", short_config, "--out", out, "--quiet")  # resume is the default
    assert result.exit_code == 0, result.output
    assert load_latest(out)["metrics"][0]["step"] == 2
    _assert_same_final_state(reference_run, out)


def test_kill_9_and_resume_with_checkpoints_on_s3(reference_run: str, store: str, short_config: str, s3_bucket: str) -> None:
    out = f"{s3_bucket}/runs/tiny"
    pointer = _kill_mid_epoch(store, short_config, out)
    assert 0 < pointer["step"] < 24
    result = _invoke("--store", store, "--config", short_config, "--out", out, "--quiet", "--resume")
    assert result.exit_code == 0, result.output
    _assert_same_final_state(reference_run, out)
    assert read_bytes(join(out, "loss.png"))[:4] == b"\x89PNG"


# -- distributed ------------------------------------------------------------------------------

def test_two_gloo_processes_follow_the_one_process_loss_curve(store: str, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "lanes.yaml", data={"lanes": 2, "samples_per_site": 4},
                           train={"epochs": 1, "log_every": 1, "checkpoint_every": 100, "eval_batches": 1})
    single, double = str(tmp_path / "one"), str(tmp_path / "two")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "stefaland_cli.main", "pretrain", "--store", store, "--config", config,
                          "--out", double, "--nproc", "2", "--decoder", "lstm", "--quiet"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    result = _invoke("--store", store, "--config", config, "--out", single, "--decoder", "lstm", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(Path(double, "run.json").read_text())["world_size"] == 2
    assert load_config(Path(double, "config.yaml")).model.decoder == "lstm"  # the override reached the workers
    one_rows, two_rows = _metrics(single), _metrics(double)
    assert [r["step"] for r in one_rows] == [r["step"] for r in two_rows] and len(one_rows) == 7
    for a, b in zip(one_rows, two_rows):
        for key in ("loss", "recon", "baseline"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), (a["step"], key)
    assert float(one_rows[0]["loss"]) != pytest.approx(float(one_rows[-2]["loss"]), rel=1e-3)  # it did train
