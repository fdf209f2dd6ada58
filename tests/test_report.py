"""``stefaland report`` end to end on synthetic predictions files: real NetCDF/zarr, real CLI, real S3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy import stats

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.metrics import site_metrics
from stefaland.report import make_report, read_predictions, write_predictions
from stefaland.report.tasks import TASKS
from stefaland.run.predictions import predictions_dataset
from stefaland_cli.main import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_runs(root: str, models: dict[str, float], task: str = "camels", split: str = "pub", n_sites: int = 40,
               n_time: int = 120, seed: int = 0, coords: bool = True, suffix: str = ".nc",
               skip: tuple[str, int] | None = None) -> dict[str, np.ndarray]:
    """One file per (model, fold): sites dealt round-robin into the scheme's folds, noise per model."""
    rng = np.random.default_rng(seed)
    folds = TASKS[task].schemes[split].folds
    sites = np.array([f"{task}{k:04d}" for k in range(n_sites)])
    times = pd.date_range("2001-01-01", periods=n_time)
    obs = rng.gamma(2.0, 1.5, (n_sites, n_time))
    obs[5] = np.nan  # a site without observations: scored as skipped, never dropped
    lat, lon = rng.uniform(25, 50, n_sites), rng.uniform(-125, -65, n_sites)
    for model, noise in models.items():
        sim = obs * rng.uniform(0.8, 1.2, (n_sites, 1)) + rng.normal(0, noise, obs.shape)
        for k, fold in enumerate(folds):
            if skip == (model, k):
                continue
            idx = np.arange(k, n_sites, len(folds))
            write_predictions(fileio.join(root, model, f"{split}-fold-{fold}{suffix}"), obs[idx], sim[idx],
                              sites[idx], times, task, split, fold, model, "mm/day",
                              lat=lat[idx] if coords else None, lon=lon[idx] if coords else None)
    return {"obs": obs, "sites": sites}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", *args, "--quiet"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def parse_table(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    body = {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows[2:])}
    return header, body


def test_table_equals_medians_of_per_site_csv_and_json(tmp_path: Path):
    write_runs(str(tmp_path / "runs"), {"lstm": 1.2, "resconn": 0.5, "hbv": 0.8}, task="global", split="random")
    out = tmp_path / "out"
    code, output = invoke("global", "--split", "random", "--runs", str(tmp_path / "runs"), "--out", str(out),
                          "--models", "resconn,lstm,hbv", "--format", "md,csv,json")
    assert code == 0, output
    sites = pd.read_csv(out / "global_sites.csv", dtype={"site": str, "fold": str})
    # every held-out site scored exactly once per model, and the empty site kept (as NaN), not dropped
    assert sites.groupby("model").size().to_dict() == {"hbv": 40, "lstm": 40, "resconn": 40}
    assert not sites.duplicated(["model", "site"]).any()
    assert sites.loc[sites["site"] == "global0005", "NSE"].isna().all()
    header, body = parse_table((out / "global_table.md").read_text())
    assert list(body) == ["resconn", "lstm", "hbv"]  # --models sets the row order
    document = json.loads((out / "global_report.json").read_text())
    summary = {(r["model"], r["metric"]): r for r in document["summary"]}
    for model, rows in sites.groupby("model"):
        for column, cell in zip(header[1:], body[model]):
            metric = column.split()[1]
            median = rows[metric].median()  # pandas skips the NaN site
            decimals = 1 if metric in ("FLV", "FHV") else 3
            assert float(cell) == pytest.approx(round(median, decimals), abs=10 ** -decimals / 2 + 1e-9), (model, metric)
            assert summary[(model, metric)]["median"] == pytest.approx(median, rel=1e-9)
            assert summary[(model, metric)]["n_scored"] == rows[metric].notna().sum()
            assert summary[(model, metric)]["n_skipped"] == 1
    assert set(pd.read_csv(out / "global_summary.csv")["metric"]) >= {"NSE", "KGE", "FLV", "FHV", "FLV_log", "RMSE_FDC"}
    assert not list(out.glob("*.png"))  # only the formats asked for (the plots are checked below)
    assert "resconn" in output and str(out / "global_table.md") in output


def test_a_missing_fold_is_an_error_naming_it(tmp_path: Path):
    write_runs(str(tmp_path / "runs"), {"lstm": 1.0, "resconn": 0.5}, task="ismn", split="random", skip=("resconn", 3))
    code, output = invoke("ismn", "--split", "random", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"))
    assert code == 1
    assert output.strip().splitlines()[-1] == ("error: model 'resconn', ismn/random: fold(s) 4 missing "
                                               "(found folds 1, 2, 3, 5; 5 expected)")
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_a_subset_of_folds_is_scored_only_when_asked_and_says_so(tmp_path: Path):
    data = write_runs(str(tmp_path / "runs"), {"lstm": 1.0}, task="ismn", split="random", skip=("lstm", 3))
    code, output = invoke("ismn", "--split", "random", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                          "--folds", "1,2,3,5", "--format", "md,csv")
    assert code == 0, output
    assert "folds 1, 2, 3, 5 of 5 only" in output
    sites = pd.read_csv(tmp_path / "o" / next(p.name for p in (tmp_path / "o").iterdir() if p.name.endswith("sites.csv")),
                        dtype={"site": str})
    held_in_fold_4 = set(data["sites"][np.arange(3, 40, 5)])
    assert len(sites) == 32 and not held_in_fold_4 & set(sites["site"])  # fold 4's sites are not there at all
    code, output = invoke("ismn", "--split", "random", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "p"),
                          "--folds", "7")
    assert code == 1 and "--folds 7: fold 7 is not in split 'random' (folds: 1, 2, 3, 4, 5)" in output
    code, output = invoke("ismn", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "q"), "--folds", "1")
    assert code == 1 and "--folds needs one --split" in output


def test_a_site_scored_twice_is_an_error_naming_the_site(tmp_path: Path):
    runs = tmp_path / "runs"
    write_runs(str(runs), {"lstm": 1.0}, task="ismn", split="random")
    stray = read_predictions(str(runs / "lstm" / "random-fold-3.nc"))
    fold4 = runs / "lstm" / "random-fold-4.nc"
    four = read_predictions(str(fold4))
    both = xr.concat([four[["obs", "sim"]], stray[["obs", "sim"]].isel(site=[1])], dim="site")
    write_predictions(str(fold4), both["obs"].values, both["sim"].values, both["site"].values, both["time"].values,
                      "ismn", "random", 4, "lstm", "mm/day")
    code, output = invoke("ismn", "--split", "random", "--runs", str(runs))
    assert code == 1
    site = str(stray["site"].values[1])
    assert f"error: model 'lstm', ismn/random: site {site} is held out in fold 3 and fold 4" in output


def test_two_files_for_one_model_and_fold_name_both(tmp_path: Path):
    runs = tmp_path / "runs"
    write_runs(str(runs), {"lstm": 1.0}, task="ismn", split="random")
    again = read_predictions(str(runs / "lstm" / "random-fold-2.nc"))
    write_predictions(str(runs / "rerun" / "lstm-2.nc"), again["obs"].values, again["sim"].values,
                      again["site"].values, again["time"].values, "ismn", "random", "2", "lstm", "mm/day")
    with pytest.raises(StefaLandError, match=r"fold 2: two files .*random-fold-2\.nc and .*lstm-2\.nc"):
        make_report("ismn", "random", str(runs), str(tmp_path / "o"), quiet=True)


def test_split_all_joins_every_scheme_and_ensemble_members_are_averaged(tmp_path: Path):
    runs = tmp_path / "runs"
    write_runs(str(runs), {"lstm": 1.0, "resconn": 0.5}, task="ismn", split="random", n_sites=20)
    # Europe: one ensemble-only file (no 'sim', two members); 'sim' must be their mean
    rng = np.random.default_rng(5)
    obs = rng.uniform(0.05, 0.4, (9, 90))
    low, high = obs - 0.02 + rng.normal(0, 0.03, obs.shape), obs + 0.05 + rng.normal(0, 0.03, obs.shape)
    ensemble = predictions_dataset(obs, high, [f"eu{k}" for k in range(9)], pd.date_range("2015", periods=90),
                                   "ismn", "europe", "1", "lstm", "mm/day", members={"a": low, "b": high})
    ensemble.drop_vars("sim").to_netcdf(runs / "europe.nc", engine="h5netcdf")
    report = make_report("ismn", "all", str(runs), str(tmp_path / "o"), formats=["md", "csv"], quiet=True)
    header, body = parse_table(report.table)
    assert header[1:] == [f"{split} {m}" for split in ("random", "europe") for m in ("RMSE ↓", "ubRMSE ↓", "Corr ↑")]
    assert body["resconn"][3:] == ["—", "—", "—"]  # resconn has no Europe run
    europe = report.sites[report.sites["split"] == "europe"]
    assert len(europe) == 9 and set(europe["fold"]) == {"1"}
    expected = site_metrics(obs, (low.astype(np.float32) + high.astype(np.float32)) / 2, min_valid=30)["RMSE"]
    np.testing.assert_allclose(europe["RMSE"].to_numpy(), expected, rtol=1e-5)
    assert sorted(Path(u).name for u in report.outputs) == ["ismn_sites.csv", "ismn_summary.csv", "ismn_table.md"]


def test_map_is_skipped_with_a_note_when_sites_have_no_coordinates(tmp_path: Path, caplog):
    write_runs(str(tmp_path / "runs"), {"lstm": 1.0}, task="ismn", split="europe", n_sites=12, coords=False)
    with caplog.at_level("INFO", logger="stefaland.report"):
        report = make_report("ismn", "europe", str(tmp_path / "runs"), str(tmp_path / "o"), quiet=True)
    names = sorted(Path(u).name for u in report.outputs)
    assert "ismn_europe_corr_cdf.png" in names and "ismn_europe_median_site.png" in names
    assert not any("map" in n for n in names)
    assert "no lat/lon" in caplog.text
    header, _ = parse_table(report.table)
    assert header == ["Model", "europe RMSE ↓", "europe ubRMSE ↓", "europe Corr ↑"]
    with pytest.raises(StefaLandError, match="no predictions files for ismn/random"):
        make_report("ismn", "random", str(tmp_path / "runs"), str(tmp_path / "o"), quiet=True)
    with pytest.raises(StefaLandError, match=r"no ismn predictions for model\(s\) resconn"):
        make_report("ismn", "all", str(tmp_path / "runs"), str(tmp_path / "o"), models=["lstm", "resconn"], quiet=True)


def test_wosis_static_targets_are_pooled_across_sites(tmp_path: Path):
    rng = np.random.default_rng(7)
    n = 200
    obs = {"clay": rng.uniform(5, 60, n), "sand": rng.uniform(10, 80, n)}
    sims = {v: o + rng.normal(0, 12, n) for v, o in obs.items()}
    sites = np.array([f"profile{k}" for k in range(n)])
    for variable in obs:
        for fold in range(1, 6):
            idx = np.arange(fold - 1, n, 5)
            if fold == 5:  # a time axis of length 1 is accepted as static too
                write_predictions(str(tmp_path / "runs" / f"{variable}-{fold}.nc"), obs[variable][idx, None],
                                  sims[variable][idx, None], sites[idx], ["2020-01-01"], "wosis", "random", fold,
                                  "finetune", "%", variable=variable)
            else:
                write_predictions(str(tmp_path / "runs" / f"{variable}-{fold}.nc"), obs[variable][idx],
                                  sims[variable][idx], sites[idx], None, "wosis", "random", fold, "finetune", "%",
                                  variable=variable, lat=rng.uniform(-30, 30, idx.size), lon=rng.uniform(-20, 50, idx.size))
    report = make_report("wosis", "random", str(tmp_path / "runs"), str(tmp_path / "o"), quiet=True)
    header, _ = parse_table(report.table)
    assert header == ["Model", "Property", "random Corr ↑", "random R² ↑", "random RMSE ↓"]
    for variable in obs:
        r = stats.pearsonr(sims[variable], obs[variable])[0]
        row = report.summary.query("variable == @variable").set_index("metric")["value"]
        assert row["Corr"] == pytest.approx(r, rel=1e-5) and row["R2"] == pytest.approx(r**2, rel=1e-5)
        assert f"| finetune | {variable} | {r:.3f} | {r * r:.3f} |" in report.table
    assert (tmp_path / "o" / "wosis_random_scatter.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "o" / "wosis_random_error_map.png").exists()  # fold 5 has no lat/lon -> skipped


def test_reading_and_writing_on_seaweedfs(s3_bucket: str, tmp_path: Path):
    runs = f"{s3_bucket}/runs"
    write_runs(runs, {"lstm": 1.0}, task="global", split="continents", n_sites=15, n_time=60, suffix=".zarr")
    write_runs(runs, {"resconn": 0.5}, task="global", split="continents", n_sites=15, n_time=60)
    code, output = invoke("global", "--split", "continents", "--runs", runs, "--out", f"{s3_bucket}/report",
                          "--format", "md,json", "--min-valid", "10")
    assert code == 0, output
    fs, root = fileio.filesystem(f"{s3_bucket}/report")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root))
    assert names == [".stefaland", "global_report.json", "global_table.md"]  # the marker says the folder is ours
    document = json.loads(fileio.read_bytes(f"{s3_bucket}/report/global_report.json"))
    assert {r["model"] for r in document["runs"]} == {"lstm", "resconn"}
    assert all(s.startswith("s3://") for r in document["runs"] for s in r["sources"])
    # the same files through a glob give the same table
    local = make_report("global", "continents", f"{runs}/*/*", str(tmp_path / "o"), formats=["md"], min_valid=10,
                        quiet=True)
    assert fileio.read_bytes(f"{s3_bucket}/report/global_table.md").decode() == local.table


def test_bad_predictions_files_are_refused_with_one_line(tmp_path: Path):
    runs = tmp_path / "runs"
    runs.mkdir()
    ds = xr.Dataset({"obs": (("site", "time"), np.ones((2, 3))), "sim": (("site", "time"), np.ones((2, 3)))},
                    coords={"site": ["a", "b"], "time": pd.date_range("2000", periods=3)},
                    attrs={"task": "camels", "split": "pub", "fold": 1, "units": "mm/day"})
    ds.to_netcdf(runs / "nomodel.nc", engine="h5netcdf")
    code, output = invoke("camels", "--split", "pub", "--runs", str(runs))
    assert code == 1 and re.search(r"error: .*nomodel\.nc: missing attribute\(s\) model", output)
    (runs / "nomodel.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(StefaLandError, match="nomodel.nc: cannot be read"):
        make_report("camels", "pub", str(runs), str(tmp_path / "o"), quiet=True)
    with pytest.raises(StefaLandError, match="has no split 'random'"):
        make_report("camels", "random", str(runs), str(tmp_path / "o"), quiet=True)


def test_units_must_agree_between_models(tmp_path: Path):
    runs = tmp_path / "runs"
    write_runs(str(runs), {"lstm": 1.0}, task="ismn", split="europe", n_sites=6)
    one = read_predictions(str(runs / "lstm" / "europe-fold-1.nc"))
    write_predictions(str(runs / "other.nc"), one["obs"].values, one["sim"].values, one["site"].values,
                      one["time"].values, "ismn", "europe", "1", "other", "m3/m3")
    with pytest.raises(StefaLandError, match="model 'other' \\(europe\\) is in 'm3/m3' but model 'lstm'"):
        make_report("ismn", "europe", str(runs), str(tmp_path / "o"), quiet=True)


def test_local_zarr_predictions_are_replaced_whole_and_incomplete_ones_refused(tmp_path: Path):
    url = str(tmp_path / "p.zarr")
    times = pd.date_range("2000", periods=4)
    write_predictions(url, np.ones((2, 4)), np.ones((2, 4)), ["a", "b"], times, "camels", "pub", 1, "m", "mm/day")
    write_predictions(url, np.zeros((3, 4)), np.ones((3, 4)), ["a", "b", "c"], times, "camels", "pub", 1, "m", "mm/day")
    again = read_predictions(url)
    assert list(again["site"].values) == ["a", "b", "c"] and float(again["obs"].sum()) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]  # no temporary or old copies left
    import zarr

    zarr.open_group(url, mode="r+").attrs["stefaland_complete"] = 0  # as an interrupted S3 write leaves it
    with pytest.raises(StefaLandError, match="p.zarr: incomplete predictions store"):
        read_predictions(url)


def camels_pub_layout(shared_data: Path) -> pd.DataFrame:
    """The paper's PUB layout on real CAMELS metadata: the 531 basins, 10 folds, real lat/lon.

    The folds are MHPI's published random 10-fold PUB split (Feng et al. 2022) restricted to the 531
    subset; the paper's own split has the same shape but other sizes (see SOURCES.md).
    """
    split_dir = shared_data / "mhpi_dplhbv_pub_split" / "hydroDL-dev" / "example" / "dPLHBV"
    folds = json.loads((split_dir / "PUBsplitLst.txt").read_text())
    basins = (shared_data / "camels_us" / "531_basin_list.txt").read_text().split()
    fold_of = {f"{gauge:08d}": k + 1 for k, members in enumerate(folds) for gauge in members}
    topo = pd.read_csv(shared_data / "camels_us" / "camels_attributes_v2.0" / "camels_topo.txt", sep=";",
                       dtype={"gauge_id": str}).set_index("gauge_id")
    return pd.DataFrame({"site": basins, "fold": [fold_of[b] for b in basins],
                         "lat": topo.loc[basins, "gauge_lat"].to_numpy(),
                         "lon": topo.loc[basins, "gauge_lon"].to_numpy()})


def write_camels_pub_runs(layout: pd.DataFrame, runs: Path, n_time: int = 365, seed: int = 0) -> None:
    """Synthetic daily flows (seasonal, storm-driven) and two models of different skill."""
    rng = np.random.default_rng(seed)
    n = len(layout)
    days = np.arange(n_time)
    season = 1.0 + 0.8 * np.sin(2 * np.pi * (days[None, :] - rng.uniform(0, 365, (n, 1))) / 365)
    storms = np.zeros((n, n_time))
    for t in range(1, n_time):  # a linear reservoir fed by random storms
        storms[:, t] = 0.85 * storms[:, t - 1] + rng.exponential(1.0, n) * (rng.random(n) < 0.15)
    obs = rng.uniform(0.2, 3.0, (n, 1)) * season * (0.3 + storms)
    times = pd.date_range("2000-10-01", periods=n_time)
    for model, noise in (("LSTM-SL", 0.45), ("StefaLand-resConn", 0.25)):
        sim = np.clip(obs * np.exp(rng.normal(0, noise, obs.shape)) * rng.uniform(0.85, 1.15, (n, 1)), 0, None)
        for fold, rows in layout.groupby("fold"):
            idx = rows.index.to_numpy()
            write_predictions(str(runs / model / f"pub-fold-{fold}.nc"), obs[idx], sim[idx], rows["site"], times,
                              "camels", "pub", fold, model, "mm/day", lat=rows["lat"], lon=rows["lon"])


def test_the_papers_camels_pub_layout_renders(shared_data: Path, tmp_path: Path):
    layout = camels_pub_layout(shared_data)
    assert len(layout) == 531 and layout["fold"].nunique() == 10
    write_camels_pub_runs(layout, tmp_path / "runs")
    code, output = invoke("camels", "--split", "pub", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                          "--models", "LSTM-SL,StefaLand-resConn")
    assert code == 0, output
    sites = pd.read_csv(tmp_path / "o" / "camels_sites.csv", dtype={"site": str, "fold": str})
    assert sorted(sites.loc[sites["model"] == "LSTM-SL", "site"]) == sorted(layout["site"])
    assert sites.groupby("model")["fold"].nunique().tolist() == [10, 10]
    _, body = parse_table((tmp_path / "o" / "camels_table.md").read_text())
    assert float(body["StefaLand-resConn"][3]) > float(body["LSTM-SL"][3])  # less noise, higher median NSE
    assert "pub/LSTM-SL: 531 scored, 0 skipped" in output
    for name in ("camels_pub_nse_cdf.png", "camels_pub_nse_map.png", "camels_pub_median_site.png"):
        data = (tmp_path / "o" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
