"""`data build` on the real CAMELS-US files: values in the store equal the values in the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
CAMELS_CATALOG = REPO / "catalog" / "camels.yaml"


@pytest.fixture(scope="module")
def camels_store(camels_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "camels.zarr"
    env = {"CAMELS_ROOT": str(camels_sample_root)}
    result = CliRunner().invoke(
        cli,
        ["data", "build", "--catalog", str(CAMELS_CATALOG), "--out", str(out), "--quiet",
         "--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "4",
         "--start", "2003-10-01", "--end", "2014-12-31"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return out


def _forcing_file(root: Path, gauge: str) -> Path:
    return next((root / "basin_mean_forcing" / "nldas").glob(f"*/{gauge}_lump_nldas_forcing_leap.txt"))


def test_store_holds_every_sample_basin_in_shards(camels_store: Path) -> None:
    ds = open_store(str(camels_store))
    assert ds.sizes["site"] == 19
    assert ds.sizes["time"] == len(pd.date_range("2003-10-01", "2014-12-31"))
    assert ds["dynamic"].encoding["chunks"][0] == 4  # one chunk per shard of 4 sites
    assert set(ds["region"].values.astype(str)) >= {"01", "17", "18"}
    assert ds.attrs["provenance"]["catalog_sha256"]
    assert ds.attrs["provenance"]["sources"] == ["forcing_nldas", "attributes", "streamflow"]


def test_daily_precipitation_equals_the_forcing_file(camels_store: Path, camels_sample_root: Path) -> None:
    ds = open_store(str(camels_store))
    gauge, day = "09386900", "2008-07-15"
    lines = _forcing_file(camels_sample_root, gauge).read_text().splitlines()
    header = lines[3].split()
    row = next(line.split() for line in lines[4:] if line.split()[:3] == day.split("-"))
    expected = float(row[header.index("PRCP(mm/day)")])
    got = float(ds["dynamic"].sel(site=gauge, time=day, dvar="prcp"))
    assert got == pytest.approx(expected, abs=1e-4)


def test_attribute_equals_the_table_and_percent_becomes_fraction(camels_store: Path, camels_sample_root: Path) -> None:
    ds = open_store(str(camels_store))
    topo = pd.read_csv(camels_sample_root / "camels_attributes_v2.0" / "camels_topo.txt", sep=";", dtype={"gauge_id": str})
    soil = pd.read_csv(camels_sample_root / "camels_attributes_v2.0" / "camels_soil.txt", sep=";", dtype={"gauge_id": str})
    gauge = "05291000"
    elev = float(topo.loc[topo.gauge_id == gauge, "elev_mean"].iloc[0])
    sand = float(soil.loc[soil.gauge_id == gauge, "sand_frac"].iloc[0])
    assert float(ds["static"].sel(site=gauge, svar="elev_mean")) == pytest.approx(elev, rel=1e-6)
    assert float(ds["static"].sel(site=gauge, svar="sand_frac")) == pytest.approx(sand / 100, rel=1e-6)
    assert str(ds["svar_units"].sel(svar="sand_frac").values) == "fraction"


def test_missing_code_becomes_nan_and_discharge_becomes_depth(camels_store: Path, camels_sample_root: Path) -> None:
    ds = open_store(str(camels_store))
    gauge = "01022500"
    path = next((camels_sample_root / "usgs_streamflow").glob(f"*/{gauge}_streamflow_qc.txt"))
    flow = pd.read_csv(path, sep=r"\s+", header=None, names=["g", "y", "m", "d", "q", "f"])
    flow["date"] = pd.to_datetime(dict(year=flow.y, month=flow.m, day=flow.d))
    window = flow[(flow.date >= "2003-10-01") & (flow.date <= "2014-12-31")]
    missing_day = window.loc[window.q == -999, "date"].iloc[0]
    good = window.loc[window.q > 0].iloc[100]
    series = ds["target"].sel(site=gauge, tvar="streamflow")
    assert np.isnan(float(series.sel(time=missing_day)))
    area = float(ds["static"].sel(site=gauge, svar="area_gages2"))
    expected = good.q * 0.3048**3 * 86.4 / area
    assert float(series.sel(time=good.date)) == pytest.approx(expected, rel=1e-5)
    assert int(np.isnan(series.values).sum()) == int((window.q == -999).sum())


def test_statistics_match_the_arrays(camels_store: Path) -> None:
    ds = open_store(str(camels_store))
    dynamic = ds["dynamic"].values.astype(np.float64)
    np.testing.assert_allclose(ds["dynamic_mean"].values, np.nanmean(dynamic, axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(ds["dynamic_std"].values, np.nanstd(dynamic, axis=(0, 1), ddof=1), rtol=1e-5)


def test_rebuild_is_up_to_date(camels_store: Path, camels_sample_root: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["data", "build", "--catalog", str(CAMELS_CATALOG), "--out", str(camels_store), "--quiet",
         "--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "4",
         "--start", "2003-10-01", "--end", "2014-12-31"],
        env={"CAMELS_ROOT": str(camels_sample_root)},
    )
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_catalog_validate_and_show_on_real_files(camels_sample_root: Path) -> None:
    runner = CliRunner()
    env = {"CAMELS_ROOT": str(camels_sample_root)}
    validated = runner.invoke(
        cli, ["catalog", "validate", str(CAMELS_CATALOG), "--sources", "forcing_nldas,attributes,streamflow"], env=env
    )
    assert validated.exit_code == 0, validated.output
    assert "ok   forcing_nldas: 19 sites" in validated.output
    everything = runner.invoke(cli, ["catalog", "validate", str(CAMELS_CATALOG)], env=env)
    assert everything.exit_code == 1  # the sample has NLDAS only: Daymet must be reported missing
    assert "FAIL forcing_daymet: source forcing_daymet: no files match" in everything.output
    shown = runner.invoke(cli, ["catalog", "show", str(CAMELS_CATALOG), "--source", "streamflow"], env=env)
    assert shown.exit_code == 0 and "ft3/s" in shown.output
