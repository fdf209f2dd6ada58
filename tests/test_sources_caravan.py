"""Caravan through `catalog/global_streamflow.yaml`: the real per-basin CSVs, the NetCDF layout and the
attribute tables, built into stores whose values are checked against the files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stefaland.assemble import build_store
from stefaland.catalog import load_catalog
from stefaland.errors import StefaLandError
from stefaland.sources.caravan import match_basin_ids, read_timeseries_csv
from stefaland.store import open_store

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "catalog" / "global_streamflow.yaml"
BASIN = "camelsch_4001"


@pytest.fixture(scope="module")
def caravan_root(shared_data: Path) -> Path:
    return shared_data / "caravan_sample"


@pytest.fixture(scope="module")
def basin_csv(caravan_root: Path) -> pd.DataFrame:
    """camelsch_4001 read the plain way: every cell a string, blanks kept as ''."""
    with open(caravan_root / "timeseries" / "csv" / "camelsch" / f"{BASIN}.csv", newline="") as handle:
        return pd.DataFrame(list(csv.DictReader(handle)))


@pytest.fixture(scope="module")
def window(basin_csv: pd.DataFrame) -> tuple[str, str, str]:
    """A window around the first post-2001 gap in camelsch_4001's streamflow: (start, end, gap day)."""
    gaps = basin_csv.loc[(basin_csv["streamflow"] == "") & (basin_csv["date"] > "2001"), "date"]
    gap = pd.Timestamp(gaps.iloc[0])
    return str((gap - pd.Timedelta(days=40)).date()), str((gap + pd.Timedelta(days=20)).date()), str(gap.date())


@pytest.fixture(scope="module")
def csv_store(caravan_root: Path, window: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory,
              ) -> Path:
    out = tmp_path_factory.mktemp("caravan") / "caravan.zarr"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARAVAN_ROOT", str(caravan_root))
        build_store(str(CATALOG), str(out), shard_size=2, start=window[0], end=window[1], quiet=True)
    return out


def test_store_holds_the_basins_with_time_series(csv_store: Path, caravan_root: Path) -> None:
    ds = open_store(str(csv_store))
    files = sorted(p.stem for p in (caravan_root / "timeseries" / "csv").glob("*/*.csv"))
    assert sorted(ds["site"].values.astype(str)) == files
    assert ds.attrs["provenance"]["sources"] == ["caravan_attributes", "caravan_era5land", "streamflow"]


def test_a_day_in_the_store_equals_the_csv(csv_store: Path, basin_csv: pd.DataFrame,
                                           window: tuple[str, str, str]) -> None:
    ds = open_store(str(csv_store)).sel(site=BASIN)
    rows = basin_csv[(basin_csv["date"] >= window[0]) & (basin_csv["date"] < window[2]) & (basin_csv["streamflow"] != "")]
    row = rows.iloc[len(rows) // 2]
    day = row["date"]
    for store_block, name, column in [("dynamic", "dvar", "total_precipitation_sum"),
                                      ("dynamic", "dvar", "temperature_2m_mean"),
                                      ("dynamic", "dvar", "temperature_2m_max"),
                                      ("target", "tvar", "streamflow")]:
        got = float(ds[store_block].sel(time=day, **{name: column}))
        assert got == pytest.approx(float(row[column]), abs=1e-4), column
    pressure_pa = float(ds["dynamic"].sel(time=day, dvar="surface_pressure_mean"))
    assert pressure_pa == pytest.approx(float(row["surface_pressure_mean"]) * 1000.0, rel=1e-6)  # kPa → Pa


def test_a_blank_streamflow_cell_becomes_nan(csv_store: Path, basin_csv: pd.DataFrame,
                                             window: tuple[str, str, str]) -> None:
    ds = open_store(str(csv_store)).sel(site=BASIN)
    assert basin_csv.loc[basin_csv["date"] == window[2], "streamflow"].iloc[0] == ""
    assert np.isnan(float(ds["target"].sel(time=window[2], tvar="streamflow")))
    in_window = basin_csv[(basin_csv["date"] >= window[0]) & (basin_csv["date"] <= window[1])]
    stored = ds["target"].sel(tvar="streamflow").values
    assert int(np.isnan(stored).sum()) == int((in_window["streamflow"] == "").sum())


def test_static_attributes_come_from_the_caravan_tables(csv_store: Path, caravan_root: Path) -> None:
    ds = open_store(str(csv_store))
    indices = pd.read_csv(caravan_root / "attributes" / "camelsch" / "attributes_caravan_camelsch.csv").set_index("gauge_id")
    other = pd.read_csv(caravan_root / "attributes" / "camelsch" / "attributes_other_camelsch.csv").set_index("gauge_id")
    assert float(ds["static"].sel(site=BASIN, svar="aridity")) == pytest.approx(indices.loc[BASIN, "aridity"], rel=1e-6)
    assert float(ds["static"].sel(site=BASIN, svar="area")) == pytest.approx(other.loc[BASIN, "area"], rel=1e-6)
    assert float(ds["lat"].sel(site=BASIN)) == pytest.approx(other.loc[BASIN, "gauge_lat"])
    assert str(ds["region"].sel(site=BASIN).values) == other.loc[BASIN, "country"]


def test_netcdf_layout_builds_its_two_basins(shared_data: Path, caravan_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    netcdf = next((shared_data / "ewatercycle_caravan_nc").rglob("test_caravan_file.nc"))
    monkeypatch.setenv("CARAVAN_ROOT", str(caravan_root))
    monkeypatch.setenv("CARAVAN_NETCDF", str(netcdf))
    out = tmp_path / "nc.zarr"
    build_store(str(CATALOG), str(out), shard_size=2, quiet=True, start="1981-01-01", end="1981-12-31",
                sources=["caravan_netcdf", "caravan_attributes", "caravan_netcdf_streamflow"])
    ds = open_store(str(out))
    with xr.open_dataset(netcdf, engine="h5netcdf") as raw:
        basins = sorted(raw["basin_id"].values.astype(str))
        assert sorted(ds["site"].values.astype(str)) == basins
        basin, day = basins[1], "1981-07-15"
        expected = raw.assign_coords(basin_id=raw["basin_id"].values.astype(str)).sel(basin_id=basin, time=day)
        assert float(ds["dynamic"].sel(site=basin, time=day, dvar="total_precipitation_sum")) == pytest.approx(
            float(expected["total_precipitation_sum"]), abs=1e-4)
        assert float(ds["target"].sel(site=basin, time=day, tvar="streamflow")) == pytest.approx(
            float(expected["streamflow"]), abs=1e-4)


def test_sites_table_has_every_gauge_with_valid_coordinates(caravan_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARAVAN_ROOT", str(caravan_root))
    sites = load_catalog(str(CATALOG)).open("sites").read()
    files = sorted((caravan_root / "attributes").glob("*/attributes_other_*.csv"))
    expected = sum(len(pd.read_csv(f)) for f in files)
    assert len(files) >= 12 and len(sites) == expected
    assert sites["gauge_id"].is_unique
    assert sites["gauge_lat"].between(-90, 90).all() and sites["gauge_lon"].between(-180, 180).all()


def test_basin_list_ids_map_onto_caravan_ids_by_the_documented_rules() -> None:
    caravan = ["camels_01022500", "hysets_01022500", "hysets_01AD003", "camelsaus_102101A", "camelscl_1001002",
               "GRDC_1159100", "camelsbr_17345000", "lamah_105"]
    listed = ["USGS_01022500", "Canada_01AD003", "Australia_102101", "Chile_01001002", "GRDC_1159100",
              "Brazil_17345000", "EWA_9104003", "USGS01011000", "Canada_99ZZ999", "Australia_"]
    assert match_basin_ids(listed, caravan) == {
        "USGS_01022500": "camels_01022500",  # CAMELS before HYSETS when both hold the gauge
        "Canada_01AD003": "hysets_01AD003",
        "Australia_102101": "camelsaus_102101A",
        "Chile_01001002": "camelscl_1001002",
        "GRDC_1159100": "GRDC_1159100",
        "Brazil_17345000": "camelsbr_17345000",
    }
    assert match_basin_ids(["USGS_01022500"], ["hysets_01022500"]) == {"USGS_01022500": "hysets_01022500"}


def test_the_papers_3434_basin_list_against_the_caravan_sites(shared_data: Path, caravan_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARAVAN_ROOT", str(caravan_root))
    sites = load_catalog(str(CATALOG)).open("sites").read()
    path = shared_data / "stefaland_basin_lists" / "datasets" / "GLOBAL_streamflow" / "3434_basin_list.txt"
    listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    matched = match_basin_ids(listed, sites["gauge_id"])
    print(f"{len(matched)} of {len(listed)} listed basins match a Caravan gauge")
    assert 0 < len(matched) < len(listed)
    assert set(matched.values()) <= set(sites["gauge_id"])
    assert len(set(matched.values())) == len(matched)  # no two listed basins on one gauge
    assert not any(k.startswith("EWA_") for k in matched)


def test_non_numeric_cell_is_one_line_naming_file_line_and_column(caravan_root: Path, tmp_path: Path) -> None:
    lines = (caravan_root / "timeseries" / "csv" / "camelslx" / "camelslx_054.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[5].split(",")
    cells[header.index("total_precipitation_sum")] = "n/a"
    lines[5] = ",".join(cells)
    broken = tmp_path / "camelslx_054.csv"
    broken.write_text("\n".join(lines[:10]) + "\n")
    with pytest.raises(StefaLandError, match=r"camelslx_054.csv line 6: column total_precipitation_sum .*'n/a'") as err:
        read_timeseries_csv(str(broken), "caravan_era5land")
    assert "\n" not in str(err.value)


def test_caravan_root_on_object_storage_reads_like_the_local_files(caravan_root: Path, s3_bucket: str, s3_env,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    for path in [*(caravan_root / "attributes" / "camelsch").glob("attributes_*_camelsch.csv"),
                 caravan_root / "timeseries" / "csv" / "camelsch" / f"{BASIN}.csv"]:
        fs.put_file(str(path), f"{bucket}/caravan/{path.relative_to(caravan_root)}")
    monkeypatch.setenv("CARAVAN_ROOT", f"{s3_bucket}/caravan")
    catalog = load_catalog(str(CATALOG))
    sites = catalog.open("sites").read()
    assert len(sites) == len(pd.read_csv(caravan_root / "attributes" / "camelsch" / "attributes_other_camelsch.csv"))
    forcing = catalog.open("caravan_era5land")
    assert forcing.site_ids() == [BASIN]
    time = pd.date_range("2010-06-01", "2010-06-30")
    remote = forcing.read_sites([BASIN], time)
    local = read_timeseries_csv(str(caravan_root / "timeseries" / "csv" / "camelsch" / f"{BASIN}.csv")).reindex(time=time)
    np.testing.assert_array_equal(remote["total_precipitation_sum"].values[0], local["total_precipitation_sum"].values)
