"""Report guards: `report` reads what `predict` writes;
no non-finite metric reaches a table, CSV or JSON as a number and the footnote's counts equal the
CSV's; FLV / FLV_log are NaN, not ±1e11, on near-zero or flat low flows; names are escaped in
Markdown; a predictions time axis that is not datetimes, or repeats a day, is one line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from click.testing import CliRunner

from stefaland.metrics import site_metrics
from stefaland.report import write_predictions
from stefaland.report.tasks import TASKS
from stefaland_cli.main import cli

TINY_FINETUNE = {
    "task": "camels",
    "data": {"seq_len": 60, "train_start": "1980-01-01", "train_end": "2099-12-31",
             "test_start": "1980-01-01", "test_end": "2099-12-31"},
    "model": {"name": "lstm", "hidden": 8, "dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 4},
}


def _report(*args: str):
    result = CliRunner().invoke(cli, ["report", *args, "--quiet"])
    assert "Traceback" not in result.output
    return result


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- report reads what predict writes ------------------------------------------------------------

@pytest.fixture(scope="module")
def predicted(virtual_store: Path, virtual_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-fold finetune run, then `stefaland predict` with and without observations."""
    tmp = tmp_path_factory.mktemp("predict")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_FINETUNE))
    run = tmp / "run"
    result = CliRunner().invoke(cli, ["finetune", "--store", str(virtual_store), "--config", str(config), "--out",
                                      str(run), "--split", "pub", "--fold", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    for name, extra in (("with_obs", ["--with-obs"]), ("no_obs", [])):
        result = CliRunner().invoke(cli, ["predict", str(run), "--catalog", str(virtual_world), "--training-store",
                                          str(virtual_store), "--out", str(tmp / name / "predictions.nc"),
                                          "--quiet", *extra])
        assert result.exit_code == 0, result.output
    return tmp


def test_report_scores_the_file_predict_writes(predicted: Path, tmp_path: Path) -> None:
    result = _report("camels", "--runs", str(predicted / "with_obs"), "--out", str(tmp_path / "r"),
                     "--format", "md,csv,json")
    assert result.exit_code == 0, result.output
    table = (tmp_path / "r" / "camels_table.md").read_text()
    assert "predict NSE ↑" in table and "| LSTM-SL |" in table
    sites = pd.read_csv(tmp_path / "r" / "camels_sites.csv", dtype={"site": str})
    assert set(sites["split"]) == {"predict"} and len(sites) == 24  # every site of the virtual world
    assert sites["NSE"].notna().sum() > 0  # with observations, sites are scored
    # the same command with --split predict, and with --split pub (the run's holdout scheme)
    for split in ("predict", "pub"):
        again = _report("camels", "--split", split, "--runs", str(predicted / "with_obs"), "--out",
                        str(tmp_path / split), "--format", "csv")
        assert again.exit_code == 0, again.output


def test_predictions_without_observations_are_listed_not_scored(predicted: Path, tmp_path: Path) -> None:
    result = _report("camels", "--runs", str(predicted / "no_obs"), "--out", str(tmp_path / "r"), "--format", "md,csv")
    assert result.exit_code == 0, result.output
    table = (tmp_path / "r" / "camels_table.md").read_text()
    assert "predict/LSTM-SL: 0 scored, 24 skipped" in table
    row = next(line for line in table.splitlines() if line.startswith("| LSTM-SL |"))
    assert "NaN" not in row and set(c.strip() for c in row.strip("|").split("|")[1:]) == {"—"}


# -- non-finite values and the footnote ----------------------------------------------------------

def _awkward_runs(root: Path, model: str = "M") -> np.ndarray:
    """camels/pub files where some sites have constant, near-zero or flat-low-end observations."""
    rng = np.random.default_rng(3)
    folds = TASKS["camels"].schemes["pub"].folds
    n_sites, n_time = 30, 200
    obs = rng.gamma(2.0, 1.5, (n_sites, n_time))
    obs[0] = 0.1  # constant: NSE, KGE, Corr undefined; FLV_log has no low-end shape
    obs[1, :80] = 1e-9  # near-zero low flows: FLV was ±1e11
    obs[2] = 0.0  # an ephemeral stream that never flowed in the period
    obs[3, rng.random(n_time) < 0.5] = 0.004  # a flat low end (a gauge's rounding floor)
    sim = obs * 1.1 + rng.normal(0, 0.3, obs.shape).clip(0)
    sites = np.array([f"{k:08d}" for k in range(n_sites)])
    times = pd.date_range("2001-01-01", periods=n_time)
    for k, fold in enumerate(folds):
        idx = np.arange(k, n_sites, len(folds))
        write_predictions(str(root / f"pub-{fold}.nc"), obs[idx], sim[idx], sites[idx], times, "camels", "pub", fold,
                          model, "mm/day")
    return obs


def test_near_zero_and_constant_flows_are_skipped_and_counted_consistently(tmp_path: Path) -> None:
    obs = _awkward_runs(tmp_path / "runs")
    result = _report("camels", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--format", "md,csv,json")
    assert result.exit_code == 0, result.output
    sites = pd.read_csv(tmp_path / "r" / "camels_sites.csv", dtype={"site": str}).set_index("site")
    summary = pd.read_csv(tmp_path / "r" / "camels_summary.csv").set_index("metric")
    assert np.isnan(sites.loc["00000001", "FLV"]) and np.isnan(sites.loc["00000002", "FLV"])
    for site in ("00000000", "00000002", "00000003"):
        assert np.isnan(sites.loc[site, "FLV_log"]), site
    for metric in ("FLV", "FLV_log", "PBIAS", "FHV", "NSE", "KGE"):
        values = sites[metric]
        assert (values.dropna().abs() < 1e6).all(), f"{metric}: {values.abs().max()}"
        assert summary.loc[metric, "n_scored"] == values.notna().sum()
        assert summary.loc[metric, "n_skipped"] == values.isna().sum()
    table = (tmp_path / "r" / "camels_table.md").read_text()
    footnote = table.strip().splitlines()[-1]
    n = summary.loc
    assert f"pub/M: {n['RMSE', 'n_scored']} scored, {n['RMSE', 'n_skipped']} skipped" in footnote
    for metric in ("NSE", "FLV"):  # fewer scored than RMSE: listed with their own counts
        match = re.search(rf"{metric}[^:;]*: (\d+) scored, (\d+) skipped", footnote.split("skipped", 1)[1])
        assert match, footnote
        assert (int(match.group(1)), int(match.group(2))) == (n[metric, "n_scored"], n[metric, "n_skipped"])
    document = json.loads((tmp_path / "r" / "camels_report.json").read_text(),
                          parse_constant=lambda c: pytest.fail(f"non-finite {c} in the JSON"))
    for row in document["sites"]:
        for metric in ("FLV", "FLV_log", "NSE"):
            assert row[metric] is None or math.isfinite(row[metric])
    assert obs.shape == (30, 200)


def test_flv_metrics_are_nan_not_huge_on_near_zero_and_flat_low_flows() -> None:
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.0, 300)
    cases = {
        "near_zero_low": np.r_[np.full(120, 1e-9), base[:180]],
        "constant": np.full(300, 0.1),
        "zeros": np.zeros(300),
        "flat_low_end": np.r_[np.full(150, 0.004), base[:150] + 0.01],
    }
    obs = np.stack(list(cases.values()))
    sim = obs + rng.uniform(0, 0.05, obs.shape)
    scores = site_metrics(obs, sim, metrics=["FLV", "FLV_log"])
    assert np.isnan(scores["FLV"][[0, 2]]).all()
    assert np.isnan(scores["FLV_log"]).all()
    assert np.isfinite(scores["FLV"][1]) and abs(scores["FLV"][1]) < 100  # constant but non-zero: defined
    healthy = site_metrics(base[None], base[None] * 1.2, metrics=["FLV", "FLV_log"])
    assert healthy["FLV"][0] == pytest.approx(20.0) and np.isfinite(healthy["FLV_log"][0])


# -- Markdown escaping ---------------------------------------------------------------------------

def test_model_names_are_escaped_in_the_markdown_table(tmp_path: Path) -> None:
    name = "evil|model *bold* <b>x</b> `code` [link](http://x)"
    _awkward_runs(tmp_path / "runs", model=name)
    result = _report("camels", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--format", "md,csv")
    assert result.exit_code == 0, result.output
    table = (tmp_path / "r" / "camels_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    unescaped_pipes = [len(re.findall(r"(?<!\\)\|", row)) for row in rows]
    assert len(set(unescaped_pipes)) == 1, rows  # every row has the header's number of cells
    assert r"evil\|model \*bold\* \<b\>x\</b\> \`code\` \[link\](http://x)" in rows[2]
    assert "<b>" not in table and "*bold*" not in table
    # the CSV keeps the name as written
    assert name in set(pd.read_csv(tmp_path / "r" / "camels_sites.csv")["model"])


# -- predictions time axis -----------------------------------------------------------------------

def _bad_time_file(path: Path, times) -> None:
    n_time = len(times)
    rng = np.random.default_rng(1)
    xr.Dataset({"obs": (("site", "time"), rng.random((3, n_time))), "sim": (("site", "time"), rng.random((3, n_time)))},
               coords={"site": ["a", "b", "c"], "time": times},
               attrs={"task": "camels", "split": "pub", "fold": 1, "model": "M", "units": "mm/day"}).to_netcdf(path)


@pytest.mark.parametrize("kind, times, expected", [
    ("integers", np.arange(40), "the time axis is not datetimes (dtype int64"),
    ("strings", np.array([f"day {k}" for k in range(40)]), "the time axis is not datetimes"),
    ("repeated", pd.DatetimeIndex(list(pd.date_range("2001-01-01", periods=39)) + [pd.Timestamp("2001-01-05")]),
     "time 2001-01-05 appears more than once"),
])
def test_a_bad_time_axis_is_one_line_naming_the_file(kind: str, times, expected: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.nc"
    _bad_time_file(path, times)
    line = _one_error(_report("camels", "--split", "pub", "--runs", str(path), "--out", str(tmp_path / "r")))
    assert str(path) in line and expected in line


def test_an_unordered_time_axis_is_sorted_not_refused(tmp_path: Path) -> None:
    times = pd.date_range("2001-01-01", periods=40)[::-1]
    _bad_time_file(tmp_path / "reversed.nc", times)
    from stefaland.report import read_predictions

    dataset = read_predictions(str(tmp_path / "reversed.nc"))
    assert pd.DatetimeIndex(dataset["time"].values).is_monotonic_increasing
