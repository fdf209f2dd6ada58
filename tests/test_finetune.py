"""Finetuning end to end: folds, sampler, training, resume, predictions, CLI, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from click.testing import CliRunner
from torch import nn

from stefaland.errors import StefaLandError
from stefaland.finetune import config_from_dict, finetune_fold, load_config
from stefaland.finetune.data import (
    PredictionWindows,
    WindowSampler,
    drop_unobserved,
    load_site_data,
    resolve_variables,
)
from stefaland.finetune.inference import predict_torch
from stefaland.run.predictions import read_predictions
from stefaland.splits import holdout_for
from stefaland.store import open_store
from stefaland_cli.main import cli

from _finetune_store import write_finetune_store

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "finetune_tiny.yaml"

torch.set_num_threads(1)


def tiny(**sections) -> dict:
    values = {
        "data": {"seq_len": 40, "train_start": "1990-01-01", "train_end": "1991-12-31",
                 "test_start": "1990-01-01", "test_end": "1991-12-31"},
        "model": {"name": "lstm", "hidden": 16, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 8},
    }
    for key, update in sections.items():
        values[key].update(update)
    return values


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("ft") / "store.zarr", n_sites=12, days=730, n_pub=3)


def _rmse(obs: np.ndarray, sim: np.ndarray) -> float:
    ok = np.isfinite(obs) & np.isfinite(sim)
    return float(np.sqrt(np.mean((obs[ok] - sim[ok]) ** 2)))


def test_pub_on_the_virtual_world_all_folds_beats_climatology(tmp_path: Path) -> None:
    """Every PUB fold of a virtual world on CPU, tiny config, read by `report`."""
    from stefaland.assemble import build_store
    from stefaland.synth import write_virtual_world

    catalog = write_virtual_world(tmp_path / "world", n_sites=20, years=3, seed=1, start_year=1990, quiet=True)
    store = str(tmp_path / "world.zarr")
    build_store(str(catalog), store, shard_size=8, quiet=True)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["finetune", "--store", store, "--config", str(TINY), "--out", str(out),
                                      "--task", "camels", "--split", "pub", "--fold", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    dataset = open_store(store)
    folds = np.asarray(dataset["fold_pub"].values)
    ids = sorted(set(folds[folds >= 0]))
    assert len(ids) == 10 and result.output.count("held-out sites") == 10
    sites = np.asarray(dataset["site"].values).astype(str)
    target = dataset["target"].values[..., 0]  # (site, time)
    doy = dataset["time"].dt.dayofyear.values
    errors, baseline, labels = [], [], set()
    for fold in ids:
        predictions = read_predictions(str(out / f"fold-{fold}" / "predictions.nc"))
        labels.add(predictions.attrs["fold"])
        assert predictions.attrs["model"] == "LSTM-SL" and predictions.attrs["units"] == "mm/day"
        assert sorted(predictions["site"].values) == sorted(sites[folds == fold])  # exactly the held-out fold
        assert (out / f"fold-{fold}" / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
        assert json.loads((out / f"fold-{fold}" / "checkpoints" / "latest.json").read_text())["epoch"] == 3
        # climatology from the training sites only: the mean flow of each day of the year
        train = target[folds != fold]
        climatology = np.array([np.nanmean(train[:, doy == d]) for d in doy])  # (time,)
        obs, sim = predictions["obs"].values, predictions["sim"].values
        assert np.isfinite(sim).all()
        errors.append(_rmse(obs, sim))
        baseline.append(_rmse(obs, np.broadcast_to(climatology, obs.shape)))
    assert np.mean(errors) < 0.95 * np.mean(baseline), (errors, baseline)
    assert labels == {str(k) for k in range(1, 11)}  # the report's (MHPI's) PUB folds 1..10
    report = CliRunner().invoke(cli, ["report", "camels", "--split", "pub", "--runs", str(out), "--format", "md",
                                      "--out", str(tmp_path / "report"), "--quiet"])
    assert report.exit_code == 0, report.output
    assert "| LSTM-SL |" in report.output  # model.label's default, the paper's name


def test_a_learnable_world_is_learned_well(store: str, tmp_path: Path) -> None:
    """On a world whose flow follows the attributes closely, LSTM-SL must be far better than climatology."""
    # judged by RMSE, so trained on it (streamflow's default loss is NSE*, which weighs sites alike)
    result = finetune_fold(store, config_from_dict(tiny(train={"epochs": 3, "iterations_per_epoch": 15, "loss": "rmse"})),
                           str(tmp_path), "pub", 2, quiet=True)
    predictions = xr.open_dataset(result.predictions)
    dataset = open_store(store)
    train = dataset["target"].values[np.asarray(dataset["fold_pub"].values) != 2, :, 0]
    obs, sim = predictions["obs"].values, predictions["sim"].values
    assert _rmse(obs, sim) < 0.7 * _rmse(obs, np.broadcast_to(np.nanmean(train, axis=0), obs.shape))


def test_sampler_never_draws_held_out_sites(store: str) -> None:
    dataset = open_store(store)
    config = config_from_dict(tiny())
    pub = holdout_for("camels", "pub")
    chosen = pub.fold(pub.assignment(dataset), 2)
    variables = resolve_variables(dataset, config.data)
    data = drop_unobserved(load_site_data(dataset, chosen.train_sites, variables, "1990-01-01", "1991-12-31", "train"))
    held_out = set(np.asarray(dataset["site"].values).astype(str)[chosen.test_sites])
    sampler = WindowSampler(data, 16, 40, 40, 30, np.random.default_rng(0))
    seen = set()
    for batch in sampler:
        seen.update(batch.sites)
        assert batch.dynamic.shape == (16, 40, 4) and batch.target.shape == (16, 40)
    assert seen and not seen & held_out
    assert seen == set(np.asarray(dataset["site"].values).astype(str)[chosen.train_sites])


def test_target_statistics_come_from_the_training_sites_only(store: str) -> None:
    from stefaland.finetune.data import normalise_to_training

    dataset = open_store(store)
    pub = holdout_for("camels", "pub")
    chosen = pub.fold(pub.assignment(dataset), 1)
    variables = resolve_variables(dataset, config_from_dict(tiny()).data)
    data = load_site_data(dataset, chosen.train_sites, variables, "1990-01-01", "1991-12-31", "train")
    scaled = normalise_to_training(variables, data)
    raw = dataset["target"].values[chosen.train_sites, :, 0]
    assert scaled.target_mean == pytest.approx(np.nanmean(raw), rel=1e-5)
    assert scaled.target_std == pytest.approx(np.nanstd(raw), rel=1e-4)
    assert scaled.target_mean != pytest.approx(float(dataset["target_mean"].values[0]), rel=1e-3)  # not all sites
    np.testing.assert_allclose(data.target * scaled.target_std + scaled.target_mean, raw, rtol=1e-4, atol=1e-4)


def test_interrupted_run_resumes_to_the_same_result(store: str, tmp_path: Path) -> None:
    config = config_from_dict(tiny())
    whole = finetune_fold(store, config, str(tmp_path / "whole"), "pub", 1, quiet=True)
    # Interrupt after epoch 1: point latest.json back at epoch 1 and drop what came after.
    run = tmp_path / "cut"
    finetune_fold(store, config, str(run), "pub", 1, quiet=True)
    checkpoints = run / "fold-1" / "checkpoints"
    (checkpoints / "ckpt-000002.pt").unlink()
    (checkpoints / "latest.json").write_text(json.dumps({"step": 1, "file": "ckpt-000001.pt", "epoch": 1}))
    (run / "fold-1" / "predictions.nc").unlink()
    resumed = finetune_fold(store, config, str(run), "pub", 1, quiet=True)
    assert [row["epoch"] for row in resumed.metrics] == [1, 2]
    a, b = xr.open_dataset(whole.predictions), xr.open_dataset(resumed.predictions)
    np.testing.assert_allclose(a["sim"].values, b["sim"].values, rtol=1e-5, atol=1e-6)
    # a different config in the same folder is refused, not mixed in
    other = config_from_dict(tiny(train={"epochs": 3}))
    with pytest.raises(StefaLandError, match="different config"):
        finetune_fold(store, other, str(run), "pub", 1, quiet=True)


class Echo(nn.Module):
    """Returns input channel 0 for the days after its warm-up: shows which input day each output is."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return dynamic[:, self.warmup:, 0]


@pytest.mark.parametrize("n_test,seq_len,warmup,overlap,history", [
    (100, 30, 0, 10, 0), (100, 30, 7, 0, 50), (95, 40, 20, 15, 3), (12, 40, 5, 20, 0), (40, 40, 0, 39, 100),
])
def test_prediction_windows_tile_the_test_period(n_test, seq_len, warmup, overlap, history) -> None:
    from stefaland.finetune.data import SiteData

    days = history + n_test
    values = np.arange(days, dtype=np.float32)[None, :, None].repeat(2, axis=0)  # day index as the input
    data = SiteData(np.array(["a", "b"]), None, values, np.zeros((2, 1), np.float32),
                    np.zeros((2, days), np.float32), np.zeros(2), np.zeros(2), history)
    out = predict_torch(Echo(warmup), data, seq_len, overlap, batch_size=3, warmup=warmup)
    np.testing.assert_array_equal(out, values[:, history:, 0])
    windows = PredictionWindows(n_test, seq_len, warmup, overlap)
    assert windows.pad >= warmup + overlap


def test_bad_input_is_one_clear_line(store: str, tmp_path: Path) -> None:
    with pytest.raises(StefaLandError, match="'swe' is not in the store"):
        finetune_fold(store, config_from_dict(tiny(data={"dynamic": ["prcp", "swe"]})), str(tmp_path), "pub", 1)
    with pytest.raises(StefaLandError, match="fold_huc"):
        finetune_fold(store, config_from_dict(tiny()), str(tmp_path), "huc", 1)
    with pytest.raises(StefaLandError, match="fold 7 is not in the split"):
        finetune_fold(store, config_from_dict(tiny()), str(tmp_path), "pub", 7)
    with pytest.raises(StefaLandError, match="unknown model 'lstmm'"):
        finetune_fold(store, config_from_dict(tiny(model={"name": "lstmm"})), str(tmp_path), "pub", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(StefaLandError, match=r"bad.yaml: unknown key 'train.epochz'"):
        load_config(bad)
    result = CliRunner().invoke(cli, ["finetune", "--store", str(tmp_path / "nope.zarr"), "--config", str(TINY),
                                      "--out", str(tmp_path / "o"), "--split", "pub"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "nope.zarr" in result.output



def test_model_name_is_checked_against_the_registry_in_the_config_and_the_cli_override(tmp_path: Path) -> None:
    """An unknown model.name is one line listing the known names, from the file and from --model alike,
    before any store is opened or run folder made; a known --model goes through the same schema."""
    from stefaland.finetune.models import MODELS
    from stefaland_cli.finetune import with_overrides

    known = f"known: {', '.join(MODELS)}"
    with pytest.raises(StefaLandError, match=f"c.yaml: model.name: unknown model 'lstmm'; {known}$"):
        config_from_dict(tiny(model={"name": "lstmm"}), "c.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny(model={"name": "lstmm"})))
    for config, extra in ((bad, []), (TINY, ["--model", "lstmm"])):
        result = CliRunner().invoke(cli, ["finetune", "--store", str(tmp_path / "nope.zarr"), "--config", str(config),
                                          "--out", str(tmp_path / "o"), "--split", "pub", *extra])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"error: {config}") and f"model.name: unknown model 'lstmm'; {known}" in result.output
        assert "nope.zarr" not in result.output and not (tmp_path / "o").exists()
    assert "with --model lstmm" in result.output
    base = load_config(TINY)
    overridden = with_overrides(base, str(TINY), "lstm_hbv", "wosis")
    assert overridden == base.model_copy(update={"task": "wosis",
                                                 "model": base.model.model_copy(update={"name": "lstm_hbv"})})
    assert with_overrides(base, str(TINY), None, None) is base

def test_split_file_replaces_the_store_column(store: str, tmp_path: Path) -> None:
    sites = np.asarray(open_store(store)["site"].values).astype(str)
    import pandas as pd

    from stefaland.splits import Split, write_split

    split = tmp_path / "split.csv"
    folds = pd.Series(np.arange(10) % 2, index=pd.Index(sites[:10], name="site"), dtype="int16")
    write_split(Split(folds, "camels", "custom", 1, {0: "even", 1: "odd"}), str(split))
    custom = holdout_for("camels", "custom")  # no registered scheme: the split file's folds
    folds = custom.assignment(open_store(store), str(split))
    assert list(folds[:10]) == [0, 1] * 5 and list(folds[10:]) == [-1, -1]  # outside the split: never used
    chosen = custom.fold(folds, 0)
    assert set(chosen.test_sites) == {0, 2, 4, 6, 8} and set(chosen.train_sites) == {1, 3, 5, 7, 9}


def test_runs_to_object_storage_and_resumes_there(store: str, s3_bucket: str) -> None:
    out = f"{s3_bucket}/runs/lstm"
    config = config_from_dict(tiny(train={"epochs": 1, "iterations_per_epoch": 3}))
    first = finetune_fold(store, config, out, "pub", 3, quiet=True)
    assert first.predictions == f"{out}/fold-3/predictions.nc"
    predictions = read_predictions(first.predictions)
    assert predictions.attrs["fold"] == "3" and np.isfinite(predictions["sim"].values).all()
    again = finetune_fold(store, config, out, "pub", 3, quiet=True)  # resumes: nothing left to train
    assert again.metrics == first.metrics


def test_hidden_inputs_and_encoder_window_limits(store: str, tmp_path: Path) -> None:
    dataset = open_store(store)
    config = config_from_dict(tiny(data={"hide": ["slope_mean", "pet"]}))
    variables = resolve_variables(dataset, config.data)
    data = load_site_data(dataset, np.arange(4), variables, "1990-01-01", "1990-12-31", "train")
    assert np.isnan(data.static[:, 1]).all() and np.isnan(data.dynamic[..., 3]).all()  # hidden
    assert np.isfinite(data.static[:, 0]).all() and np.isfinite(data.dynamic[..., 0]).all()  # the rest is not
    with pytest.raises(StefaLandError, match="data.hide: 'clay' is not one of the input variables"):
        resolve_variables(dataset, config_from_dict(tiny(data={"hide": ["clay"]})).data)
    too_long = config_from_dict(tiny(data={"seq_len": 70}, model={
        "name": "stefaland_transformer", "encoder": {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16, "max_len": 64}}))
    with pytest.raises(StefaLandError, match="positions for 64"):
        finetune_fold(store, too_long, str(tmp_path), "pub", 1, quiet=True)


def test_static_target_is_predicted_per_site_from_the_other_inputs(store: str, tmp_path: Path) -> None:
    """The WoSIS setting: a static attribute as the target, hidden from the inputs, one value per site."""
    dataset = open_store(store)
    svars = [str(v) for v in dataset["svar"].values]
    truth = dataset["static"].values[:, svars.index("p_mean")]
    folds = np.asarray(dataset["fold_pub"].values)
    # a 40-day window only hints at a 2-year mean, so the LSTM is held to less than the linear model,
    # which sees the whole period's mean forcings
    for name, factor in (("lstm", 0.8), ("linear", 0.5)):
        config = config_from_dict(tiny(data={"target": "p_mean", "hide": ["aridity"]}, model={"name": name},
                                       train={"epochs": 3, "iterations_per_epoch": 15}))
        variables = resolve_variables(dataset, config.data)
        assert variables.static_target and variables.hidden_static == [0, svars.index("p_mean")]
        result = finetune_fold(store, config, str(tmp_path / name), "pub", 1, quiet=True)
        predictions = read_predictions(result.predictions)
        assert predictions["sim"].dims == ("site",) and predictions.attrs["variable"] == "p_mean"
        np.testing.assert_allclose(predictions["obs"].values, truth[folds == 1], rtol=1e-5)
        error = np.abs(predictions["sim"].values - truth[folds == 1]).mean()
        assert error < factor * np.abs(truth[folds != 1].mean() - truth[folds == 1]).mean(), name


def test_fold_labels_follow_the_report() -> None:
    def fold_label(task: str, split: str, fold: int, known: list[int]) -> str:
        return holdout_for(task, split).label(fold, known)

    assert fold_label("camels", "pub", 0, list(range(10))) == "1"  # 0-based store ids, MHPI's 1-based folds
    assert fold_label("camels", "pur", 6, list(range(7))) == "7"
    assert fold_label("camels", "pub", 3, [1, 2, 3]) == "3"  # already the report's numbering
    assert fold_label("global", "continents", 2, [0, 1, 2]) == "3"  # 0: north_america .. 2: europe
    assert fold_label("my_task", "custom", 4, [4, 5]) == "4"  # unknown to the report: the id itself


def test_killed_run_resumes_from_its_last_epoch(store: str, tmp_path: Path) -> None:
    """SIGKILL mid-run (a real process), then the same command again: it finishes what was left."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = tiny(train={"epochs": 8, "iterations_per_epoch": 40, "threads": 1})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stefaland_cli.main", "finetune", "--store", store, "--config", str(config_file),
               "--out", str(out), "--split", "pub", "--fold", "2", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = out / "fold-2" / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(pointer.read_text())["epoch"]
    assert 2 <= done < 8, "the run was not interrupted mid-way; lengthen it"
    assert not (out / "fold-2" / "predictions.nc").exists()
    result = CliRunner().invoke(cli, command[3:])
    assert result.exit_code == 0, result.output
    metrics = (out / "fold-2" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in metrics[1:]] == [str(e) for e in range(1, 9)]
    assert read_predictions(str(out / "fold-2" / "predictions.nc")).attrs["fold"] == "2"
    leftovers = [p.name for p in (out / "fold-2").rglob("*") if p.name.startswith(".tmp-")]
    assert len(leftovers) <= 1  # at most the one file the kill interrupted, never read by anyone


def test_each_fold_can_use_the_encoder_pretrained_without_it() -> None:
    from stefaland.finetune.config import FinetuneConfig
    from stefaland.finetune.run import per_fold_pretrained

    config = FinetuneConfig.model_validate({"model": {"name": "stefaland_resconn", "pretrained": "s3://b/runs/pretrain-pub-{fold}"}})
    assert per_fold_pretrained(config, 3).model.pretrained == "s3://b/runs/pretrain-pub-3"
    assert config.model.pretrained.endswith("{fold}")  # the run's own config is left as written
    shared = FinetuneConfig.model_validate({"model": {"name": "stefaland_resconn", "pretrained": "runs/pretrain"}})
    assert per_fold_pretrained(shared, 3) is shared


def test_an_encoder_that_saw_the_held_out_sites_is_refused(virtual_store: Path, tmp_path: Path) -> None:
    """Leakage check: resConn on PUB fold 2 needs an encoder pretrained without fold 2."""
    store = str(virtual_store)
    tiny = (REPO / "configs" / "pretrain_tiny.yaml").read_text().replace("epochs: 5", "epochs: 1")
    runner = CliRunner()
    for name, extra in (("leaky", ""), ("clean-2", ", exclude: {split: pub, fold: 2}")):
        config = tmp_path / f"{name}.yaml"
        config.write_text(tiny.replace("samples_per_site: 8}", f"samples_per_site: 2{extra}}}"))
        result = runner.invoke(cli, ["pretrain", "--store", store, "--config", str(config),
                                     "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == 0, result.output
    finetune = yaml.safe_load(TINY.read_text())
    finetune["model"].update(name="stefaland_resconn", pretrained=str(tmp_path / "leaky"))
    finetune["train"].update(epochs=1, iterations_per_epoch=2)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(finetune))
    args = ["finetune", "--store", store, "--config", str(tmp_path / "ft.yaml"), "--split", "pub", "--fold", "2", "--quiet"]
    leaky = runner.invoke(cli, [*args, "--out", str(tmp_path / "ft-leaky")])
    assert leaky.exit_code == 1
    assert "leakage" in leaky.output and "excluded nothing" in leaky.output and "pub fold 2" in leaky.output
    finetune["model"]["pretrained"] = str(tmp_path / "clean-{fold}")
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(finetune))
    clean = runner.invoke(cli, [*args, "--out", str(tmp_path / "ft-clean")])
    assert clean.exit_code == 0, clean.output
    assert (tmp_path / "ft-clean" / "fold-2" / "predictions.nc").exists()
