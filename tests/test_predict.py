"""`stefaland predict`: a finetuned run applied to held-out and ungauged sites of the virtual world,
the fold ensemble, bad catalogs (units, missing variable), the report's reader, HBV fluxes, and
the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from stefaland.run.predictions import read_predictions
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

TINY = {
    "task": "camels",
    "data": {"seq_len": 60, "train_start": "1980-01-01", "train_end": "2099-12-31",
             "test_start": "1980-01-01", "test_end": "2099-12-31"},
    "model": {"name": "lstm", "hidden": 8, "dropout": 0.0, "hbv": {"nmul": 2, "warmup_days": 20}},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 4},
}


def _finetune(store: Path, out: Path, folds: list[int], model: str = "lstm", **model_options) -> str:
    config_file = out.parent / f"{out.name}.yaml"
    raw = json.loads(json.dumps(TINY))
    raw["model"].update(name=model, **model_options)
    config_file.write_text(yaml.safe_dump(raw))
    for fold in folds:
        result = CliRunner().invoke(cli, ["finetune", "--store", str(store), "--config", str(config_file),
                                          "--out", str(out), "--split", "pub", "--fold", str(fold), "--quiet"])
        assert result.exit_code == 0, result.output
        # finetune wrote the fold's run record itself, with its training sites' statistics
        record = json.loads((out / f"fold-{fold}" / "run.json").read_text())
        assert record["fold"] == str(fold) and record["variables"]["target_bounds"] == [0.0, None]
    return str(out)


@pytest.fixture(scope="module")
def run(virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _finetune(virtual_store, tmp_path_factory.mktemp("runs") / "lstm", [1, 2])


def _edit_catalog(catalog: Path, tmp: Path, old: str, new: str) -> Path:
    text = catalog.read_text()
    assert text.count(old) == 1, old
    target = tmp / "world"
    shutil.copytree(catalog.parent, target)
    edited = target / catalog.name
    edited.write_text(text.replace(old, new))
    return edited


def test_predicts_held_out_and_ungauged_sites_as_a_fold_ensemble(run: str, virtual_world: Path,
                                                                  virtual_store: Path, tmp_path: Path) -> None:
    store = open_store(str(virtual_store))
    sites = np.asarray([str(s) for s in store["site"].values])
    folds = np.asarray(store["fold_pub"].values)
    ungauged = sites[np.isnan(store["target"].values[..., 0]).all(axis=1)]
    held_out = sites[folds == 1]
    assert len(ungauged) > 0, "the virtual world should have basins without a streamflow file"
    for site in ungauged:  # really no file at all, not just gaps
        assert not list(Path(virtual_world).parent.glob(f"usgs_streamflow/*/{site}_streamflow_qc.txt"))
    wanted = [*held_out, *ungauged]
    (tmp_path / "sites.txt").write_text("# held out of fold 1, then ungauged\n" + "\n".join(wanted) + "\n")
    out = tmp_path / "pred.nc"
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(virtual_world), "--sites",
                                      str(tmp_path / "sites.txt"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"predicted {len(wanted)} sites" in result.output and "2 model(s)" in result.output
    predictions = read_predictions(str(out))  # the report's reader accepts it
    assert [str(s) for s in predictions["site"].values] == wanted
    assert predictions.sizes["time"] == store.sizes["time"]
    assert predictions.attrs["units"] == "mm/day" and predictions.attrs["variable"] == "streamflow"
    assert np.isnan(predictions["obs"].values).all()  # prediction only
    sim, a, b = predictions["sim"].values, predictions["sim_fold1"].values, predictions["sim_fold2"].values
    assert np.isfinite(sim).all() and not np.allclose(a, b)
    np.testing.assert_allclose(sim, (a + b) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictions["spread"].values, np.abs(a - b) / 2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(predictions["lat"].values, store["lat"].sel(site=wanted).values)


def test_predict_matches_the_fold_s_own_predictions_on_its_held_out_sites(run: str, virtual_world: Path,
                                                                          tmp_path: Path) -> None:
    """Same weights, same inputs: predict on the held-out fold reproduces what finetune wrote for it,
    so the catalog → store → run-statistics path feeds the model exactly as training did."""
    own = read_predictions(str(Path(run) / "fold-1" / "predictions.nc"))
    out = tmp_path / "fold1.nc"
    result = CliRunner().invoke(cli, ["predict", str(Path(run) / "fold-1"), "--catalog", str(virtual_world),
                                      "--out", str(out), "--with-obs", "--quiet"])
    assert result.exit_code == 0, result.output
    predictions = read_predictions(str(out)).sel(site=own["site"].values)
    np.testing.assert_allclose(predictions["sim"].values, own["sim"].values, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(predictions["obs"].values, own["obs"].values, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert "spread" not in predictions  # one model: no ensemble


def test_a_units_mismatch_is_one_clear_line(run: str, virtual_world: Path, tmp_path: Path) -> None:
    # a catalog whose elevation is a dimensionless index: the build accepts it, the run must not
    catalog = _edit_catalog(virtual_world, tmp_path, "elev_mean:\n          units: m\n", "elev_mean:\n          units: '1'\n")
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(catalog), "--out", str(tmp_path / "p.nc"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {catalog}: static variable 'elev_mean' has units '1' but the run was trained with 'm'"]
    assert not (tmp_path / "p.nc").exists()


def test_a_missing_variable_is_one_clear_line(run: str, virtual_world: Path, tmp_path: Path) -> None:
    dayl = "        dayl:\n          units: s\n          group: climate\n          description: day length\n"
    catalog = _edit_catalog(virtual_world, tmp_path, dayl, "")  # a catalog without day length
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(catalog), "--out", str(tmp_path / "p.nc"), "--quiet"])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.count("\n") == 0 and "dynamic variable 'dayl' the run was trained on is missing" in line
    assert str(catalog) in line


def test_unknown_sites_and_a_run_without_its_record_are_refused(run: str, virtual_world: Path,
                                                                virtual_store: Path, tmp_path: Path) -> None:
    (tmp_path / "sites.txt").write_text("99999999\n")
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(virtual_world), "--sites",
                                      str(tmp_path / "sites.txt"), "--quiet"])
    assert result.exit_code == 1 and "site '99999999'" in result.output
    bare = tmp_path / "bare"
    shutil.copytree(Path(run) / "fold-2", bare)
    (bare / "run.json").unlink()
    result = CliRunner().invoke(cli, ["predict", str(bare), "--catalog", str(virtual_world), "--quiet"])
    assert result.exit_code == 1 and "run.json" in result.output and "--training-store" in result.output
    result = CliRunner().invoke(cli, ["predict", str(bare), "--catalog", str(virtual_world), "--training-store",
                                      str(virtual_store), "--out", str(tmp_path / "p.nc"), "--quiet"])
    assert result.exit_code == 0, result.output
    fallback = read_predictions(str(tmp_path / "p.nc"))["sim"].values
    result = CliRunner().invoke(cli, ["predict", str(Path(run) / "fold-2"), "--catalog", str(virtual_world),
                                      "--out", str(tmp_path / "q.nc"), "--quiet"])
    np.testing.assert_allclose(fallback, read_predictions(str(tmp_path / "q.nc"))["sim"].values, rtol=1e-5)


def test_hbv_runs_also_write_fluxes_states_and_parameters(virtual_store: Path, virtual_world: Path,
                                                           tmp_path: Path) -> None:
    import xarray as xr

    from stefaland.hbv import PARAMETER_RANGES

    run = _finetune(virtual_store, tmp_path / "hbv", [3], model="lstm_hbv")
    store = open_store(str(virtual_store))
    sites = np.asarray([str(s) for s in store["site"].values])
    ungauged = sites[np.isnan(store["target"].values[..., 0]).all(axis=1)]
    held_out = sites[np.asarray(store["fold_pub"].values) == 3]
    (tmp_path / "sites.txt").write_text("\n".join([*ungauged, *held_out]))
    out = tmp_path / "hbv.nc"
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(virtual_world), "--sites",
                                      str(tmp_path / "sites.txt"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"HBV fluxes, states and parameters -> {tmp_path / 'hbv_hbv.nc'}" in result.output
    predictions = read_predictions(str(out))
    fluxes = xr.open_dataset(tmp_path / "hbv_hbv.nc")
    for name in ("et", "recharge", "snowpack", "sm", "melt", "streamflow"):
        assert fluxes[name].dims == ("site", "time") and fluxes[name].shape == predictions["sim"].shape, name
        assert np.isfinite(fluxes[name].values).all(), name
    assert fluxes["sm"].attrs["units"] == "mm" and fluxes["et"].attrs["units"] == "mm/day"
    assert (fluxes["et"].values >= 0).all() and (fluxes["snowpack"].values >= 0).all()
    # the streamflow the fluxes come with is the prediction itself: one model, one simulation
    np.testing.assert_allclose(fluxes["streamflow"].values, predictions["sim"].values, rtol=1e-4, atol=1e-5)
    names = [str(p) for p in fluxes["parameter"].values]
    assert {"BETA", "FC", "K0", "route_a"} <= set(names)
    for name in ("BETA", "FC", "K0"):
        low, high = PARAMETER_RANGES[name]
        values = fluxes["parameters"].sel(parameter=name).values
        assert ((values >= low) & (values <= high)).all() and values.std() > 0, name  # learned per site


def test_model_card_describes_training_data_holdout_results_and_limits(run: str, virtual_store: Path,
                                                                       tmp_path: Path) -> None:
    from stefaland.metrics import site_metrics
    from stefaland.report.model_card import write_model_card

    url = write_model_card(run)
    card = Path(url).read_text()
    assert Path(url) == Path(run) / "MODEL_CARD.md"
    assert card.startswith("# Model card: LSTM-SL (camels)") and "Model `lstm`: LSTM-SL" in card
    assert f"`{virtual_store}`" in card and "dataset `virtual_world`" in card
    assert "fold1 (" in card and "fold2 (" in card and "`prcp` [mm/day]" in card and "## Limits" in card
    # the holdout medians are those of the folds' own predictions
    obs = np.concatenate([read_predictions(str(Path(run) / f"fold-{k}" / "predictions.nc"))["obs"].values for k in (1, 2)])
    sim = np.concatenate([read_predictions(str(Path(run) / f"fold-{k}" / "predictions.nc"))["sim"].values for k in (1, 2)])
    nse = float(np.nanmedian(site_metrics(obs, sim, metrics=["NSE"])["NSE"]))
    assert f"{nse:.3f}" in card.split("## Held-out results")[1].split("## Limits")[0]


def test_a_run_on_object_storage_predicts_to_object_storage(run: str, virtual_world: Path, s3_bucket: str,
                                                            s3_env) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    fs.put(str(Path(run) / "fold-1"), f"{s3_bucket[5:]}/runs/lstm/fold-1", recursive=True)
    out = f"{s3_bucket}/predictions/ungauged.zarr"
    result = CliRunner().invoke(cli, ["predict", f"{s3_bucket}/runs/lstm", "--catalog", str(virtual_world),
                                      "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    predictions = read_predictions(out)
    local = read_predictions(str(Path(run) / "fold-1" / "predictions.nc"))
    np.testing.assert_allclose(predictions["sim"].sel(site=local["site"].values).values, local["sim"].values,
                               rtol=1e-4, atol=1e-4)


def test_start_and_end_restrict_the_predicted_days(run: str, virtual_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "spring.nc"
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(virtual_world), "--start", "1981-03-01",
                                      "--end", "1981-06-30", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    times = read_predictions(str(out))["time"].values
    assert str(times[0])[:10] == "1981-03-01" and str(times[-1])[:10] == "1981-06-30" and len(times) == 122
    assert np.isfinite(read_predictions(str(out))["sim"].values).all()


def test_a_stefaland_resconn_run_predicts_what_it_predicted_in_finetuning(virtual_store: Path, virtual_world: Path,
                                                                         tmp_path: Path) -> None:
    """The paper's main model: frozen pretrained encoder + residual LSTM, through predict."""
    raw = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
    raw["train"].update({"epochs": 1})
    raw["data"].update({"samples_per_site": 1})
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["pretrain", "--store", str(virtual_store), "--config",
                                      str(tmp_path / "pretrain.yaml"), "--out", str(tmp_path / "pre"), "--quiet"])
    assert result.exit_code == 0, result.output
    run = _finetune(virtual_store, tmp_path / "resconn", [4], model="stefaland_resconn", pretrained=str(tmp_path / "pre"),
                   allow_pretraining_leakage=True)  # a plumbing test: the leakage guard is finetune's
    assert json.loads((Path(run) / "fold-4" / "run.json").read_text())["pretrained"]["config"]["d_model"] == 32
    shutil.rmtree(tmp_path / "pre")  # the run folder alone must be enough
    out = tmp_path / "p.nc"
    result = CliRunner().invoke(cli, ["predict", run, "--catalog", str(virtual_world), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    own = read_predictions(str(Path(run) / "fold-4" / "predictions.nc"))
    predictions = read_predictions(str(out))
    assert predictions.attrs["model"] == "StefaLand-resConn"  # model.label's default
    np.testing.assert_allclose(predictions["sim"].sel(site=own["site"].values).values, own["sim"].values,
                               rtol=1e-4, atol=1e-4)
