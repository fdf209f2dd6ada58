"""Divergence guard: a non-finite loss, gradient norm or weight stops the run with one
line naming epoch and step; no checkpoint with a NaN or inf tensor is ever written; absurd learning
rates are refused; an unreadable latest checkpoint falls back to the previous intact one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
import zarr
from click.testing import CliRunner

from stefaland.divergence import DivergenceError, check_finite_step, nonfinite_tensor
from stefaland.errors import StefaLandError
from stefaland.run.checkpoint import latest_pointer, load_latest, save_checkpoint
from stefaland_cli.main import cli

from _stores import write_store

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain_tiny.yaml"


def _config(path: Path, **overrides: dict) -> str:
    raw = yaml.safe_load(TINY.read_text())
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def garbage_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store where one site holds three days of -4.9e17 (what flipped bytes decoded to in the
    issue): the first steps never draw them, a later one does."""
    url = write_store(str(tmp_path_factory.mktemp("store") / "garbage.zarr"), n_sites=24, n_days=400, shard_size=8)
    group = zarr.open_group(url, mode="r+")
    block = group["dynamic"][23:24]
    block[:, 300:303, 0] = -4.9e17
    group["dynamic"][23:24] = block
    return url


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A healthy 12-step run (checkpoints at steps 5, 10, 12)."""
    tmp = tmp_path_factory.mktemp("run")
    store = write_store(str(tmp / "world.zarr"), n_sites=24, n_days=400, shard_size=8)
    config = _config(tmp / "one.yaml", train={"epochs": 1})
    out = str(tmp / "run")
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", config, "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_garbage_values_stop_pretraining_at_the_step_and_keep_the_good_checkpoints(garbage_store: str,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["pretrain", "--store", garbage_store, "--config", str(TINY), "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and "pretraining diverged at epoch 2, step 19" in lines[0], result.output
    assert "gradient norm is inf" in lines[0]
    files = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert files, "the checkpoints before the divergence must survive"
    for path in files:  # every written checkpoint is whole and finite
        state = torch.load(path, weights_only=False)
        assert nonfinite_tensor(state) is None, path
    assert latest_pointer(str(out))["step"] == 15 and load_latest(str(out))["global_step"] == 15


def test_an_overflowing_loss_weight_stops_at_the_first_step_with_no_checkpoint(tmp_path: Path) -> None:
    config = _config(tmp_path / "w.yaml", loss={"dynamic_weight": 3.0e38, "learn_weights": False})
    out = tmp_path / "run"
    store = write_store(str(tmp_path / "clean.zarr"), n_sites=16, n_days=200, shard_size=8)
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", config, "--out", str(out), "--quiet"])
    lines = _error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1 and "epoch 1, step 1" in lines[0], result.output
    assert not list(out.glob("checkpoints/ckpt-*.pt"))


def test_check_finite_step_names_loss_gradient_and_weight() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    check_finite_step(torch.tensor(0.5), torch.tensor(2.0), model, 1, 1)  # healthy: no error
    with pytest.raises(DivergenceError, match=r"at epoch 3, step 41: the loss is nan"):
        check_finite_step(torch.tensor(float("nan")), 1.0, model, 3, 41)
    with pytest.raises(DivergenceError, match=r"finetuning diverged at epoch 2, step 7: the gradient norm is inf"):
        check_finite_step(1.0, torch.tensor(float("inf")), None, 2, 7, "finetuning")
    with torch.no_grad():
        model[1].bias[0] = float("-inf")
    with pytest.raises(DivergenceError, match=r"weight '1.bias'"):
        check_finite_step(None, None, model, 1, 2)
    # huge but finite weights whose sum overflows are not divergence
    big = torch.nn.Linear(1, 4)
    with torch.no_grad():
        big.weight.fill_(3e38)
    check_finite_step(None, None, big, 1, 1)


def test_save_checkpoint_refuses_a_non_finite_tensor_and_keeps_the_previous(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    out = str(tmp_path)
    save_checkpoint(out, 1, {"model": model.state_dict(), "epoch": 1})
    optimizer_state = {"state": {0: {"exp_avg": torch.tensor([1.0, float("nan")])}}}
    with pytest.raises(StefaLandError, match=r"tensor optimizer\.state\.0\.exp_avg holds NaN or inf"):
        save_checkpoint(out, 2, {"model": model.state_dict(), "optimizer": optimizer_state, "epoch": 2})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.pt")) == ["ckpt-000001.pt"]
    assert latest_pointer(out)["step"] == 1


@pytest.mark.parametrize("value, expected", [
    (".nan", "finite number"), (".inf", "finite number"), ("0", "not a usable learning rate"),
    ("-0.001", "not a usable learning rate"), ("100", "at most 10"), ("1.0e+4", "at most 10"),
])
def test_absurd_learning_rates_are_one_line(value: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "lr.yaml"
    config.write_text(TINY.read_text().replace("lr: 5.0e-3", f"lr: {value}"))
    assert f"lr: {value}" in config.read_text()
    result = CliRunner().invoke(cli, ["pretrain", "--store", str(tmp_path / "none.zarr"), "--config", str(config)])
    lines = _error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1 and "optim.lr" in lines[0] and expected in lines[0], result.output


def _copy(run: str, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(one_epoch_run: str, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    run = _copy(one_epoch_run, tmp_path)
    latest = run / "checkpoints" / latest_pointer(str(run))["file"]
    assert latest.name == "ckpt-000012.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a disk filled mid-copy
    with caplog.at_level(logging.WARNING, logger="stefaland.run.checkpoint"):
        state = load_latest(str(run))
    assert state["global_step"] == 10
    assert "ckpt-000012.pt: unreadable" in caplog.text and "ckpt-000010.pt" in caplog.text
    # the CLI resumes from step 10 and finishes the epoch
    result = CliRunner().invoke(cli, ["pretrain", "--store", json.loads((run / "run.json").read_text())["store"],
                                      "--config", str(run / "config.yaml"), "--out", str(run), "--quiet"])
    assert result.exit_code == 0 and "pretrained 12 steps" in result.output, result.output
    assert load_latest(str(run))["global_step"] == 12


def test_a_corrupt_pointer_falls_back_to_the_newest_intact_file(one_epoch_run: str, tmp_path: Path) -> None:
    run = _copy(one_epoch_run, tmp_path)
    (run / "checkpoints" / "latest.json").write_bytes(b"\x00{not json")
    assert load_latest(str(run))["global_step"] == 12


def test_no_intact_checkpoint_is_one_line_not_a_traceback(one_epoch_run: str, tmp_path: Path) -> None:
    run = _copy(one_epoch_run, tmp_path)
    for path in (run / "checkpoints").glob("ckpt-*.pt"):
        path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(StefaLandError, match=r"no intact checkpoint .*--no-resume"):
        load_latest(str(run))
    store = json.loads((run / "run.json").read_text())["store"]
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", str(run / "config.yaml"),
                                      "--out", str(run), "--quiet"])
    lines = _error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1 and "no intact checkpoint" in lines[0], result.output


def test_seq_len_above_max_len_is_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "long.yaml", data={"seq_len": 1200})
    result = CliRunner().invoke(cli, ["pretrain", "--store", str(tmp_path / "none.zarr"), "--config", config])
    lines = _error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "data.seq_len (1200) exceeds model.max_len (1000)" in lines[0]
