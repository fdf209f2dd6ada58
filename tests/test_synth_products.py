"""``stefaland data synth DIR --products``: miniatures of the paper's Table C1 products.

The command runs once through the real CLI (40 sites, one non-leap year); each product is then
opened with the libraries users would use on the real files (xarray/h5netcdf, rasterio,
geopandas), never StefaLand's own readers, and checked for names, layout, CRS, plausible and
coherent values, and a valid cell at every site.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

from stefaland_cli.main import cli

N_SITES, YEAR, SEED = 40, 1981, 3
CONTINENTS = {"north_america", "south_america", "europe", "africa", "asia", "oceania"}
MSWX = {"Tmax": ("air_temperature", "degree_Celsius"), "Tmin": ("air_temperature", "degree_Celsius"),
        "SWd": ("downward_shortwave_radiation", "W m-2"), "RelHum": ("relative_humidity", "%")}
CCI_CODES = {10, 50, 60, 70, 130, 190, 210, 220}
GLIM_CODES = {"su", "ss", "sm", "sc", "py", "ev", "mt", "pa", "pb", "pi", "va", "vb", "vi", "wb", "ig", "nd"}
MONTH_STARTS = ["001", "032", "060", "091", "121", "152", "182", "213", "244", "274", "305", "335"]  # 1981
RASTER_FILES = ["GMTED2010/mn30_grd.tif",
                "Global_Soil_Regolith_Sediment_1304/data/average_soil_and_sedimentary-deposit_thickness.tif",
                "gpw-v4-population-density-rev11_2015_30_sec_tif/gpw_v4_population_density_rev11_2015_30_sec.tif",
                "HWSD2/HWSD2.bil"]
VECTOR_FILES = ["GLiM/LiMW_GIS_2015.gpkg", "GLHYMPS/GLHYMPS.shp", "IFL_2016/ifl_2016.shp"]


def _synth(root: Path, *extra: str):  # noqa: ANN202 - click Result
    return CliRunner().invoke(cli, ["data", "synth", str(root), "--products", "--sites", str(N_SITES), "--years", "1",
                                    "--seed", str(SEED), "--start-year", str(YEAR), "--quiet", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("products") / "global"
    started = time.perf_counter()
    result = _synth(root)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    print(f"data synth --products --sites {N_SITES} --years 1: {elapsed:.1f} s")
    sites = pd.read_csv(root / "sites" / "pretraining_sites.csv", dtype={"site": str, "region": str})
    return {"root": root, "output": result.output, "sites": sites, "elapsed": elapsed}


def _raster_at_sites(path: Path, sites: pd.DataFrame) -> tuple[SimpleNamespace, np.ndarray, np.ndarray]:
    """(the raster's metadata, its band, the band's value at every site's cell)."""
    with rasterio.open(path) as dataset:
        band = dataset.read(1)
        rows, cols = rasterio.transform.rowcol(dataset.transform, sites["lon"], sites["lat"])
        meta = SimpleNamespace(crs=dataset.crs, dtypes=dataset.dtypes, nodata=dataset.nodata, driver=dataset.driver,
                               transform=dataset.transform, bounds=dataset.bounds)
    return meta, band, band[np.asarray(rows), np.asarray(cols)]


def _day(root: Path, folder: str, doy: int) -> xr.Dataset:
    path = root / ("MSWEP_V280/Past/Daily" if folder == "precipitation" else f"MSWX_V100/Past/{folder}/Daily")
    return xr.open_dataset(path / f"{YEAR}{doy:03d}.nc", engine="h5netcdf")


def _fingerprints(root: Path) -> dict[str, str]:
    """Content hash of every file but the vector ones (their containers stamp the writing date)."""
    skip = {Path(name).parent.name for name in VECTOR_FILES}
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.relative_to(root).parts[0] not in skip
            and path.relative_to(root).parts[0] != ".stefaland"}


def test_cli_prints_the_folder_and_the_build_command(run: dict) -> None:
    lines = run["output"].strip().splitlines()
    assert lines[0] == str(run["root"])
    assert lines[1].startswith("STEFALAND_GLOBAL_ROOT=") and str(run["root"]) in lines[1]
    assert lines[1].endswith("stefaland data build --catalog catalog/global.yaml")
    readme = (run["root"] / "README.txt").read_text()
    assert "synthetic miniature" in readme.lower() and "stefaland data synth" in readme and "--products" in readme
    for name in ("MSWX_V100", "MSWEP_V280", "ESACCI-LC", "MOD13A3", "HWSD2", "GMTED2010", "GLiM", "GLHYMPS", "IFL_2016",
                 "Kummu_GDP_HDI", "gpw-v4", "Global_Soil_Regolith_Sediment_1304", "sites/pretraining_sites.csv"):
        assert name in readme


def test_sites_table(run: dict) -> None:
    sites = run["sites"]
    assert list(sites.columns) == ["site", "lat", "lon", "region"]
    assert len(sites) == N_SITES and sites["site"].is_unique
    assert set(sites["region"]) <= CONTINENTS and sites["region"].nunique() >= 5
    assert sites["lat"].between(-90, 90).all() and sites["lon"].between(-180, 180).all()


def test_daily_files_layout_and_grid(run: dict) -> None:
    root = run["root"]
    expected = [f"{YEAR}{doy:03d}.nc" for doy in range(1, 366)]
    for folder, (name, units) in MSWX.items():
        files = sorted(p.name for p in (root / "MSWX_V100" / "Past" / folder / "Daily").iterdir())
        assert files == expected, folder
        with _day(root, folder, 196) as day:
            assert list(day.data_vars) == [name]
            variable = day[name]
            assert variable.dims == ("time", "lat", "lon") and variable.shape == (1, 72, 144)
            assert variable.dtype == np.float32 and variable.attrs["units"] == units
            assert variable.encoding["zlib"] and variable.encoding["shuffle"]
            assert pd.Timestamp(day["time"].values[0]) == pd.Timestamp(f"{YEAR}-07-15")
            assert day["lat"].values[0] == 88.75 and day["lat"].values[-1] == -88.75
            assert np.all(np.diff(day["lat"].values) < 0) and np.all(np.diff(day["lon"].values) > 0)
            assert day["lon"].values[0] == -178.75 and day["lon"].values[-1] == 178.75
    assert sorted(p.name for p in (root / "MSWEP_V280" / "Past" / "Daily").iterdir()) == expected
    with _day(root, "precipitation", 1) as day:
        assert list(day.data_vars) == ["precipitation"] and day["precipitation"].attrs["units"] == "mm/d"
        assert day["precipitation"].dims == ("time", "lat", "lon")
        assert pd.Timestamp(day["time"].values[0]) == pd.Timestamp(f"{YEAR}-01-01")
    size = sum(p.stat().st_size for p in (root / "MSWX_V100").rglob("*.nc"))
    assert size < 80e6  # a year of daily files stays a few tens of MB


def _months(root: Path, folder: str, name: str) -> xr.DataArray:
    """Mid-month days of the year, stacked: (12, lat, lon)."""
    days = [pd.Timestamp(YEAR, month, 15).day_of_year for month in range(1, 13)]
    arrays = []
    for doy in days:
        with _day(root, folder, doy) as day:
            arrays.append(day[name].load()[0])
    return xr.concat(arrays, dim="month")


def test_daily_values_are_plausible_and_coherent(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    tmax, tmin = _months(root, "Tmax", "air_temperature"), _months(root, "Tmin", "air_temperature")
    swd, rh = _months(root, "SWd", "downward_shortwave_radiation"), _months(root, "RelHum", "relative_humidity")
    rain = _months(root, "precipitation", "precipitation")
    for values in (tmax, tmin, swd, rh, rain):
        assert np.isfinite(values).all()
    assert (tmax > tmin).all() and float(tmax.max()) < 60 and float(tmin.min()) > -95
    assert float(swd.min()) >= 0 and float(swd.max()) < 500
    assert float(rh.min()) >= 5 and float(rh.max()) <= 100
    assert float(rain.min()) >= 0 and 0.2 < float((rain == 0).mean()) < 0.95 and float(rain.max()) < 500
    annual = ((tmax + tmin) / 2).mean("month")

    def zonal(lo: float, hi: float) -> float:
        band = np.abs(annual["lat"])
        return float(annual.where((band >= lo) & (band < hi)).mean())

    assert zonal(0, 10) > zonal(40, 50) + 8 > zonal(60, 70) + 8  # colder towards the poles
    north, south = tmax.sel(lat=slice(60, 40)), tmax.sel(lat=slice(-30, -50))
    assert float(north[6].mean()) > float(north[0].mean()) + 8  # July warmer in the north
    assert float(south[0].mean()) > float(south[6].mean()) + 4  # January warmer in the south
    assert float(swd.sel(lat=slice(90, 70))[11].max()) < 1.0  # polar night
    # colder with elevation at the sites, once latitude is accounted for (GMTED gives the elevation)
    _, _, elevation = _raster_at_sites(root / RASTER_FILES[0], sites)
    at_sites = annual.sel(lat=xr.DataArray(sites["lat"]), lon=xr.DataArray(sites["lon"]), method="nearest").values
    design = np.column_stack([np.ones(len(sites)), sites["lat"] ** 2, elevation])
    coefficients = np.linalg.lstsq(design, at_sites, rcond=None)[0]
    assert coefficients[2] < -0.002  # °C per metre (the lapse rate is 0.0065)


def test_land_cover(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    path = root / "ESACCI-LC" / "ESACCI-LC-L4-LCCS-Map-300m-P1Y-2018-v2.1.1.nc"
    with xr.open_dataset(path, engine="h5netcdf") as dataset:
        lccs = dataset["lccs_class"].load()
    assert lccs.dims == ("time", "lat", "lon") and lccs.shape == (1, 360, 720) and lccs.dtype == np.uint8
    assert pd.Timestamp(lccs["time"].values[0]) == pd.Timestamp("2018-01-01")
    assert lccs["lat"].values[0] == 89.75 and np.all(np.diff(lccs["lat"].values) < 0)
    assert set(np.asarray(lccs.attrs["flag_values"]).tolist()) == CCI_CODES
    assert len(lccs.attrs["flag_meanings"].split()) == len(CCI_CODES)
    codes, counts = np.unique(lccs.values, return_counts=True)
    assert set(codes.tolist()) == CCI_CODES  # every class somewhere, water (210) included
    at_sites = lccs[0].sel(lat=xr.DataArray(sites["lat"]), lon=xr.DataArray(sites["lon"]), method="nearest").values
    assert set(at_sites.tolist()) <= CCI_CODES - {210}


def test_ndvi_months(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    files = sorted((root / "MOD13A3").iterdir())
    assert [p.name for p in files] == [f"MOD13A3.061__1_km_monthly_NDVI_doy{YEAR}{d}_aid0001.tif" for d in MONTH_STARTS]
    july, january = None, None
    for index, path in enumerate(files):
        dataset, band, at_sites = _raster_at_sites(path, sites)
        assert dataset.crs.to_epsg() == 4326 and dataset.dtypes[0] == "int16" and dataset.nodata == -3000
        assert dataset.transform.e < 0 and tuple(dataset.bounds) == (-180.0, -90.0, 180.0, 90.0)
        valid = band[band != -3000]
        assert valid.min() >= -2000 and valid.max() <= 9500 and (band == -3000).any()
        assert (at_sites != -3000).all() and (at_sites > -2000).all()
        if index == 0:
            january = band
        if index == 6:
            july = band
    rows = slice(60, 90)  # 45..60 N at 0.5°
    north_land = (july[rows] != -3000) & (january[rows] != -3000)
    assert july[rows][north_land].mean() > january[rows][north_land].mean() + 1000  # green in the northern summer


def test_terrain_soil_thickness_population(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    gmted, elevation, at_sites = _raster_at_sites(root / RASTER_FILES[0], sites)
    assert gmted.crs.to_epsg() == 4326 and gmted.dtypes[0] == "int16" and gmted.nodata == -32768
    assert (elevation != -32768).all() and elevation.max() > 3000 and elevation.min() >= 0
    assert np.abs(np.diff(elevation.astype(float), axis=1)).max() > 200  # mountains: non-trivial slopes
    assert (at_sites != -32768).all()
    thickness, band, at_sites = _raster_at_sites(root / RASTER_FILES[1], sites)
    assert thickness.crs.to_epsg() == 4326 and thickness.dtypes[0] == "uint8" and thickness.nodata == 255
    assert band[band != 255].max() <= 50 and (band == 255).any() and (at_sites != 255).all()
    gpw, band, at_sites = _raster_at_sites(root / RASTER_FILES[2], sites)
    assert gpw.crs.to_epsg() == 4326 and gpw.dtypes[0] == "float32"
    assert gpw.nodata == pytest.approx(-3.402823466e38, rel=1e-6)
    nodata = band == np.float32(gpw.nodata)
    assert nodata.any() and (band[~nodata] >= 0).all() and band[~nodata].max() > 1000  # cities
    assert (at_sites >= 0).all()


def test_hwsd(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    assert (root / "HWSD2" / "HWSD2.hdr").is_file()
    hwsd, units, at_sites = _raster_at_sites(root / RASTER_FILES[3], sites)
    assert hwsd.driver == "EHdr" and hwsd.crs.to_epsg() == 4326
    assert hwsd.dtypes[0] == "uint16" and hwsd.nodata == 65535 and (units == 65535).any()
    assert (at_sites != 65535).all()
    layers = pd.read_csv(root / "HWSD2" / "HWSD2_LAYERS.csv")
    assert {"ID", "HWSD2_SMU_ID", "LAYER", "SEQUENCE", "SHARE", "SAND", "SILT", "CLAY", "BULK", "ORG_CARBON"} <= set(layers)
    assert layers["ID"].is_unique and set(layers["LAYER"]) == {f"D{k}" for k in range(1, 8)}
    assert set(np.unique(units[units != 65535])) <= set(layers["HWSD2_SMU_ID"])
    top = layers[layers["LAYER"] == "D1"]
    assert (top.groupby("HWSD2_SMU_ID")["SHARE"].sum() == 100).all()
    assert top.groupby("HWSD2_SMU_ID")["SEQUENCE"].max().between(1, 3).all()
    missing = (layers[["SAND", "SILT", "CLAY"]] == -9).all(axis=1)
    assert 0 < missing.sum() < 0.1 * len(layers)
    texture = layers.loc[~missing, ["SAND", "SILT", "CLAY"]]
    assert (texture.sum(axis=1) == 100).all() and (texture >= 0).all().all()
    valid_top = top[top["SAND"] != -9]
    assert set(at_sites.tolist()) <= set(valid_top["HWSD2_SMU_ID"])  # every site has a topsoil


def test_kummu_gdp_hdi(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    for name, file, bounds in (("GDP_per_capita_PPP", "GDP_per_capita_PPP_1990_2015_v2.nc", (100, 300_000)),
                               ("HDI", "HDI_1990_2015_v2.nc", (0, 1))):
        with xr.open_dataset(root / "Kummu_GDP_HDI" / file, engine="h5netcdf") as dataset:
            values = dataset[name].load()
        assert values.dims == ("time", "latitude", "longitude") and values.sizes["time"] == 26
        assert values["time"].values.tolist() == list(range(1990, 2016))
        assert np.issubdtype(values["time"].dtype, np.integer)
        assert np.all(np.diff(values["latitude"].values) < 0)
        finite = values.values[np.isfinite(values.values)]
        assert bounds[0] <= finite.min() and finite.max() <= bounds[1] and np.isnan(values.values).any()
        at_sites = values.sel(latitude=xr.DataArray(sites["lat"]), longitude=xr.DataArray(sites["lon"]), method="nearest")
        assert np.isfinite(at_sites.values).all()
        assert (at_sites.sel(time=2015) >= at_sites.sel(time=1990)).all()  # growth


def test_polygon_products(run: dict) -> None:
    root, sites = run["root"], run["sites"]
    points = gpd.GeoDataFrame(sites, geometry=gpd.points_from_xy(sites["lon"], sites["lat"]), crs="EPSG:4326")
    glim = gpd.read_file(root / VECTOR_FILES[0])
    assert glim.crs.to_epsg() == 4326 and set(glim["xx"]) <= GLIM_CODES
    assert set(glim.geom_type) <= {"Polygon", "MultiPolygon"}
    found = gpd.sjoin(points, glim, predicate="within").drop_duplicates("site")
    assert len(found) == N_SITES  # every site lies on a lithology polygon
    assert (found["xx"] == "sc").mean() >= 0.1  # carbonate is common
    glhymps = gpd.read_file(root / VECTOR_FILES[1])
    assert glhymps.crs.to_epsg() == 6933
    assert {"logK_Ice_x", "Porosity_x"} <= set(glhymps)
    assert np.issubdtype(glhymps["logK_Ice_x"].dtype, np.integer) and np.issubdtype(glhymps["Porosity_x"].dtype, np.integer)
    assert glhymps["logK_Ice_x"].between(-2000, -1000).all() and glhymps["Porosity_x"].between(1, 40).all()
    assert len(gpd.sjoin(points.to_crs("EPSG:6933"), glhymps, predicate="within").drop_duplicates("site")) == N_SITES
    for suffix in (".shx", ".dbf", ".prj"):
        assert (root / "GLHYMPS" / f"GLHYMPS{suffix}").is_file()
    ifl = gpd.read_file(root / VECTOR_FILES[2])
    assert ifl.crs.to_epsg() == 4326 and ifl["IFL_ID"].is_unique
    inside = gpd.sjoin(points, ifl, predicate="within")["site"].nunique()
    assert 0 < inside < N_SITES / 2  # some sites in intact forest, most outside


def test_rerun_replaces_its_own_output_with_the_same_files(run: dict) -> None:
    root = run["root"]
    before = _fingerprints(root)
    glim = gpd.read_file(root / VECTOR_FILES[0])
    result = _synth(root)
    assert result.exit_code == 0, result.output
    assert _fingerprints(root) == before
    pd.testing.assert_frame_equal(gpd.read_file(root / VECTOR_FILES[0]), glim)


def test_another_seed_draws_another_planet() -> None:
    from stefaland.synth.products import pretraining_sites
    from stefaland.synth.products_world import Planet

    assert not pretraining_sites(10, 0).equals(pretraining_sites(10, 1))
    assert pretraining_sites(10, 0).equals(pretraining_sites(10, 0))
    lat, lon = np.meshgrid(np.linspace(-50, 60, 20), np.linspace(-120, 140, 20))
    assert not np.allclose(Planet(0).elevation(lat, lon), Planet(1).elevation(lat, lon))


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = _synth(foreign)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "not a StefaLand" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("extra, message", [
    (["--resolution", "0.7"], "--resolution 0.7"),
    (["--resolution", "0.01"], "--resolution must be between"),
    (["--gridded"], "--gridded applies to the virtual world"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    result = _synth(tmp_path / "out", *extra)
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_resolution_belongs_to_products(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "synth", str(tmp_path / "w"), "--resolution", "1", "--sites", "2"])
    assert result.exit_code == 1 and "--resolution applies to --products" in result.output


def test_products_made_with_other_settings_are_replaced_only_with_force(tmp_path: Path) -> None:
    root = tmp_path / "products"
    assert _synth(root, "--sites", "5", "--years", "1", "--resolution", "2").exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    refused = _synth(root, "--sites", "6", "--years", "1", "--resolution", "2")
    assert refused.exit_code != 0
    assert "other settings (n_sites 5 -> 6)" in refused.output and "--force" in refused.output
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
