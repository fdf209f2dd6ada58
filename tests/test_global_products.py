"""The shipped catalog/global.yaml, unchanged, builds a store from the products as published.

`stefaland data synth DIR --products` writes a miniature of every Table C1 product in its
provider's format and layout (MSWX/MSWEP daily NetCDF trees, CCI and Kummu NetCDF, GeoTIFFs, HWSD2
BIL + layer CSV, GLiM/GLHYMPS/IFL polygons); the build is the command a user types, as a subprocess.
Values in the store are checked against the product files read directly with xarray/rasterio/geopandas.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stefaland.store import open_store

REPO = Path(__file__).resolve().parents[1]
STEFALAND = [sys.executable, "-m", "stefaland_cli.main"]


def _stefaland(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*STEFALAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def global_store(miniature_products: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    work = tmp_path_factory.mktemp("global-build")
    env = {**os.environ, "STEFALAND_GLOBAL_ROOT": str(miniature_products)}
    result = _stefaland(["data", "build", "--catalog", str(REPO / "catalog" / "global.yaml"), "--out", "global.zarr", "--quiet"],
                        env, work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "global.zarr", env, work


def test_shipped_global_catalog_builds_from_the_products(global_store, miniature_products: Path) -> None:
    out, _, _ = global_store
    store = open_store(str(out))
    sites = pd.read_csv(miniature_products / "sites" / "pretraining_sites.csv", dtype={"site": str})
    assert list(store["site"].values) == sorted(sites["site"]) or set(store["site"].values) == set(sites["site"])
    # the axis is the records' span (2 years), inside the catalog's 1980-2019 window
    assert store.indexes["time"][0] == pd.Timestamp("2017-01-01") and store.indexes["time"][-1] == pd.Timestamp("2018-12-31")
    assert list(store["dvar"].values) == ["tmax", "tmin", "swd", "relhum", "precipitation"]
    statics = set(store["svar"].values)
    for name in ("ndvi", "sand", "silt", "clay", "elevation", "slope", "aspect", "soil_thickness", "lithology_carbonate",
                 "porosity", "permeability", "population_density", "gdp_per_capita", "hdi", "intact_forest_fraction",
                 "lccs_cropland", "lccs_forest_needleleaf"):
        assert name in statics, name
    dynamic = store["dynamic"].load()
    assert np.isfinite(dynamic.values).all()  # every site's cell is valid in every daily file
    tmax, tmin = dynamic.sel(dvar="tmax").values, dynamic.sel(dvar="tmin").values
    assert (tmax >= tmin).all() and (dynamic.sel(dvar="precipitation").values >= 0).all()
    static = store["static"].load().to_pandas()
    assert static["lithology_carbonate"].isin([0.0, 1.0]).all() and 0 < static["lithology_carbonate"].sum() < len(static)
    assert static["intact_forest_fraction"].isin([0.0, 1.0]).all()
    texture = static[["sand", "silt", "clay"]].sum(axis=1)
    assert np.allclose(texture, texture.iloc[0]) and 0.5 < float(np.nanmax(static["porosity"])) * 100 <= 40


def test_store_values_equal_the_product_files(global_store, miniature_products: Path) -> None:
    """Nearest-cell forcings and point-in-polygon attributes, read back from the files themselves."""
    out, _, _ = global_store
    store = open_store(str(out))
    site = str(store["site"].values[3])
    lat, lon = float(store["lat"].values[3]), float(store["lon"].values[3])
    day = pd.Timestamp("2017-03-15")
    with xr.open_dataset(miniature_products / "MSWEP_V280" / "Past" / "Daily" / f"2017{day.day_of_year:03d}.nc", engine="h5netcdf") as grid:
        expected = float(grid["precipitation"].sel(lat=lat, lon=lon, method="nearest").values.squeeze())
    got = float(store["dynamic"].sel(site=site, time=day, dvar="precipitation").values)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    day_file = miniature_products / "MSWX_V100" / "Past" / "Tmin" / "Daily" / f"2017{day.day_of_year:03d}.nc"
    with xr.open_dataset(day_file, engine="h5netcdf") as grid:
        expected = float(grid["air_temperature"].sel(lat=lat, lon=lon, method="nearest").values.squeeze())
    assert float(store["dynamic"].sel(site=site, time=day, dvar="tmin").values) == pytest.approx(expected, rel=1e-5)
    point = gpd.GeoDataFrame(geometry=gpd.points_from_xy([lon], [lat]), crs="EPSG:4326")
    glhymps = gpd.read_file(miniature_products / "GLHYMPS" / "GLHYMPS.shp").to_crs("EPSG:4326")
    hit = gpd.sjoin(point, glhymps, predicate="within")
    assert float(store["static"].sel(site=site, svar="permeability").values) == pytest.approx(hit["logK_Ice_x"].iloc[0] / 100)
    with xr.open_dataset(miniature_products / "Kummu_GDP_HDI" / "HDI_1990_2015_v2.nc", engine="h5netcdf") as grid:
        expected = float(grid["HDI"].sel(time=2015).sel(latitude=lat, longitude=lon, method="nearest").values)
    assert float(store["static"].sel(site=site, svar="hdi").values) == pytest.approx(expected, rel=1e-5)


def test_rerun_is_up_to_date_and_an_edited_product_is_named(global_store, miniature_products: Path) -> None:
    out, env, work = global_store
    command = ["data", "build", "--catalog", str(REPO / "catalog" / "global.yaml"), "--out", "global.zarr", "--quiet"]
    again = _stefaland(command, env, work)
    assert again.returncode == 0 and "up to date" in again.stdout + again.stderr
    dbf = miniature_products / "GLHYMPS" / "GLHYMPS.dbf"
    original = dbf.read_bytes()
    dbf.write_bytes(original + b"\x1a")  # a shapefile's attribute table edited, not its .shp
    try:
        changed = _stefaland(command, env, work)
        assert changed.returncode == 1 and "GLHYMPS.dbf" in changed.stderr and "Traceback" not in changed.stderr
    finally:
        dbf.write_bytes(original)


def test_unset_root_is_one_line_before_any_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STEFALAND_GLOBAL_ROOT"}
    result = _stefaland(["data", "build", "--catalog", str(REPO / "catalog" / "global.yaml"), "--out", "g.zarr"], env, tmp_path)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [f"error: catalog {REPO / 'catalog' / 'global.yaml'} source sites: environment variable "
                     "STEFALAND_GLOBAL_ROOT is not set (its paths depend on it); set it, e.g. export "
                     "STEFALAND_GLOBAL_ROOT=/path/or/s3://prefix"]
    assert not (tmp_path / "g.zarr").exists()


def test_a_day_file_tree_is_read_once_whatever_the_shard_size(global_store, miniature_products: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Day-per-file grids are cut along time: each file is read once for all sites of a window, not
    once per shard of sites (13,935 WoSIS profiles in shards of 128 read each file 109 times before)."""
    from stefaland.assemble import build_store
    from stefaland.products import daily_files

    reads: list[str] = []
    original = daily_files._read_day
    monkeypatch.setattr(daily_files, "_read_day", lambda path, *rest: reads.append(path) or original(path, *rest))
    monkeypatch.setenv("STEFALAND_GLOBAL_ROOT", str(miniature_products))
    build_store(str(REPO / "catalog" / "global.yaml"), str(tmp_path / "small.zarr"), shard_size=4, sources=["mswep"],
                start="2017-01-01", end="2017-01-31", quiet=True, scheduler="sync")
    assert len(reads) == len(set(reads)) == 31  # 10 shards, each day's file read once
    small = open_store(str(tmp_path / "small.zarr"))["dynamic"].sel(dvar="precipitation")
    whole = open_store(str(global_store[0]))["dynamic"].sel(dvar="precipitation", time=small["time"])
    np.testing.assert_array_equal(small.values, whole.sel(site=small["site"]).values)  # same values as one shard
