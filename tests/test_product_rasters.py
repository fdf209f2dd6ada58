"""Table C1 gridded products in their providers' formats: the stefaland_netcdf,
stefaland_raster, stefaland_terrain and stefaland_hwsd drivers on small real files written here
(NetCDF via h5netcdf, GeoTIFF and ESRI BIL via rasterio), and one ``data build`` through them."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml
from rasterio.transform import from_origin

from stefaland.assemble import build_store
from stefaland.errors import StefaLandError
from stefaland.gridded.extract import extract_to_sites
from stefaland.products.hwsd import HwsdSource
from stefaland.products.netcdf import NetcdfSource
from stefaland.products.raster import RasterSource
from stefaland.products.terrain import METRES_PER_DEGREE, TerrainSource
from stefaland.store import open_store

# a 0.1° grid over 40..42 N, 10..13 E; NetCDF latitudes descending as MSWX writes them
LAT = np.round(np.arange(41.95, 40.0, -0.1), 2)
LON = np.round(np.arange(10.05, 13.0, 0.1), 2)
DAYS = pd.date_range("2001-01-01", periods=3, freq="D")


def field(seed: int, shape: tuple[int, ...] = (LAT.size, LON.size)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-5, 30, size=shape).astype(np.float32)


def write_day(path: Path, name: str, day: pd.Timestamp, values: np.ndarray, extra: str | None = None) -> None:
    """One MSWX/MSWEP-like daily file: one variable (time=1, lat descending, lon)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: (("time", "lat", "lon"), values[None])}
    if extra:
        data[extra] = (("time", "lat", "lon"), values[None] + 1)
    ds = xr.Dataset(data, coords={"time": [day], "lat": LAT, "lon": LON})
    ds["time"].encoding.update(units="days since 1900-01-01", dtype="float64")
    ds.to_netcdf(path, engine="h5netcdf")


def mswx_tree(root: Path, days: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """ROOT/MSWX_V100/Past/{Tmax,Tmin}/Daily/YYYYDDD.nc, both named air_temperature; Tmin one day short."""
    days = days or {"Tmax": 3, "Tmin": 2}
    values = {}
    for k, (variable, count) in enumerate(days.items()):
        values[variable] = np.stack([field(10 * k + i) for i in range(count)])
        for i in range(count):
            day = DAYS[i]
            write_day(root / "MSWX_V100" / "Past" / variable / "Daily" / f"{day:%Y%j}.nc", "air_temperature", day,
                      values[variable][i])
    return values


def write_tif(path: Path, values: np.ndarray, west: float, north: float, res: float, nodata=None,
              driver: str = "GTiff", crs: str = "EPSG:4326") -> None:
    count = 1 if values.ndim == 2 else values.shape[0]
    with rasterio.open(path, "w", driver=driver, height=values.shape[-2], width=values.shape[-1], count=count,
                       dtype=values.dtype, crs=crs, transform=from_origin(west, north, res, res), nodata=nodata) as dst:
        dst.write(values if values.ndim == 3 else values[None])


def assert_lazy(ds: xr.Dataset) -> None:
    for name, var in ds.data_vars.items():
        assert isinstance(var.data, da.Array), name


# --- NetcdfSource -------------------------------------------------------------------------------


def test_mswx_sets_are_renamed_joined_by_date_and_lazy(tmp_path: Path) -> None:
    values = mswx_tree(tmp_path)
    ds = NetcdfSource(str(tmp_path / "MSWX_V100/Past/{variable}/Daily/*.nc"), variables=["Tmax", "Tmin"]).to_dask()
    assert sorted(ds.data_vars) == ["Tmax", "Tmin"]
    assert_lazy(ds)
    assert ds["Tmax"].data.numblocks[0] == 3  # one chunk per daily file
    np.testing.assert_array_equal(ds.indexes["time"], DAYS)
    np.testing.assert_array_equal(ds["Tmax"].values, values["Tmax"])
    np.testing.assert_array_equal(ds["Tmin"].values[:2], values["Tmin"])
    assert np.isnan(ds["Tmin"].values[2]).all()  # the set that ends a day earlier: NaN, not dropped
    # the existing gridded machinery takes it as is (lat descending → ascending)
    sites = pd.DataFrame({"site": ["a"], "lat": [LAT[3]], "lon": [LON[7]]})
    got = extract_to_sites(ds, sites, "nearest", ["Tmax"], None, "mswx").compute()
    np.testing.assert_allclose(got["Tmax"].values[0], values["Tmax"][:, 3, 7])


def test_mswep_keeps_its_own_names_and_orders_dates(tmp_path: Path) -> None:
    folder = tmp_path / "MSWEP_V280" / "Past" / "Daily"
    rain = {day: field(i) for i, day in enumerate(DAYS)}
    for day in reversed(DAYS):  # names sort by date whatever the write order
        write_day(folder / f"{day:%Y%j}.nc", "precipitation", day, rain[day])
    ds = NetcdfSource(str(folder / "*.nc")).to_dask()
    assert list(ds.data_vars) == ["precipitation"]
    assert_lazy(ds)
    np.testing.assert_array_equal(ds["precipitation"].values[1], rain[DAYS[1]])
    assert ds.indexes["time"].is_monotonic_increasing


def test_netcdf_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(StefaLandError, match=r"no file matches .*nothing/\*\.nc$"):
        NetcdfSource(str(tmp_path / "nothing/*.nc")).to_dask()
    bad = tmp_path / "MSWX_V100/Past/RelHum/Daily/2001001.nc"
    write_day(bad, "relative_humidity", DAYS[0], field(1), extra="relative_humidity_qc")
    with pytest.raises(StefaLandError, match=r"file .*RelHum/Daily/2001001\.nc of variable RelHum holds 2 data variables") as error:
        NetcdfSource(str(tmp_path / "MSWX_V100/Past/{variable}/Daily/*.nc"), variables=["RelHum"]).to_dask()
    assert "\n" not in str(error.value)
    twice = tmp_path / "dup"
    write_day(twice / "2001001.nc", "precipitation", DAYS[0], field(1))
    write_day(twice / "2001001_v2.nc", "precipitation", DAYS[0], field(2))
    with pytest.raises(StefaLandError, match=r"holds the date 2001-01-01 00:00:00 more than once"):
        NetcdfSource(str(twice / "*.nc")).to_dask()
    with pytest.raises(StefaLandError, match=r"contains \{variable\} but no variables"):
        NetcdfSource(str(tmp_path / "{variable}/*.nc"))


def test_cci_land_cover_selects_its_year(tmp_path: Path) -> None:
    classes = np.random.default_rng(3).choice(np.array([10, 50, 130, 190], dtype=np.uint8), size=(1, LAT.size, LON.size))
    ds = xr.Dataset({"lccs_class": (("time", "lat", "lon"), classes),
                     "processed_flag": (("time", "lat", "lon"), np.ones_like(classes))},
                    coords={"time": [pd.Timestamp("2018-01-01")], "lat": LAT, "lon": LON})
    ds["time"].encoding.update(units="days since 1970-01-01")
    path = tmp_path / "ESACCI-LC-L4-LCCS-Map-300m-P1Y-2018-v2.1.1.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    got = NetcdfSource(str(path), variables=["lccs_class"], select={"time": 2018}).to_dask()
    assert list(got.data_vars) == ["lccs_class"] and got["lccs_class"].dims == ("lat", "lon")
    assert got["lccs_class"].dtype == np.uint8
    assert_lazy(got)
    np.testing.assert_array_equal(got["lccs_class"].values, classes[0])
    assert np.array_equal(NetcdfSource(str(path), select={"time": "2018-01-01"}).to_dask()["lccs_class"].values, classes[0])
    with pytest.raises(StefaLandError, match=r"select time: label 2017 not found in .*2018-v2\.1\.1\.nc$"):
        NetcdfSource(str(path), select={"time": 2017}).to_dask()
    with pytest.raises(StefaLandError, match=r"select band: .* has no dimension band"):
        NetcdfSource(str(path), select={"band": 1}).to_dask()
    with pytest.raises(StefaLandError, match=r"has no variable lccs \(it has: lccs_class, processed_flag\)"):
        NetcdfSource(str(path), variables=["lccs"]).to_dask()


def test_kummu_gdp_selects_an_integer_year(tmp_path: Path) -> None:
    years = np.arange(1990, 2016)
    gdp = np.random.default_rng(4).uniform(500, 60000, size=(years.size, LAT.size, LON.size)).astype(np.float32)
    ds = xr.Dataset({"GDP_per_capita_PPP": (("time", "latitude", "longitude"), gdp)},
                    coords={"time": years, "latitude": LAT, "longitude": LON})
    path = tmp_path / "GDP_per_capita_PPP_1990_2015_v2.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    got = NetcdfSource(str(path), select={"time": 2015}).to_dask()
    assert got["GDP_per_capita_PPP"].dims == ("latitude", "longitude")
    np.testing.assert_array_equal(got["GDP_per_capita_PPP"].values, gdp[-1])
    # a daily axis: a year is many steps, refused in one line
    daily = tmp_path / "daily"
    for i, day in enumerate(DAYS):
        write_day(daily / f"{day:%Y%j}.nc", "precipitation", day, field(i))
    with pytest.raises(StefaLandError, match=r"select time: 2001 matches 3 steps in .*; give a date"):
        NetcdfSource(str(daily / "*.nc"), select={"time": 2001}).to_dask()


# --- RasterSource -------------------------------------------------------------------------------


def ndvi_months(folder: Path) -> np.ndarray:
    """Three AppEEARS-like monthly MOD13A3 NDVI GeoTIFFs: int16 × 1e4, nodata -3000."""
    folder.mkdir(parents=True, exist_ok=True)
    months = np.random.default_rng(5).integers(-2000, 10000, size=(3, 6, 8)).astype(np.int16)
    months[0, 0, 0] = months[1, 0, 0] = -3000  # one valid month of three
    months[:, 5, 7] = -3000  # never valid
    for i, doy in enumerate(("001", "032", "060")):
        write_tif(folder / f"MOD13A3.061__1_km_monthly_NDVI_doy2015{doy}_aid0001.tif", months[i], 10.0, 42.0, 0.25, nodata=-3000)
    return months


def test_ndvi_months_nan_mean_lazily_with_crs_kept(tmp_path: Path) -> None:
    months = ndvi_months(tmp_path / "ndvi")
    pattern = str(tmp_path / "ndvi" / "MOD13A3.061__1_km_monthly_NDVI_doy2015*_aid0001.tif")
    ds = RasterSource(pattern, name="NDVI", reduce="mean", chunks=4).to_dask()
    assert list(ds.data_vars) == ["NDVI"] and ds["NDVI"].dims == ("y", "x")
    assert_lazy(ds)
    assert ds["NDVI"].data.numblocks == (2, 2)
    valid = months != -3000
    mean = np.where(valid, months, 0).sum(axis=0) / np.where(valid.any(axis=0), valid.sum(axis=0), np.nan)
    got = ds["NDVI"].values
    np.testing.assert_allclose(got, mean, rtol=1e-6)
    assert got[0, 0] == months[2, 0, 0] and np.isnan(got[5, 7])
    assert ds.rio.crs.to_epsg() == 4326
    np.testing.assert_allclose(ds["x"].values[:2], [10.125, 10.375])
    with pytest.raises(StefaLandError, match=r"matches 3 files; give one, or reduce: mean$"):
        RasterSource(pattern).to_dask()
    with pytest.raises(StefaLandError, match=r"reduce must be null or 'mean'"):
        RasterSource(pattern, reduce="median")


def test_raster_band_count_bil_and_projected_grids(tmp_path: Path) -> None:
    two = tmp_path / "two_bands.tif"
    write_tif(two, np.ones((2, 4, 4), dtype=np.float32), 10.0, 42.0, 0.5)
    with pytest.raises(StefaLandError, match=r"two_bands\.tif has 2 bands; give a single-band raster$"):
        RasterSource(str(two)).to_dask()
    bil = tmp_path / "grid.bil"
    values = np.arange(16, dtype=np.uint16).reshape(4, 4)
    write_tif(bil, values, 10.0, 42.0, 0.5, nodata=65535, driver="EHdr")
    assert (tmp_path / "grid.hdr").exists()
    ds = RasterSource(str(bil), name="ids").to_dask()
    np.testing.assert_array_equal(ds["ids"].values, values)
    projected = tmp_path / "utm.tif"
    write_tif(projected, np.ones((4, 4), dtype=np.float32), 500000.0, 4650000.0, 1000.0, crs="EPSG:32632")
    grid = RasterSource(str(projected)).to_dask()
    sites = pd.DataFrame({"site": ["a"], "lat": [41.9], "lon": [9.1]})
    with pytest.raises(StefaLandError, match=r"projected CRS .*reproject it to EPSG:4326"):
        extract_to_sites(grid, sites, "nearest", ["band_data"], None, "utm")


# --- TerrainSource ------------------------------------------------------------------------------


def plane(lat: np.ndarray, lon: np.ndarray, east: float, north: float, reference: float) -> np.ndarray:
    """Elevation (m) rising ``north`` m/m northward and ``east`` m/m eastward at latitude ``reference``.

    Linear in lon and in lat, so the differences are exact; a degree of longitude is shorter
    towards the pole, so the eastward gradient of a row at ``lat`` is ``east·cos(reference)/cos(lat)``.
    """
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    x = (lon2 - lon[0]) * METRES_PER_DEGREE * np.cos(np.deg2rad(reference))
    y = (lat2 - lat[-1]) * METRES_PER_DEGREE
    return east * x + north * y


@pytest.mark.parametrize("south", [0.0, 60.0])
def test_terrain_slope_and_aspect_of_tilted_planes(tmp_path: Path, south: float) -> None:
    res = 0.01
    lat = south + 0.3 - res / 2 - res * np.arange(30)  # north-up rows
    lon = 20.0 + res / 2 + res * np.arange(25)
    reference = south + 0.15
    for name, (east, north) in {"east": (0.05, 0.0), "north": (0.0, 0.1), "southwest": (-0.03, -0.04)}.items():
        path = tmp_path / f"dem_{name}.tif"
        write_tif(path, plane(lat, lon, east, north, reference), 20.0, south + 0.3, res)
        ds = TerrainSource(str(path), chunks=8).to_dask()
        assert sorted(ds.data_vars) == ["aspect", "elevation", "slope"]
        assert_lazy(ds)
        assert ds["slope"].data.numblocks == (4, 4)
        slope = ds["slope"].values
        assert np.isfinite(slope).all()  # one-sided at the border: no NaN ring
        dz_east = east * np.cos(np.deg2rad(reference)) / np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size))
        dz_north = np.full_like(dz_east, north)
        np.testing.assert_allclose(slope, np.degrees(np.arctan(np.hypot(dz_east, dz_north))), rtol=1e-4, err_msg=name)
        aspect = np.degrees(np.arctan2(-dz_east, -dz_north)) % 360
        np.testing.assert_allclose(ds["aspect"].values, aspect, atol=1e-3, err_msg=name)
        assert ds["slope"].attrs["units"] == "degree" and ds["elevation"].attrs["units"] == "m"
    np.testing.assert_allclose(TerrainSource(str(tmp_path / "dem_east.tif")).to_dask()["aspect"].values, 270.0, atol=1e-3)
    np.testing.assert_allclose(TerrainSource(str(tmp_path / "dem_north.tif")).to_dask()["aspect"].values, 180.0, atol=1e-3)
    flat = tmp_path / "flat.tif"
    write_tif(flat, np.full((6, 6), 250.0, dtype=np.float32), 20.0, south + 0.3, res)
    ds = TerrainSource(str(flat)).to_dask()
    assert (ds["slope"].values == 0).all() and np.isnan(ds["aspect"].values).all()


# --- HwsdSource ---------------------------------------------------------------------------------


HWSD_ROWS = [  # HWSD2_SMU_ID, SEQUENCE, SHARE, LAYER, SAND, SILT, CLAY
    (101, 1, 60, "D1", 40, 40, 20), (101, 2, 40, "D1", 10, 30, 60), (101, 1, 60, "D2", 90, 5, 5),
    (102, 1, 50, "D1", 20, -9, 30), (102, 2, 30, "D1", 50, 25, 25), (102, 3, 20, "D1", -9, -9, -9),
    (103, 1, 100, "D1", -9, -9, -9),
]


def hwsd_files(folder: Path) -> tuple[Path, Path, np.ndarray]:
    ids = np.array([[101, 102, 103, 65535], [102, 101, 999, 101], [65535, 103, 102, 102]], dtype=np.uint16)
    raster = folder / "HWSD2.bil"
    write_tif(raster, ids, 10.0, 42.0, 0.5, nodata=65535, driver="EHdr")
    frame = pd.DataFrame(HWSD_ROWS, columns=["HWSD2_SMU_ID", "SEQUENCE", "SHARE", "LAYER", "SAND", "SILT", "CLAY"])
    frame.insert(0, "ID", np.arange(len(frame)) + 1)
    frame["LAYER"] = '"' + frame["LAYER"] + '"'  # mdb-export quotes text
    layers = folder / "HWSD2_LAYERS.csv"
    frame.to_csv(layers, index=False, quoting=3)
    return raster, layers, ids


def test_hwsd_share_weighted_layer_means(tmp_path: Path) -> None:
    raster, layers, ids = hwsd_files(tmp_path)
    ds = HwsdSource(str(raster), str(layers), columns=["SAND", "SILT", "CLAY"], chunks=2).to_dask()
    assert sorted(ds.data_vars) == ["CLAY", "SAND", "SILT"]
    assert_lazy(ds)
    by_unit = {  # by hand: shares renormalised over the components with a valid value
        101: (0.6 * 40 + 0.4 * 10, 0.6 * 40 + 0.4 * 30, 0.6 * 20 + 0.4 * 60),
        102: ((50 * 20 + 30 * 50) / 80, 25.0, (50 * 30 + 30 * 25) / 80),
        103: (np.nan,) * 3, 999: (np.nan,) * 3, 65535: (np.nan,) * 3,
    }
    for k, name in enumerate(("SAND", "SILT", "CLAY")):
        expected = np.vectorize(lambda u, k=k: by_unit[int(u)][k])(ids)
        np.testing.assert_allclose(ds[name].values, expected, rtol=1e-6, err_msg=name)
    deeper = HwsdSource(str(raster), str(layers), layer="D2", columns=["SAND"]).to_dask()
    assert deeper["SAND"].values[0, 0] == 90 and np.isnan(deeper["SAND"].values[0, 1])


def test_hwsd_one_line_errors(tmp_path: Path) -> None:
    raster, layers, _ = hwsd_files(tmp_path)
    with pytest.raises(StefaLandError, match=r"file .*HWSD2_LAYERS\.csv has no column BULK$"):
        HwsdSource(str(raster), str(layers), columns=["SAND", "BULK"]).to_dask()
    with pytest.raises(StefaLandError, match=r"layer D5 not found in .*HWSD2_LAYERS\.csv \(layers: D1, D2\)"):
        HwsdSource(str(raster), str(layers), layer="D5").to_dask()


# --- object storage -----------------------------------------------------------------------------


def test_products_read_from_s3(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    import s3fs

    values = mswx_tree(tmp_path / "root", {"Tmax": 2})
    ndvi_months(tmp_path / "root" / "ndvi")
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key)
    fs.put(str(tmp_path / "root") + "/", s3_bucket + "/products/", recursive=True)
    ds = NetcdfSource(f"{s3_bucket}/products/MSWX_V100/Past/{{variable}}/Daily/*.nc", variables=["Tmax"]).to_dask()
    np.testing.assert_array_equal(ds["Tmax"].values, values["Tmax"])
    ndvi = RasterSource(f"{s3_bucket}/products/ndvi/*.tif", reduce="mean").to_dask()
    assert ndvi["band_data"].shape == (6, 8) and np.isfinite(ndvi["band_data"].values[1:4]).all()


# --- data build through an intake catalog ------------------------------------------------------


def test_data_build_extracts_products_at_sites(tmp_path: Path) -> None:
    temps = mswx_tree(tmp_path / "data", {"Tmax": 3, "Tmin": 3})
    raster, layers, ids = hwsd_files(tmp_path / "data")
    res = 0.1
    lat = 42.0 - res / 2 - res * np.arange(20)
    lon = 10.0 + res / 2 + res * np.arange(30)
    write_tif(tmp_path / "data" / "gmted_mea300.tif", plane(lat, lon, 0.02, 0.0, 41.0).astype(np.float32), 10.0, 42.0, res)
    sites = pd.DataFrame({"site": ["s1", "s2", "s3"], "lat": [41.93, 41.26, 41.26], "lon": [10.23, 10.72, 11.41]})
    sites.to_csv(tmp_path / "sites.csv", index=False)
    data = "{{ CATALOG_DIR }}/data"
    catalog = {
        "metadata": {"version": 1, "stefaland": {"name": "products", "sites": "sites"}},
        "sources": {
            "sites": {"driver": "csv", "args": {"urlpath": "{{ CATALOG_DIR }}/sites.csv"},
                      "metadata": {"role": "sites", "site_id": "site"}},
            "mswx": {"driver": "stefaland_netcdf",
                     "args": {"urlpath": data + "/MSWX_V100/Past/{variable}/Daily/*.nc", "variables": ["Tmax", "Tmin"]},
                     "metadata": {"role": "dynamic", "gridded": {"method": "nearest"}, "variables": {
                         "tmax": {"from": "Tmax", "units": "degC", "group": "climate"},
                         "tmin": {"from": "Tmin", "units": "degC", "group": "climate"}}}},
            "hwsd": {"driver": "stefaland_hwsd",
                     "args": {"raster": data + "/HWSD2.bil", "layers": data + "/HWSD2_LAYERS.csv", "columns": ["SAND", "CLAY"]},
                     "metadata": {"role": "static", "gridded": {"method": "nearest"}, "variables": {
                         "sand": {"from": "SAND", "units": "%", "group": "soil"},
                         "clay": {"from": "CLAY", "units": "%", "group": "soil"}}}},
            "terrain": {"driver": "stefaland_terrain", "args": {"urlpath": data + "/gmted_mea300.tif", "chunks": 8},
                        "metadata": {"role": "static", "gridded": {"method": "bilinear"}, "variables": {
                            "elevation": {"from": "elevation", "units": "m", "group": "terrain"},
                            "slope": {"from": "slope", "units": "degree", "group": "terrain"}}}},
        },
    }
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    summary = build_store(str(tmp_path / "catalog.yaml"), str(tmp_path / "store.zarr"), shard_size=2, quiet=True,
                          scheduler="sync")
    assert summary.n_sites == 3 and summary.n_time == 3
    store = open_store(str(tmp_path / "store.zarr"))
    tmax = store["dynamic"].sel(dvar="tmax").sel(site=["s1", "s3"]).values
    np.testing.assert_allclose(tmax[0], temps["Tmax"][:, 0, 2], rtol=1e-6)  # s1 → cell (41.95, 10.25)
    np.testing.assert_allclose(tmax[1], temps["Tmax"][:, 7, 14], rtol=1e-6)  # s3 → cell (41.25, 11.45)
    static = store["static"]
    # HWSD: s1 in unit 101 (row 0, col 0), s2 in unit 101 (row 1, col 1) — % → fraction
    np.testing.assert_allclose(static.sel(svar="sand", site="s1").values, 0.28, rtol=1e-5)
    np.testing.assert_allclose(static.sel(svar="clay", site="s2").values, 0.36, rtol=1e-5)
    assert np.isnan(static.sel(svar="sand", site="s3").values)  # unit 999: not in the table
    slope = np.degrees(np.arctan(0.02 * np.cos(np.deg2rad(41.0)) / np.cos(np.deg2rad(sites["lat"].to_numpy()))))
    np.testing.assert_allclose(static.sel(svar="slope", site=["s1", "s2", "s3"]).values, slope, rtol=1e-3)
    # bilinear elevation of a surface linear in lon: the surface's own value at the site
    expected = 0.02 * (sites["lon"] - lon[0]) * METRES_PER_DEGREE * np.cos(np.deg2rad(41.0))
    np.testing.assert_allclose(static.sel(svar="elevation", site=["s1", "s2", "s3"]).values, expected.to_numpy(), rtol=1e-5)


def test_day_tree_fast_path_equals_open_mfdataset(tmp_path: Path) -> None:
    """The YYYYDDD.nc fast path (dates from the names, one h5py read per day) decodes like xarray:
    packed int16 with scale/offset and a fill value, on the same dates and grid."""
    from stefaland.products.daily_files import open_day_tree

    rng = np.random.default_rng(3)
    files = []
    for day in range(1, 5):
        values = rng.uniform(-5, 30, size=(1, 4, 6)).astype(np.float32)
        values[0, 0, 0] = np.nan
        ds = xr.Dataset({"air_temperature": (("time", "lat", "lon"), values)},
                        coords={"time": [pd.Timestamp("2001-01-01") + pd.Timedelta(days=day - 1)],
                                "lat": np.linspace(7.5, -7.5, 4), "lon": np.linspace(-12.5, 12.5, 6)})
        path = tmp_path / f"2001{day:03d}.nc"
        ds.to_netcdf(path, engine="h5netcdf", encoding={"air_temperature": {
            "dtype": "int16", "scale_factor": 0.01, "add_offset": 10.0, "_FillValue": -32768}})
        files.append(str(path))
    fast = open_day_tree(files, "Tmax", None, "h5netcdf", None)
    assert fast is not None and fast["Tmax"].chunks[0] == (1, 1, 1, 1)
    slow = xr.open_mfdataset(files, engine="h5netcdf", combine="nested", concat_dim="time")
    np.testing.assert_array_equal(fast.indexes["time"], slow.indexes["time"])
    np.testing.assert_allclose(fast["Tmax"].values, slow["air_temperature"].values, rtol=1e-6, equal_nan=True)
    assert np.isnan(fast["Tmax"].values[:, 0, 0]).all()
    (tmp_path / "odd").mkdir()
    renamed = str(tmp_path / "odd" / "day_one.nc")
    Path(files[0]).rename(renamed)
    assert open_day_tree([renamed, *files[1:]], "Tmax", None, "h5netcdf", None) is None  # not a dated tree: general path
