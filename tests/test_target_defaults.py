"""A config that leaves the loss or the optimiser unset trains with its target's default, and the run
record says so."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from stefaland.finetune import config_from_dict
from stefaland.finetune.target_defaults import target_default
from stefaland_cli.main import cli

torch.set_num_threads(1)


def _config(**train) -> dict:
    """Periods, inputs' window, model name and size, and a budget: nothing about the loss unless given."""
    return {
        "task": "camels",
        "data": {"seq_len": 60, "train_start": "1980-01-01", "train_end": "1981-06-30",
                 "test_start": "1981-07-01", "test_end": "1982-12-31"},
        "model": {"name": "lstm", "hidden": 8},
        "train": {"epochs": 2, "iterations_per_epoch": 4, "batch_size": 8, "seed": 5, **train},
    }


def _finetune(store: Path, config: dict, out: Path) -> tuple[dict, list[float]]:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["finetune", "--store", str(store), "--config", str(path), "--out", str(out),
                                      "--task", "camels", "--split", "temporal", "--quiet"])
    assert result.exit_code == 0, result.output
    folder = next(p for p in out.iterdir() if (p / "run.json").exists())
    with (folder / "metrics.csv").open() as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    return json.loads((folder / "run.json").read_text()), losses


def test_streamflow_defaults_to_nse_and_adam_other_targets_to_rmse_and_adadelta() -> None:
    unset = config_from_dict(_config())
    assert unset.train.loss is None and unset.train.optimizer is None  # config.yaml keeps saying: not the user's
    assert unset.loss() == "nse" and unset.optimizer() == "adam" and unset.learning_rate() == 1e-3
    assert unset.target_defaults() == {"train.loss": "nse", "train.optimizer": "adam"}
    soil = config_from_dict({**_config(), "data": {"target": "soil_moisture"}})
    assert soil.loss() == "rmse" and soil.optimizer() == "adadelta" and soil.learning_rate() == 1.0
    assert soil.target_defaults() == {"train.loss": "rmse", "train.optimizer": "adadelta"}
    named = config_from_dict(_config(loss="rmse", optimizer="adadelta"))
    assert named.loss() == "rmse" and named.optimizer() == "adadelta" and named.target_defaults() == {}
    assert config_from_dict(_config(optimizer="adamw")).target_defaults() == {"train.loss": "nse"}
    assert target_default("streamflow", "loss") == "nse" and target_default("clay", "loss") == "rmse"
    assert target_default("streamflow", "optimizer") == "adam" and target_default("clay", "optimizer") == "adadelta"


@pytest.mark.parametrize("named", ["nse", "rmse"])
def test_a_config_without_a_loss_trains_with_the_targets_default(virtual_store: Path, tmp_path: Path,
                                                                  named: str) -> None:
    default_record, default_losses = _finetune(virtual_store, _config(), tmp_path / "default")
    named_record, named_losses = _finetune(virtual_store, _config(loss=named), tmp_path / named)
    assert default_record["loss"] == "nse"
    assert default_record["target_defaults"] == {"train.loss": "nse", "train.optimizer": "adam"}
    assert named_record["loss"] == named and named_record["target_defaults"] == {"train.optimizer": "adam"}
    if named == "nse":  # the same seed and loss: the same training, loss for loss
        assert default_losses == pytest.approx(named_losses, rel=1e-6)
    else:  # RMSE is another objective: its training losses are other numbers
        assert default_losses != pytest.approx(named_losses, rel=1e-3)


def test_a_config_without_an_optimiser_trains_streamflow_with_adam(virtual_store: Path, tmp_path: Path) -> None:
    default_record, default_losses = _finetune(virtual_store, _config(), tmp_path / "default")
    adam_record, adam_losses = _finetune(virtual_store, _config(optimizer="adam"), tmp_path / "adam")
    adadelta_record, adadelta_losses = _finetune(virtual_store, _config(optimizer="adadelta"), tmp_path / "adadelta")
    assert default_record["optimizer"] == adam_record["optimizer"] == "adam"
    assert adadelta_record["optimizer"] == "adadelta" and adadelta_record["target_defaults"] == {"train.loss": "nse"}
    assert default_losses == pytest.approx(adam_losses, rel=1e-6)  # the same seed and optimiser: the same training
    assert default_losses != pytest.approx(adadelta_losses, rel=1e-3)
