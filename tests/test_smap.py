"""SMAP soil moisture from hydroDL's own CONUS example, end to end, as a user types it.

The shipped catalog (catalog/smap_conus.yaml) builds the real sample in ../shared/data (412 cells,
2015-04-01..2017-03-31) through the hydroDL CSV driver; the stored values are compared with the CSVs
read here with the csv module (not the driver's pandas path), including -9999 gaps and the unit
conversions. Then a tiny LSTM-SL is finetuned on the temporal split of task ``smap`` and reported with
the soil-moisture metrics. A tiny hand-written database checks the driver's one-line refusals.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

from stefaland.sources.hydrodl_csv import HydroDLCellsSource, HydroDLSeriesSource, cell_ids
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "hydrodl_smap_conusv4f1/data"  # hydroDL's rootDB
DATASET = "CONUSv4f1"


def _run(args: list[str], env: dict[str, str]) -> Result:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    return result


def _csv_value(path: Path, row: int, column: int = 0) -> float:
    """The CSV's own number at (row, column), 0-based, read with the csv module."""
    with open(path, newline="") as handle:
        for number, fields in enumerate(csv.reader(handle)):
            if number == row:
                return float(fields[column])
    raise AssertionError(f"{path} has no row {row}")


@pytest.fixture(scope="module")
def smap(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The store (`data build --catalog catalog/smap_conus.yaml`), one tiny temporal run and its report."""
    work = tmp_path_factory.mktemp("smap")
    env = {"HYDRODL_ROOT": str(shared_data / SAMPLE)}
    store = work / "smap.zarr"
    built = _run(["data", "build", "--catalog", str(REPO / "catalog" / "smap_conus.yaml"), "--out", str(store),
                  "--quiet"], env)
    config = yaml.safe_load((REPO / "configs" / "finetune_smap.yaml").read_text())
    config["model"].update(hidden=8)
    config["train"].update(epochs=1, iterations_per_epoch=5, batch_size=16, threads=1, device="cpu")
    (work / "finetune.yaml").write_text(yaml.safe_dump(config))
    runs = work / "runs"
    tuned = _run(["finetune", "--store", str(store), "--config", str(work / "finetune.yaml"), "--out", str(runs / "lstm"),
                  "--task", "smap", "--split", "temporal", "--quiet"], env)
    report = _run(["report", "smap", "--split", "temporal", "--runs", str(runs), "--out", str(work / "reports"),
                   "--format", "md,csv,json", "--quiet"], env)
    return {"store": store, "root": shared_data / SAMPLE / DATASET, "build": built.output, "finetune": tuned.output,
            "report": report.output, "reports": work / "reports", "runs": runs, "env": env, "work": work}


def test_store_holds_every_cell_and_day_of_the_sample(smap: dict) -> None:
    ds = open_store(str(smap["store"]))
    assert "412 sites × 731 days" in smap["build"]
    assert [str(s) for s in ds["site"].values] == cell_ids(412, "smap")
    assert str(ds["site"].values[0]) == "smap_0001" and str(ds["site"].values[-1]) == "smap_0412"
    assert ds["time"].values[0] == np.datetime64("2015-04-01") and ds["time"].values[-1] == np.datetime64("2017-03-31")
    assert [str(v) for v in ds["dvar"].values] == ["precipitation", "tmean", "swd", "specific_humidity"]
    assert [str(v) for v in ds["tvar"].values] == ["soil_moisture"]
    units = dict(zip(ds["dvar"].values.astype(str), ds["dvar_units"].values.astype(str)))
    assert units == {"precipitation": "mm/day", "tmean": "degC", "swd": "W/m2", "specific_humidity": "kg/kg"}
    assert str(ds["tvar_units"].values[0]) == "m3/m3"
    # lat/lon from crd.csv, row n -> smap_{n+1:04d}
    root = smap["root"]
    for row in (0, 57, 411):
        site = f"smap_{row + 1:04d}"
        assert float(ds["lat"].sel(site=site)) == pytest.approx(_csv_value(root / "crd.csv", row, 0))
        assert float(ds["lon"].sel(site=site)) == pytest.approx(_csv_value(root / "crd.csv", row, 1))


@pytest.mark.parametrize(("row", "day"), [(0, "2015-04-01"), (200, "2015-12-31"), (411, "2016-03-31"),
                                          (5, "2016-04-01"), (300, "2017-03-31")])
def test_stored_forcings_are_the_csv_values_in_canonical_units(smap: dict, row: int, day: str) -> None:
    ds = open_store(str(smap["store"]))
    stamp = pd.Timestamp(day)
    folder = str(stamp.year if stamp.month >= 4 else stamp.year - 1)  # a hydroDL year starts on April 1
    column = (stamp - pd.Timestamp(f"{folder}-04-01")).days
    stored = ds["dynamic"].sel(site=f"smap_{row + 1:04d}", time=day)
    raw = {name: _csv_value(smap["root"] / folder / f"{name}.csv", row, column)
           for name in ("APCP_FORA", "TMP_2_FORA", "DSWRF_FORA", "SPFH_2_FORA")}
    assert float(stored.sel(dvar="precipitation")) == pytest.approx(raw["APCP_FORA"] * 24.0, rel=1e-6, abs=1e-6)  # mm/h
    assert float(stored.sel(dvar="tmean")) == pytest.approx(raw["TMP_2_FORA"] - 273.15, abs=1e-4)  # K
    assert float(stored.sel(dvar="swd")) == pytest.approx(raw["DSWRF_FORA"], rel=1e-6)
    assert float(stored.sel(dvar="specific_humidity")) == pytest.approx(raw["SPFH_2_FORA"], rel=1e-6)


def test_stored_smap_keeps_the_gaps_and_the_values(smap: dict) -> None:
    ds = open_store(str(smap["store"]))
    target = ds["target"].sel(tvar="soil_moisture").transpose("site", "time").values.astype(np.float64)
    root = smap["root"]
    for folder, offset in (("2015", 0), ("2016", 366)):
        raw = np.array(list(csv.reader(open(root / folder / "SMAP_AM.csv", newline=""))), dtype=np.float64)
        stored = target[:, offset:offset + raw.shape[1]]
        missing = raw == -9999
        assert missing.any() and np.isnan(stored[missing]).all()  # -9999 -> NaN, nowhere else
        assert np.isfinite(stored[~missing]).all()
        np.testing.assert_allclose(stored[~missing], raw[~missing].astype(np.float32), rtol=1e-6)
    assert _csv_value(root / "2015" / "SMAP_AM.csv", 0, 1) == -9999 and np.isnan(target[0, 1])  # smap_0001, 2015-04-02
    assert 0.35 < np.isfinite(target).mean() < 0.45  # ~41 % of cell-days observed


def test_stored_statics_convert_percent_and_keep_the_missing_cell(smap: dict) -> None:
    ds = open_store(str(smap["store"]))
    static = ds["static"]
    root = smap["root"] / "const"
    assert float(static.sel(site="smap_0001", svar="sand")) == pytest.approx(_csv_value(root / "Sand.csv", 0) / 100, rel=1e-6)
    assert float(static.sel(site="smap_0412", svar="bulk_density")) == pytest.approx(_csv_value(root / "Bulk.csv", 411), rel=1e-6)
    assert float(static.sel(site="smap_0010", svar="land_cover_class")) == _csv_value(root / "flag_landcover.csv", 9)
    assert _csv_value(root / "Sand.csv", 57) == -9999  # cell 58 has no soil data in hydroDL's files
    assert np.isnan(static.sel(site="smap_0058", svar=["sand", "silt", "clay", "bulk_density", "soil_capacity"]).values).all()
    assert np.isfinite(static.sel(site="smap_0058", svar="ndvi").values)


def test_temporal_run_and_report_show_the_soil_moisture_metrics(smap: dict) -> None:
    assert "fold all: 412 training / 412 held-out sites" in smap["finetune"]
    run = json.loads((smap["runs"] / "lstm" / "temporal" / "run.json").read_text())
    assert run["task"] == "smap" and run["target_defaults"] == {"train.loss": "rmse", "train.optimizer": "adadelta"}
    table = (smap["reports"] / "smap_table.md").read_text()
    assert "| Model | temporal RMSE ↓ | temporal ubRMSE ↓ | temporal Corr ↑ |" in table
    assert "LSTM-SL" in table and table in smap["report"]
    summary = json.loads((smap["reports"] / "smap_report.json").read_text())
    assert summary["runs"][0]["variable"] == "soil_moisture" and summary["runs"][0]["units"] == "m3/m3"
    sites = pd.read_csv(smap["reports"] / "smap_sites.csv")
    scored = sites[sites["split"] == "temporal"]
    assert len(scored) == 412 and (scored["RMSE"] >= scored["ubRMSE"] - 1e-9).all()
    assert np.isfinite(scored[["RMSE", "ubRMSE"]].to_numpy()).all()


def test_predictions_cover_the_test_year_within_the_physical_range(smap: dict) -> None:
    from stefaland.run.predictions import read_predictions

    predictions = read_predictions(str(smap["runs"] / "lstm" / "temporal" / "predictions.nc"))
    assert predictions["time"].values[0] == np.datetime64("2016-04-01")
    assert predictions["time"].values[-1] == np.datetime64("2017-03-31")
    sim = predictions["sim"].values
    assert np.isfinite(sim).all() and sim.min() >= 0.0 and sim.max() <= 1.0  # m3/m3 bounds


def test_random_cell_folds_are_a_registered_scheme(smap: dict) -> None:
    split = smap["work"] / "smap_random.csv"
    _run(["splits", "make", "--task", "smap", "--scheme", "random", "--sites", str(smap["store"]), "--out", str(split)],
         smap["env"])
    folds = pd.read_csv(split, comment="#", dtype={"site": str})
    counts = folds.groupby(folds.columns[1]).size()
    assert sorted(counts.index) == [1, 2, 3, 4, 5] and set(counts) == {82, 83}


# ---- the driver's refusals, on a tiny database written here ----

def _tiny_database(root: Path) -> Path:
    """3 cells, one year folder of 4 days, one forcing and one static: hydroDL's layout."""
    dataset = root / "TINY"
    (dataset / "2015").mkdir(parents=True)
    (dataset / "const").mkdir()
    (dataset / "crd.csv").write_text("40.0,-100.0\n41.0,-101.0\n42.0,-102.0\n")
    (dataset / "2015" / "timeStr.csv").write_text("2015-04-01\n2015-04-02\n2015-04-03\n2015-04-04\n")
    (dataset / "2015" / "APCP_FORA.csv").write_text("0.1,0.2,-9999,0.4\n1,2,3,4\n0,0,0,0\n")
    (dataset / "const" / "Sand.csv").write_text("50\n-9999\n30\n")
    return dataset


def test_driver_reads_the_tiny_database(tmp_path: Path) -> None:
    dataset = _tiny_database(tmp_path)
    series = HydroDLSeriesSource(str(dataset), site_prefix="t").read()
    assert list(series["site"].values) == ["t_0001", "t_0002", "t_0003"]
    np.testing.assert_array_equal(series["APCP_FORA"].values[0], [0.1, 0.2, np.nan, 0.4])
    cells = HydroDLCellsSource(str(dataset), site_prefix="t").read()
    assert list(cells.columns) == ["site", "lat", "lon", "Sand"] and np.isnan(cells["Sand"][1])


@pytest.mark.parametrize(("file", "text", "message"), [
    ("2015/APCP_FORA.csv", "0.1,0.2,x,0.4\n1,2,3,4\n0,0,0,0\n", "APCP_FORA.csv line 1 column 3: not a number ('x')"),
    ("2015/APCP_FORA.csv", "0.1,0.2,0.3,0.4\n1,2,3\n0,0,0,0\n", "APCP_FORA.csv line 2: 3 fields where 2015/timeStr.csv (4 days) has 4"),
    ("2015/APCP_FORA.csv", "0.1,0.2,0.3,0.4\n1,2,3,4\n", "APCP_FORA.csv has 2 rows where crd.csv has 3 cells"),
    ("2015/timeStr.csv", "2015-04-01\n2015-04-02\n2015-13-03\n2015-04-04\n", "timeStr.csv line 3: unparseable date '2015-13-03'"),
])
def test_driver_refuses_a_broken_file_in_one_line(tmp_path: Path, file: str, text: str, message: str) -> None:
    from stefaland.errors import StefaLandError

    dataset = _tiny_database(tmp_path)
    (dataset / file).write_text(text)
    with pytest.raises(StefaLandError) as caught:
        HydroDLSeriesSource(str(dataset)).read()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("source stefaland_hydrodl_csv: ")


def test_a_variable_missing_from_a_year_folder_is_named(tmp_path: Path) -> None:
    from stefaland.errors import StefaLandError

    dataset = _tiny_database(tmp_path)
    (dataset / "2016").mkdir()
    (dataset / "2016" / "timeStr.csv").write_text("2016-04-01\n")
    (dataset / "2016" / "TMP_2_FORA.csv").write_text("280\n281\n282\n")
    source = HydroDLSeriesSource(str(dataset))
    assert source.to_dask()["TMP_2_FORA"].sel(time="2016-04-01").values.tolist() == [280.0, 281.0, 282.0]
    with pytest.raises(StefaLandError, match=r"variable APCP_FORA: file .*2016/APCP_FORA.csv not found \(it is in year folders 2015;"):
        source.to_dask()[["APCP_FORA"]].compute()
    with pytest.raises(StefaLandError, match=r"variable TMP_2_FORA: file .*2015/TMP_2_FORA.csv not found \(it is in year folders 2016;"):
        source.to_dask()[["TMP_2_FORA"]].compute()
    assert HydroDLSeriesSource(str(dataset), years=[2015]).read()["APCP_FORA"].shape == (3, 4)
