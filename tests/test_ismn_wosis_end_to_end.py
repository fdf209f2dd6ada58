"""ISMN stations and WoSIS profiles end to end, as a user types the commands.

The shipped catalogs (catalog/ismn.yaml, catalog/wosis.yaml) build stores from the real samples in
../shared/data plus the miniature Table C1 products (``data synth --products``, 2017-2018), the
forcings and attributes coming from the products at the station/profile coordinates; then one
finetuning fold with the shipped configs (LSTM-SL, which needs no pretrained encoder) and the report:
ISMN with the paper's soil-moisture metrics, WoSIS with texture per fraction. docs/ISMN_WOSIS.md
shows the same commands. The builds take a few months of the two years (--start/--end) so the file
stays near a minute and a half on two cores; the whole period is the @slow test at the end.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner, Result

from stefaland.sources.ismn import IsmnSoilMoistureSource
from stefaland.sources.wosis import SoilProfilesSource
from stefaland.store import open_store
from stefaland_cli.main import cli

# ismn 1.5.4 calls DataFrame.set_index(inplace=True), which pandas 3 deprecates: not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index")]

REPO = Path(__file__).resolve().parents[1]
ISMN_SAMPLE = "ismn_testdata/tests/test_data/Data_seperate_files_header_20170810_20180809"  # 2017-08-10..2018-08-09
AFSP_CSV = "isric_afsp_gsif/afsp_texture_derived.csv"  # 14,010 Africa soil profiles
N_PROFILES = 300  # the first profiles of the AFSP table: enough for 5 random folds, quick to extract
PRETRAINING_FORCINGS = ["tmax", "tmin", "swd", "relhum", "precipitation"]  # catalog/global.yaml's dynamic variables
PRODUCT_STATICS = ["ndvi", "sand", "silt", "clay", "elevation", "slope", "aspect", "soil_thickness", "porosity",
                   "permeability", "population_density", "gdp_per_capita", "hdi", "intact_forest_fraction"]
ISMN_WINDOW = ("2017-08-01", "2018-01-31")  # the first months of the ISMN sample's year
WOSIS_WINDOW = ("2017-01-01", "2017-03-31")
DAY = "2017-09-15"


def _run(args: list[str], env: dict[str, str]) -> Result:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ismn(shared_data: Path, miniature_products: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The ISMN store (`data build --catalog catalog/ismn.yaml`), its split, one fold and its report."""
    work = tmp_path_factory.mktemp("ismn")
    # what the user exports: the archive, its cosmic-ray probes judged by their top depth (they integrate
    # 0-0.2 m, deeper than the default 0-0.10 m layer), the products, and (here) the ismn reader's cache
    env = {"ISMN_ARCHIVE": str(shared_data / ISMN_SAMPLE), "ISMN_ONLY_DEPTH_FROM": "true",
           "STEFALAND_GLOBAL_ROOT": str(miniature_products), "STEFALAND_ISMN_CACHE": str(work / "cache")}
    store = work / "ismn.zarr"
    built = _run(["data", "build", "--catalog", str(REPO / "catalog" / "ismn.yaml"), "--out", str(store),
                  "--start", ISMN_WINDOW[0], "--end", ISMN_WINDOW[1], "--quiet"], env)
    split = work / "ismn_random.csv"
    # two stations in the sample: two random folds of one station each (the scheme's default is 5)
    _run(["splits", "make", "--task", "ismn", "--scheme", "random", "--sites", str(store), "--folds", "2",
          "--out", str(split)], env)
    runs = work / "runs" / "ismn"
    tuned = _run(["finetune", "--store", str(store), "--config", str(REPO / "configs" / "finetune_ismn.yaml"),
                  "--out", str(runs / "lstm"), "--task", "ismn", "--split", "random", "--split-file", str(split),
                  "--fold", "1", "--quiet"], env)
    report = _run(["report", "ismn", "--split", "random", "--runs", str(runs), "--folds", "1",
                   "--out", str(work / "reports"), "--format", "md,csv,json", "--quiet"], env)
    return {"store": store, "env": env, "build": built.output, "finetune": tuned.output, "report": report.output,
            "reports": work / "reports", "split": split}


def test_ismn_store_holds_the_stations_target_and_the_products_at_the_stations(ismn: dict, shared_data: Path,
                                                                                miniature_products: Path) -> None:
    ds = open_store(str(ismn["store"]))
    assert sorted(ds["site"].values.astype(str)) == ["COSMOS_ARM-1", "COSMOS_Barrow-ARM"]
    assert [str(v) for v in ds["tvar"].values] == ["soil_moisture"]
    assert str(ds["tvar_units"].sel(tvar="soil_moisture").values) == "m3/m3"
    # the same forcing and attribute names as pretraining, plus ISMN's own station metadata
    assert [str(v) for v in ds["dvar"].values] == PRETRAINING_FORCINGS
    svars = [str(v) for v in ds["svar"].values]
    assert set(PRODUCT_STATICS) <= set(svars) and {"sand_fraction", "station_elevation"} <= set(svars)
    assert np.isfinite(ds["static"].sel(svar=PRODUCT_STATICS).values).all()

    time = pd.date_range(*ISMN_WINDOW)
    reference = IsmnSoilMoistureSource(str(shared_data / ISMN_SAMPLE), only_depth_from=True,
                                       cache_dir=ismn["env"]["STEFALAND_ISMN_CACHE"])
    expected = reference.read_sites(["COSMOS_ARM-1"], time)["soil_moisture"].values[0]
    stored = ds["target"].sel(site="COSMOS_ARM-1", tvar="soil_moisture").values
    np.testing.assert_allclose(stored, expected.astype(np.float32), equal_nan=True)
    assert np.isfinite(stored).sum() > 100 and not np.isfinite(stored[:9]).any()  # the sample starts 2017-08-10

    # forcings at a station = the product's nearest cell, read straight from the provider's file
    lat, lon = (float(ds[c].sel(site="COSMOS_Barrow-ARM")) for c in ("lat", "lon"))
    doy = pd.Timestamp(DAY).day_of_year
    with xr.open_dataset(miniature_products / f"MSWEP_V280/Past/Daily/2017{doy:03d}.nc", engine="h5netcdf") as mswep:
        rain = float(mswep["precipitation"].sel(lat=lat, lon=lon, method="nearest").squeeze())
    with xr.open_dataset(miniature_products / f"MSWX_V100/Past/Tmax/Daily/2017{doy:03d}.nc", engine="h5netcdf") as mswx:
        (name,) = list(mswx.data_vars)
        tmax = float(mswx[name].sel(lat=lat, lon=lon, method="nearest").squeeze())
    stored = ds["dynamic"].sel(site="COSMOS_Barrow-ARM", time=DAY)
    assert float(stored.sel(dvar="precipitation")) == pytest.approx(rain, rel=1e-5, abs=1e-5)
    assert float(stored.sel(dvar="tmax")) == pytest.approx(tmax, rel=1e-5, abs=1e-4)
    assert "2 sites × 184 days" in ismn["build"]


def test_ismn_fold_and_report_show_the_soil_moisture_metrics(ismn: dict) -> None:
    assert "fold 1: 1 training / 1 held-out sites" in ismn["finetune"]
    table = (ismn["reports"] / "ismn_table.md").read_text()
    assert "| Model | random RMSE ↓ | random ubRMSE ↓ | random Corr ↑ |" in table
    assert "LSTM-SL" in table and table in ismn["report"]
    sites = pd.read_csv(ismn["reports"] / "ismn_sites.csv")
    scored = sites[sites["split"] == "random"]
    assert len(scored) == 1 and scored["site"].iloc[0] in ("COSMOS_ARM-1", "COSMOS_Barrow-ARM")
    assert np.isfinite(scored[["RMSE", "ubRMSE", "Corr"]].to_numpy()).all()
    summary = json.loads((ismn["reports"] / "ismn_report.json").read_text())
    assert summary["runs"][0]["variable"] == "soil_moisture" and summary["runs"][0]["units"] == "m3/m3"


def _first_profiles(source: Path, out: Path, n: int) -> list[str]:
    """The horizons of the first ``n`` profiles of the AFSP table (derived test input, in tmp)."""
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        rows, kept = [], []
        for row in reader:
            if row["SOURCEID"] not in kept:
                if len(kept) == n:
                    break
                kept.append(row["SOURCEID"])
            rows.append(row)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return kept


@pytest.fixture(scope="module")
def wosis(shared_data: Path, miniature_products: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The WoSIS store, its split, one fold per texture fraction and the report."""
    work = tmp_path_factory.mktemp("wosis")
    profiles_csv = work / "afsp_first_profiles.csv"
    _first_profiles(shared_data / AFSP_CSV, profiles_csv, N_PROFILES)
    env = {"SOIL_PROFILES_CSV": str(profiles_csv), "STEFALAND_GLOBAL_ROOT": str(miniature_products)}
    store = work / "wosis.zarr"
    built = _run(["data", "build", "--catalog", str(REPO / "catalog" / "wosis.yaml"), "--out", str(store),
                  "--start", WOSIS_WINDOW[0], "--end", WOSIS_WINDOW[1], "--quiet"], env)
    split = work / "wosis_random.csv"
    _run(["splits", "make", "--task", "wosis", "--scheme", "random", "--sites", str(store), "--out", str(split)], env)
    runs = work / "runs" / "wosis"
    for fraction, config in (("clay", "finetune_wosis.yaml"), ("sand", "finetune_wosis_sand.yaml"),
                             ("silt", "finetune_wosis_silt.yaml")):
        _run(["finetune", "--store", str(store), "--config", str(REPO / "configs" / config), "--out", str(runs / fraction),
              "--task", "wosis", "--split", "random", "--split-file", str(split), "--fold", "1", "--quiet"], env)
    report = _run(["report", "wosis", "--split", "random", "--runs", str(runs), "--folds", "1",
                   "--out", str(work / "reports"), "--format", "md,csv,json", "--quiet"], env)
    return {"store": store, "csv": profiles_csv, "build": built.output, "report": report.output,
            "reports": work / "reports"}


def test_wosis_store_holds_the_texture_and_the_products_at_the_profiles(wosis: dict, miniature_products: Path) -> None:
    ds = open_store(str(wosis["store"]))
    raw = SoilProfilesSource(str(wosis["csv"])).read().set_index("SOURCEID")
    sites = ds["site"].values.astype(str)
    assert sorted(sites) == sorted(raw.index) and 200 < len(sites) <= N_PROFILES  # profiles with a 0-30 cm horizon
    assert [str(v) for v in ds["dvar"].values] == PRETRAINING_FORCINGS
    svars = [str(v) for v in ds["svar"].values]
    assert set(PRODUCT_STATICS) <= set(svars)
    texture = ds["static"].sel(svar=["wosis_sand", "wosis_silt", "wosis_clay"]).values.astype(np.float64)
    np.testing.assert_allclose(texture.sum(axis=1), 1.0, atol=1e-6)  # normalise: true, % → fraction
    expected = (raw["clay"] / raw[["sand", "silt", "clay"]].sum(axis=1)).loc[sites].to_numpy()
    np.testing.assert_allclose(texture[:, 2], expected, rtol=1e-6)
    # HWSD's clay (an input, as in pretraining) is not the profile's clay (the target)
    assert not np.allclose(ds["static"].sel(svar="clay").values, texture[:, 2])
    np.testing.assert_allclose(ds["lat"].values, raw["lat"].loc[sites].to_numpy())

    site = sites[0]
    lat, lon = float(ds["lat"].sel(site=site)), float(ds["lon"].sel(site=site))
    day = pd.Timestamp(WOSIS_WINDOW[0]) + pd.Timedelta(days=40)
    with xr.open_dataset(miniature_products / f"MSWEP_V280/Past/Daily/{day.year}{day.day_of_year:03d}.nc",
                         engine="h5netcdf") as mswep:
        rain = float(mswep["precipitation"].sel(lat=lat, lon=lon, method="nearest").squeeze())
    stored = float(ds["dynamic"].sel(site=site, time=day, dvar="precipitation"))
    assert stored == pytest.approx(rain, rel=1e-5, abs=1e-5)


def test_wosis_report_scores_each_texture_fraction(wosis: dict) -> None:
    table = (wosis["reports"] / "wosis_table.md").read_text()
    assert "| Model | Property | random Corr ↑ | random R² ↑ | random RMSE ↓ |" in table
    summary = pd.read_csv(wosis["reports"] / "wosis_summary.csv")
    assert sorted(set(summary["variable"])) == ["wosis_clay", "wosis_sand", "wosis_silt"]
    for fraction in ("wosis_clay", "wosis_sand", "wosis_silt"):
        values = summary[summary["variable"] == fraction].set_index("metric")["value"]
        assert all(math.isfinite(values[m]) for m in ("Corr", "R2", "RMSE")), fraction
        assert f"| LSTM-SL | {fraction.replace('_', chr(92) + '_')} |" in table  # markdown-escaped


@pytest.mark.slow
def test_ismn_build_as_typed_spans_the_products_years(ismn: dict, tmp_path: Path) -> None:
    """No --start/--end: the store spans the union of the forcings' records (2017-2018, the miniature's
    years; ~1 min here, most of it opening 730 daily files per forcing)."""
    result = _run(["data", "build", "--catalog", str(REPO / "catalog" / "ismn.yaml"), "--out", str(tmp_path / "ismn.zarr")],
                  ismn["env"])
    assert "2 sites × 730 days (1 of 1 shards written)" in result.output
    ds = open_store(str(tmp_path / "ismn.zarr"))
    observed = np.isfinite(ds["target"].sel(tvar="soil_moisture").values).sum(axis=1)
    window = open_store(str(ismn["store"]))
    assert (observed > np.isfinite(window["target"].values[..., 0]).sum(axis=1)).all()  # the sample's whole year
    np.testing.assert_array_equal(ds["dynamic"].sel(time=DAY).values, window["dynamic"].sel(time=DAY).values)
