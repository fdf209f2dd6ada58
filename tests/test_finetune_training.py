"""Training that a hydrologist can trust: temporal holdout, validation and early stopping,
normalisation fitted on the training side only, physical bounds, enough updates, divergence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from torch import nn

from stefaland.bounds import clip_to_bounds, resolve_bounds
from stefaland.errors import StefaLandError
from stefaland.finetune import config_from_dict, finetune, finetune_fold
from stefaland.finetune.data import SiteData, batches_per_epoch, hydrodl_iterations
from stefaland.finetune.trainer import train_model
from stefaland.report.model_card import write_model_card
from stefaland.run.predictions import read_predictions
from stefaland.store import open_store
from stefaland_cli.main import cli

from _finetune_store import write_finetune_store

torch.set_num_threads(1)

TRAIN = ("1990-01-01", "1991-06-30")
VALID = ("1991-07-01", "1991-12-31")
TEST = ("1992-01-01", "1992-12-31")


def config(**sections) -> dict:
    values = {
        "data": {"seq_len": 40, "train_start": TRAIN[0], "train_end": TRAIN[1],
                 "test_start": TEST[0], "test_end": TEST[1]},
        "model": {"name": "lstm", "hidden": 16, "dropout": 0.0},
        "train": {"epochs": 3, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 10},
    }
    for key, update in sections.items():
        values[key].update(update)
    return values


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("train") / "store.zarr", n_sites=10, days=1096, n_pub=2)


def test_temporal_split_trains_on_one_period_and_is_scored_on_another(store: str, tmp_path: Path) -> None:
    config_file = tmp_path / "temporal.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(config()))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["finetune", "--store", store, "--config", str(config_file), "--out",
                                      str(runs / "lstm"), "--task", "camels", "--split", "temporal", "--quiet"])
    assert result.exit_code == 0, result.output
    predictions = read_predictions(str(runs / "lstm" / "temporal" / "predictions.nc"))
    times = pd.DatetimeIndex(predictions["time"].values)
    assert times[0] == pd.Timestamp(TEST[0]) and times[-1] == pd.Timestamp(TEST[1])  # the test period, nothing else
    assert predictions.sizes["site"] == 10  # every gauged site is both trained on and tested
    assert predictions.attrs["split"] == "temporal" and predictions.attrs["fold"] == "all"
    record = json.loads((runs / "lstm" / "temporal" / "run.json").read_text())
    assert record["split"] == "temporal" and len(record["train_sites"]) == 10
    report = CliRunner().invoke(cli, ["report", "camels", "--split", "temporal", "--runs", str(runs), "--out",
                                      str(tmp_path / "report"), "--quiet"])
    assert report.exit_code == 0, report.output
    assert "| LSTM-SL |" in report.output and "Temporal holdout" in report.output


def test_temporal_split_refuses_overlapping_periods_and_folds(store: str, tmp_path: Path) -> None:
    overlapping = config_from_dict(config(data={"test_start": "1991-01-01"}))
    with pytest.raises(StefaLandError, match="overlaps the training period"):
        finetune(store, overlapping, str(tmp_path / "a"), "temporal")
    with pytest.raises(StefaLandError, match="has no folds"):
        finetune(store, config_from_dict(config()), str(tmp_path / "b"), "temporal", fold=1)
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_validation_period_selects_the_best_epoch_and_stops_early(store: str, tmp_path: Path) -> None:
    values = config(data={"valid_start": VALID[0], "valid_end": VALID[1]},
                    train={"epochs": 6, "patience": 2, "lr": 0.05})
    result = finetune(store, config_from_dict(values), str(tmp_path / "run"), "temporal", quiet=True)[0]
    folder = tmp_path / "run" / "temporal"
    metrics = pd.read_csv(folder / "metrics.csv")
    assert {"train_loss", "valid_loss", "valid_nse", "lr"} <= set(metrics.columns)
    assert metrics["valid_nse"].notna().all()
    record = json.loads((folder / "run.json").read_text())
    best = int(metrics.loc[metrics["valid_nse"].idxmax(), "epoch"])
    assert record["best_epoch"] == best
    assert record["validation"]["period"] == list(VALID)
    if len(metrics) < 6:  # stopped early: exactly `patience` epochs without improvement
        assert int(metrics["epoch"].iloc[-1]) - best == 2
    # the predictions come from the best epoch's weights, not the last epoch's
    assert (folder / "checkpoints" / "best.pt").exists()
    assert result.metrics[-1]["epoch"] == int(metrics["epoch"].iloc[-1])


def test_validation_sites_come_from_the_training_sites(store: str, tmp_path: Path) -> None:
    values = config(data={"valid_fraction": 0.25, "test_start": TRAIN[0], "test_end": "1992-12-31"},
                    train={"epochs": 2})
    finetune_fold(store, config_from_dict(values), str(tmp_path), "pub", 1, quiet=True)
    record = json.loads((tmp_path / "fold-1" / "run.json").read_text())
    dataset = open_store(store)
    held_out = set(np.asarray([str(v) for v in dataset["site"].values])[np.asarray(dataset["fold_pub"].values) == 1])
    valid = set(record["validation"]["sites"])
    assert valid and not valid & held_out and not valid & set(record["train_sites"])
    with pytest.raises(StefaLandError, match="overlaps the training period"):
        finetune_fold(store, config_from_dict(config(data={"valid_start": "1991-01-01", "valid_end": "1991-12-31"})),
                      str(tmp_path / "bad"), "pub", 1, quiet=True)


def _perturbed_copy(store: str, path: Path, held_out: np.ndarray, test_from: str) -> str:
    """The same store with the held-out sites' and the test days' inputs and targets made absurd."""
    dataset = xr.open_zarr(store).load()
    times = pd.DatetimeIndex(dataset["time"].values)
    late = np.asarray(times >= pd.Timestamp(test_from))
    for name in ("dynamic", "target"):
        values = dataset[name].values.copy()
        values[held_out] = values[held_out] * 7.0 + 50.0
        values[:, late] = values[:, late] * 3.0 + 20.0
        dataset[name] = (dataset[name].dims, values)
    static = dataset["static"].values.copy()
    static[held_out] = static[held_out] * 5.0 + 9.0
    dataset["static"] = (dataset["static"].dims, static)
    dataset.attrs.update(xr.open_zarr(store).attrs)
    for var in dataset.variables.values():
        var.encoding = {}
    dataset.to_zarr(path, mode="w")
    return str(path)


def test_normalisation_comes_from_the_training_sites_and_period_only(store: str, tmp_path: Path) -> None:
    values = config(data={"test_start": TRAIN[0], "test_end": TEST[1]}, train={"epochs": 1, "iterations_per_epoch": 2})
    finetune_fold(store, config_from_dict(values), str(tmp_path / "a"), "pub", 1, quiet=True)
    dataset = open_store(store)
    held_out = np.asarray(dataset["fold_pub"].values) == 1
    record = json.loads((tmp_path / "a" / "fold-1" / "run.json").read_text())["variables"]
    # equal to the statistics of the training sites over the training period, computed here directly
    part = dataset.isel(site=np.flatnonzero(~held_out)).sel(time=slice(*TRAIN))
    np.testing.assert_allclose(record["dynamic_mean"], np.nanmean(part["dynamic"].values, axis=(0, 1)), rtol=1e-4)
    np.testing.assert_allclose(record["dynamic_std"], np.nanstd(part["dynamic"].values, axis=(0, 1)), rtol=1e-3)
    np.testing.assert_allclose(record["static_mean"], part["static"].values.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert record["target_mean"] == pytest.approx(float(np.nanmean(part["target"].values)), rel=1e-4)
    # and unchanged when the held-out sites and the days after training are replaced by absurd values
    other = _perturbed_copy(store, tmp_path / "perturbed.zarr", held_out, "1991-07-01")
    finetune_fold(other, config_from_dict(values), str(tmp_path / "b"), "pub", 1, quiet=True)
    perturbed = json.loads((tmp_path / "b" / "fold-1" / "run.json").read_text())["variables"]
    for key in ("dynamic_mean", "dynamic_std", "static_mean", "static_std", "target_mean", "target_std"):
        np.testing.assert_allclose(perturbed[key], record[key], rtol=1e-5, err_msg=key)


class Shifted(nn.Module):
    """A model whose raw output is far below zero: what a linear head does on dry days."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(-50.0))

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return dynamic[..., 0] * 0.0 + self.bias


def test_streamflow_predictions_are_never_negative(store: str, tmp_path: Path) -> None:
    values = config(train={"epochs": 1, "iterations_per_epoch": 3})
    result = finetune(store, config_from_dict(values), str(tmp_path / "run"), "temporal", quiet=True)[0]
    predictions = xr.open_dataset(result.predictions)
    assert float(np.nanmin(predictions["sim"].values)) >= 0.0
    record = json.loads((tmp_path / "run" / "temporal" / "run.json").read_text())
    assert record["variables"]["target_bounds"] == [0.0, None]
    # the bound is what keeps a negative raw output out of the file
    assert clip_to_bounds(np.array([-3.0, np.nan, 2.0]), (0.0, math.inf)).tolist()[::2] == [0.0, 2.0]
    assert resolve_bounds("auto", "m3/m3") == (0.0, 1.0)
    assert resolve_bounds(None, "mm/day") == (-math.inf, math.inf)
    assert resolve_bounds([None, 5.0], "mm/day") == (-math.inf, 5.0)
    with pytest.raises(StefaLandError, match="not below"):
        resolve_bounds([2.0, 1.0], "mm/day")


def test_a_small_training_set_still_gets_enough_updates() -> None:
    data = SiteData(np.arange(19).astype(str), pd.date_range("2000-01-01", periods=4018), np.zeros((19, 4018, 5), np.float32),
                    np.zeros((19, 3), np.float32), np.zeros((19, 4018), np.float32), np.zeros(19), np.zeros(19))
    rule = hydrodl_iterations(19, 4018, 64, 365, 365)
    assert rule == 13  # hydroDL's rule on the 19-basin sample: 13 batches an epoch
    assert batches_per_epoch(data, 64, 365, 365, None, 2000, 25) == 80  # raised to 2,000 updates over 25 epochs
    assert batches_per_epoch(data, 64, 365, 365, 7, 2000, 25) == 7  # an explicit setting wins


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(1.0))

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return dynamic[..., 0] * self.weight * torch.tensor(float("inf"))


def test_divergence_stops_with_one_line_and_writes_no_checkpoint(tmp_path: Path) -> None:
    n, days = 3, 120
    data = SiteData(np.arange(n).astype(str), pd.date_range("2000-01-01", periods=days),
                    np.ones((n, days, 2), np.float32), np.zeros((n, 1), np.float32),
                    np.ones((n, days), np.float32), np.zeros(n), np.zeros(n))
    with pytest.raises(StefaLandError, match=r"finetuning diverged at epoch 1, step 1") as error:
        train_model(Exploding(), data, config_from_dict(config(data={"seq_len": 30})), str(tmp_path), quiet=True)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_absurd_learning_rates_are_refused() -> None:
    for lr in (float("nan"), float("inf"), 1e6, 0.0, -1.0):
        with pytest.raises(StefaLandError, match="train.lr"):
            config_from_dict(config(train={"lr": lr}))


def test_the_model_card_describes_finished_folds_while_another_trains(store: str, tmp_path: Path) -> None:
    """Folds of one run folder train as parallel jobs: a fold still in progress (or left by a killed
    run) must not stop another fold from finishing and writing the card."""
    values = config(data={"test_start": TRAIN[0], "test_end": TEST[1]}, train={"epochs": 1, "iterations_per_epoch": 2})
    finetune(store, config_from_dict(values), str(tmp_path / "run"), "pub", fold=1, quiet=True)
    started = tmp_path / "run" / "fold-2"  # a fold another job has started: config written, no checkpoint yet
    (started / "checkpoints").mkdir(parents=True)
    (started / "config.yaml").write_text((tmp_path / "run" / "fold-1" / "config.yaml").read_text())
    finetune(store, config_from_dict(values), str(tmp_path / "run"), "pub", fold=1, quiet=True)  # fold 1 again
    write_model_card(str(tmp_path / "run"))  # as `stefaland finetune` does once its folds are done
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "fold2" in card and "no predictions yet" in card
