"""Gridded sources → site and basin series: hand-computed values on small grids, real files,
real geometry libraries, a real dask.distributed LocalCluster."""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely.geometry import Polygon, box

from stefaland.errors import StefaLandError
from stefaland.gridded import extract_to_sites, gridded_options, normalise_grid, polygons, read_basins
from stefaland.gridded.scheduler import dask_client, local_size
from stefaland.synth.world_grids import (
    LANDCOVER_CLASSES,
    basin_squares,
    gridded_catalog_entries,
    write_basins,
    write_gridded_world,
)
from stefaland.units import check_plausible, to_canonical

SHAPEFILE = "ewatercycle_caravan_nc/tests/src/base/forcing_files/camels_03439000"


def linear_grid(lat: np.ndarray, lon: np.ndarray, name: str = "v") -> xr.Dataset:
    """v = 2·lat + 3·lon: bilinear interpolation of a linear field is exact, so expected values are easy."""
    values = 2.0 * lat[:, None] + 3.0 * lon[None, :]
    return xr.Dataset({name: (("lat", "lon"), values, {"units": "m"})}, coords={"lat": lat, "lon": lon})


def sites_table(rows: list[tuple[str, float, float]], geometries: list | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["site", "lat", "lon"])
    if geometries is not None:
        frame["geometry"] = geometries
    return frame


def cell_area(lat_centre: float, dlat: float = 1.0) -> float:
    """Relative area of a cell row on the sphere: sin(top) − sin(bottom)."""
    return np.sin(np.radians(lat_centre + dlat / 2)) - np.sin(np.radians(lat_centre - dlat / 2))


LAT4 = np.array([0.5, 1.5, 2.5, 3.5])
LON5 = np.array([10.5, 11.5, 12.5, 13.5, 14.5])


# --- points -------------------------------------------------------------------------------------


def test_nearest_and_bilinear_match_hand_values() -> None:
    grid = linear_grid(LAT4, LON5).chunk({"lat": 2, "lon": 2})
    sites = sites_table([("inner", 1.2, 11.9), ("edge", 0.1, 14.9), ("centre", 2.5, 12.5)])
    nearest = extract_to_sites(grid, sites, "nearest", ["v"], None, "toy").compute()
    # inner → cell (1.5, 11.5); edge → (0.5, 14.5); centre on a cell centre → that cell
    np.testing.assert_allclose(nearest["v"].values, [2 * 1.5 + 3 * 11.5, 2 * 0.5 + 3 * 14.5, 2 * 2.5 + 3 * 12.5])
    bilinear = extract_to_sites(grid, sites, "bilinear", ["v"], None, "toy").compute()
    # exact inside; beyond the outermost centres the value is held at the edge centre
    np.testing.assert_allclose(bilinear["v"].values, [2 * 1.2 + 3 * 11.9, 2 * 0.5 + 3 * 14.5, 2 * 2.5 + 3 * 12.5])
    assert list(bilinear["site"].values) == ["inner", "edge", "centre"]
    assert bilinear["v"].attrs["units"] == "m"


def test_site_on_nan_cell() -> None:
    grid = linear_grid(LAT4, LON5)
    grid["v"][1, 1] = np.nan  # the "ocean" cell centred on (1.5, 11.5)
    sites = sites_table([("ocean", 1.4, 11.6), ("coast", 1.5, 12.0)],
                        [box(11.0, 1.0, 12.0, 2.0), box(11.5, 1.0, 12.5, 2.0)])
    nearest = extract_to_sites(grid, sites, "nearest", ["v"], None, "toy")["v"].values
    assert np.isnan(nearest[0])
    # bilinear at (1.5, 12.0): neighbours (1.5,11.5) NaN and (1.5,12.5) valid, weight 0.5 each →
    # renormalised over the valid one
    bilinear = extract_to_sites(grid, sites, "bilinear", ["v"], None, "toy")["v"].values
    np.testing.assert_allclose(bilinear[1], 2 * 1.5 + 3 * 12.5)
    # polygon over the NaN cell alone → NaN; half NaN half valid → the valid cell's value
    polygon = extract_to_sites(grid, sites, "polygon", ["v"], None, "toy")["v"].values
    assert np.isnan(polygon[0])
    np.testing.assert_allclose(polygon[1], 2 * 1.5 + 3 * 12.5)


def test_longitudes_0_360_give_the_same_series() -> None:
    lon360 = np.arange(0.5, 360.0, 1.0)
    lat = np.array([-0.5, 0.5])
    grid360 = xr.Dataset({"v": (("lat", "lon"), np.tile(lon360, (2, 1)))}, coords={"lat": lat, "lon": lon360})
    normalised, geometry = normalise_grid(grid360, "g360")
    assert geometry.global_lon and normalised["lon"].values.min() == -179.5 and normalised["lon"].values.max() == 179.5
    # the same site given as -0.2 and as 359.8; nearest is the cell centred on 359.5 (value 359.5)
    sites = sites_table([("west", 0.0, -0.2), ("west360", 0.0, 359.8), ("east", 0.0, 0.2)])
    nearest = extract_to_sites(grid360, sites, "nearest", ["v"], None, "g360")["v"].values
    np.testing.assert_allclose(nearest, [359.5, 359.5, 0.5])
    # bilinear across the 0° seam, between centres 359.5 and 0.5: at lon 0.0 → 50/50
    seam = sites_table([("seam", 0.0, 0.0)])
    np.testing.assert_allclose(extract_to_sites(grid360, seam, "bilinear", ["v"], None, "g360")["v"].values, [180.0])
    # across the ±180° seam of the normalised grid, between -179.5 (180.5) and 179.5
    dateline = sites_table([("dateline", 0.0, 179.75)])
    value = extract_to_sites(grid360, dateline, "bilinear", ["v"], None, "g360")["v"].values
    np.testing.assert_allclose(value, [0.75 * 179.5 + 0.25 * 180.5])  # nearer to 179.5


def test_descending_y_x_grid_is_normalised() -> None:
    grid = linear_grid(LAT4, LON5).rename({"lat": "y", "lon": "x"}).isel(y=slice(None, None, -1))
    sites = sites_table([("s", 1.2, 11.9)])
    out = extract_to_sites(grid, sites, "bilinear", ["v"], None, "yx")
    np.testing.assert_allclose(out["v"].values, [2 * 1.2 + 3 * 11.9])


# --- polygons -----------------------------------------------------------------------------------


def test_polygon_crossing_cell_edges_is_area_weighted() -> None:
    lat = np.array([50.5, 51.5, 52.5])
    lon = np.array([0.5, 1.5, 2.5])
    grid = linear_grid(lat, lon).chunk({"lat": 1, "lon": 2})
    # box 0.5..1.5 E × 50.25..51.75 N: 4 cells, each covered 0.5 (lon) × 0.75 (lat)
    sites = sites_table([("b", 51.0, 1.0)], [box(0.5, 50.25, 1.5, 51.75)])
    out = extract_to_sites(grid, sites, "polygon", ["v"], None, "toy").compute()
    w_south, w_north = 0.375 * cell_area(50.5), 0.375 * cell_area(51.5)
    v = lambda la, lo: 2 * la + 3 * lo  # noqa: E731
    expected = (w_south * (v(50.5, 0.5) + v(50.5, 1.5)) + w_north * (v(51.5, 0.5) + v(51.5, 1.5))) / (2 * w_south + 2 * w_north)
    np.testing.assert_allclose(out["v"].values, [expected], rtol=1e-12)
    # the southern cells are larger on the sphere, so the mean is below the planar one
    assert out["v"].values[0] < (v(50.5, 1.0) + v(51.5, 1.0)) / 2


def test_polygon_crossing_the_antimeridian() -> None:
    lon = np.arange(-179.5, 180.0, 1.0)
    lat = np.array([-1.5, -0.5, 0.5, 1.5])
    grid = xr.Dataset({"v": (("lat", "lon"), np.tile(lon, (4, 1)) + 1000 * lat[:, None])}, coords={"lat": lat, "lon": lon})
    beyond = box(179.5, 0.0, 180.5, 1.0)  # longitudes past 180
    jumping = Polygon([(179.5, 0.0), (-179.5, 0.0), (-179.5, 1.0), (179.5, 1.0)])  # ring jumping the seam
    sites = sites_table([("beyond", 0.5, 180.0), ("jumping", 0.5, -180.0)], [beyond, jumping])
    out = extract_to_sites(grid, sites, "polygon", ["v"], None, "global")["v"].values
    # half of the cell centred on 179.5 and half of the one centred on -179.5, same row (lat 0.5)
    expected = ((179.5 + 500) + (-179.5 + 500)) / 2
    np.testing.assert_allclose(out, [expected, expected])
    # the same grid in 0..360 longitudes gives the same means
    grid360 = grid.assign_coords(lon=np.mod(lon, 360.0)).sortby("lon")
    np.testing.assert_allclose(extract_to_sites(grid360, sites, "polygon", ["v"], None, "global360")["v"].values, out)


def test_coverage_fractions_computed_once_per_grid_and_basin_set() -> None:
    lat, lon = np.arange(40.5, 44, 1.0), np.arange(-100.5, -96, 1.0)
    time = pd.date_range("2000-01-01", periods=6)
    grid = xr.Dataset(
        {name: (("time", "lat", "lon"), np.random.default_rng(1).random((6, lat.size, lon.size))) for name in ("a", "b")},
        coords={"time": time, "lat": lat, "lon": lon},
    )
    sites = sites_table([("p", 42.0, -99.0), ("q", 41.0, -98.0)], [box(-99.7, 41.2, -98.3, 42.9), box(-98.6, 40.1, -97.2, 41.6)])
    before = dict(polygons.cache_stats)
    first = extract_to_sites(grid, sites, "polygon", ["a", "b"], None, "multi")
    assert polygons.cache_stats["misses"] == before["misses"] + 1
    second = extract_to_sites(grid[["b"]].isel(time=slice(2, 4)), sites, "polygon", ["b"], None, "multi")
    assert polygons.cache_stats["misses"] == before["misses"] + 1  # same grid, same basins: reused
    assert polygons.cache_stats["hits"] == before["hits"] + 1
    np.testing.assert_allclose(second["b"].values, first["b"].isel(time=slice(2, 4)).values)
    assert first["a"].dims == ("site", "time")


def test_one_window_per_basin_gives_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """On fine grids basins get one small exactextract window each instead of one for the batch."""
    grid = linear_grid(np.arange(30.05, 36, 0.1), np.arange(-110.95, -100, 0.1))
    sites = sites_table([("w", 31.0, -110.0), ("e", 35.0, -101.0)],
                        [box(-110.33, 30.71, -109.52, 31.46), box(-101.27, 34.66, -100.61, 35.18)])
    shared = extract_to_sites(grid, sites, "polygon", ["v"], None, "batch")["v"].values
    monkeypatch.setattr(polygons, "WINDOW_CELLS", 100)  # the batch window (60x110 cells) no longer fits
    monkeypatch.setattr(polygons, "_cache", OrderedDict())  # recompute rather than reuse
    misses = polygons.cache_stats["misses"]
    apart = extract_to_sites(grid, sites, "polygon", ["v"], None, "apart")["v"].values
    assert polygons.cache_stats["misses"] == misses + 1
    np.testing.assert_allclose(apart, shared, rtol=1e-12)
    # linear field, near-uniform cell areas: the mean is close to the value at the box centre
    np.testing.assert_allclose(shared, [2 * 31.085 + 3 * -109.925, 2 * 34.92 + 3 * -100.94], rtol=2e-4)


def test_real_camels_basin_from_shapefile(shared_data: Path, tmp_path: Path) -> None:
    # the shared .shx is damaged (UTF-8 mangled); without it GDAL rebuilds the index from the .shp
    for suffix in ("shp", "dbf", "prj", "cpg"):
        shutil.copy(shared_data / f"{SHAPEFILE}.{suffix}", tmp_path / f"camels_03439000.{suffix}")
    basins = read_basins(str(tmp_path / "camels_03439000.shp"), "gauge_id", "camels_basins")
    geometry = basins["camels_03439000"]
    assert geometry.geom_type == "Polygon" and -83.1 < geometry.bounds[0] < geometry.bounds[2] < -82.7
    lat, lon = np.arange(34.95, 35.5, 0.1), np.arange(-83.15, -82.6, 0.1)
    grid = linear_grid(np.round(lat, 6), np.round(lon, 6))
    sites = sites_table([("camels_03439000", 35.2, -82.9)], [geometry])
    got = extract_to_sites(grid, sites, "polygon", ["v"], None, "toy")["v"].values[0]
    # independent check with shapely's own intersection areas, cell by cell
    total = weight_sum = 0.0
    for la in grid["lat"].values:
        for lo in grid["lon"].values:
            covered = geometry.intersection(box(lo - 0.05, la - 0.05, lo + 0.05, la + 0.05)).area / 0.01
            weight = covered * cell_area(la, 0.1)
            total += weight * (2 * la + 3 * lo)
            weight_sum += weight
    np.testing.assert_allclose(got, total / weight_sum, rtol=1e-9)


@pytest.mark.parametrize("suffix", ["geojson", "gpkg"])
def test_basins_from_geojson_and_geopackage(tmp_path: Path, suffix: str) -> None:
    sites = sites_table([("0101", 40.0, -100.0), ("0202", 41.0, -99.0)])
    path = write_basins(sites, tmp_path / f"basins.{suffix}", half_width=0.25)
    basins = read_basins(str(path), "site")
    assert list(basins.index) == ["0101", "0202"]
    assert basins["0202"].equals(box(-99.25, 40.75, -98.75, 41.25))


def test_basins_without_geometry_name_the_site(tmp_path: Path) -> None:
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"site": ["a", "b"]}, geometry=[box(0, 0, 1, 1), None], crs="EPSG:4326")
    frame.to_file(tmp_path / "broken.gpkg")
    with pytest.raises(StefaLandError, match=r"site b"):
        read_basins(str(tmp_path / "broken.gpkg"), "site", "basins")


# --- categorical --------------------------------------------------------------------------------


def test_class_fractions_sum_to_one_over_valid_cells() -> None:
    codes = np.array([[1, 1, 2, 3, 3], [2, np.nan, 9, 3, 1], [1, 1, 1, 1, 1], [np.nan, np.nan, np.nan, np.nan, np.nan]])
    grid = xr.Dataset({"lc": (("lat", "lon"), codes)}, coords={"lat": np.array([0.5, 1.5, 2.5, 3.5]), "lon": LON5})
    classes = {"1": "Forest", 2: "grass land", 3: "urban"}
    # basin covers the 2x3 block lat 0..2 × lon 10..13 in full: codes 1,1,2 / 2,NaN,9 → valid 1,1,2,2
    sites = sites_table([("block", 1.0, 11.5), ("nodata", 3.5, 12.5), ("point", 0.5, 13.5)],
                        [box(10.0, 0.0, 13.0, 2.0), box(10.0, 3.0, 15.0, 4.0), box(13.2, 0.2, 13.8, 0.8)])
    out = extract_to_sites(grid, sites, "polygon", ["lc"], classes, "landcover").compute()
    assert sorted(out.data_vars) == ["lc_forest", "lc_grass_land", "lc_urban"]
    a0, a1 = cell_area(0.5), cell_area(1.5)
    forest = (2 * a0) / (2 * a0 + a0 + a1)  # two class-1 cells in row 0; one class-2 in each row
    np.testing.assert_allclose(out["lc_forest"].sel(site="block"), forest)
    np.testing.assert_allclose(out["lc_grass_land"].sel(site="block"), 1 - forest)
    np.testing.assert_allclose(out["lc_urban"].sel(site="block"), 0.0)
    total = sum(out[v] for v in out.data_vars)
    np.testing.assert_allclose(total.sel(site=["block", "point"]), 1.0)
    assert all(np.isnan(out[v].sel(site="nodata")) for v in out.data_vars)  # no valid cell → NaN
    assert out["lc_urban"].sel(site="point") == 1.0 and out["lc_forest"].attrs["units"] == "fraction"
    nearest = extract_to_sites(grid, sites.drop(columns="geometry"), "nearest", ["lc"], classes, "landcover")
    np.testing.assert_allclose(nearest["lc_urban"].sel(site="point"), 1.0)


def test_gridded_options_parse_the_catalog_block() -> None:
    assert gridded_options({"method": "bilinear"}, "s") == ("bilinear", None)
    method, classes = gridded_options({"method": "polygon", "categorical": True, "classes": {1: "a", "2": "b"}}, "lc")
    assert method == "polygon" and classes == {1.0: "a", 2.0: "b"}
    with pytest.raises(StefaLandError, match=r"source lc: unknown gridded method 'cubic'"):
        gridded_options({"method": "cubic"}, "lc")
    with pytest.raises(StefaLandError, match=r"source lc: .*gridded.classes"):
        gridded_options({"method": "nearest", "categorical": True}, "lc")
    with pytest.raises(StefaLandError, match=r"unknown key gridded.interp"):
        gridded_options({"interp": "x"}, "lc")


# --- errors -------------------------------------------------------------------------------------


def test_errors_name_the_source_and_site() -> None:
    grid = linear_grid(LAT4, LON5)
    far = sites_table([("ok", 1.0, 11.0), ("far_away", 1.0, 20.0)])
    with pytest.raises(StefaLandError, match=r"^source toy: site far_away \(lat 1, lon 20\) is outside the grid extent"):
        extract_to_sites(grid, far, "nearest", ["v"], None, "toy")
    with pytest.raises(StefaLandError, match=r"site far_away"):
        extract_to_sites(grid, far, "bilinear", ["v"], None, "toy")
    spilling = sites_table([("spill", 1.0, 14.0)], [box(14.0, 1.0, 16.0, 2.0)])
    with pytest.raises(StefaLandError, match=r"source toy: basin of site spill is outside the grid extent \(only 50.0%"):
        extract_to_sites(grid, spilling, "polygon", ["v"], None, "toy")
    with pytest.raises(StefaLandError, match=r"source toy: unknown gridded method 'spline'"):
        extract_to_sites(grid, far, "spline", ["v"], None, "toy")
    with pytest.raises(StefaLandError, match=r"source toy: no lat/lon \(or y/x\) coordinates"):
        extract_to_sites(grid.rename({"lat": "row", "lon": "col"}), far, "nearest", ["v"], None, "toy")
    with pytest.raises(StefaLandError, match=r"source toy: variable prcp not found"):
        extract_to_sites(grid, far.iloc[:1], "nearest", ["prcp"], None, "toy")
    with pytest.raises(StefaLandError, match=r"source toy: site ok has no basin geometry") as caught:
        extract_to_sites(grid, far.iloc[:1].assign(geometry=[None]), "polygon", ["v"], None, "toy")
    assert "\n" not in str(caught.value)


def test_projected_grid_is_refused() -> None:
    import rioxarray  # noqa: F401

    grid = linear_grid(LAT4, LON5).rename({"lat": "y", "lon": "x"}).rio.write_crs("EPSG:5070")
    with pytest.raises(StefaLandError, match=r"source albers: grid is in a projected CRS"):
        extract_to_sites(grid, sites_table([("s", 1.0, 11.0)]), "nearest", ["v"], None, "albers")


# --- units and calendars ------------------------------------------------------------------------


def test_units_convert_on_the_lazy_extraction() -> None:
    time = pd.date_range("2001-01-01", periods=3)
    kelvin = np.full((3, LAT4.size, LON5.size), 283.15)
    flux = np.full((3, LAT4.size, LON5.size), 1.0 / 86400.0)  # 1 mm/day in kg m-2 s-1
    grid = xr.Dataset({"t2m": (("time", "lat", "lon"), kelvin, {"units": "K"}),
                       "tp": (("time", "lat", "lon"), flux, {"units": "kg m-2 s-1"})},
                      coords={"time": time, "lat": LAT4, "lon": LON5}).chunk({"time": 1})
    out = extract_to_sites(grid, sites_table([("s", 1.0, 11.0)]), "bilinear", ["t2m", "tp"], None, "era5")
    celsius = to_canonical(out["t2m"], out["t2m"].attrs["units"], "source era5 variable t2m")
    mm_day = to_canonical(out["tp"], out["tp"].attrs["units"], "source era5 variable tp")
    assert isinstance(celsius.data, da.Array)  # still lazy
    np.testing.assert_allclose(celsius.values, 10.0)
    np.testing.assert_allclose(mm_day.values, 1.0)
    check_plausible(celsius.values, "K", "source era5 variable t2m")
    with pytest.raises(StefaLandError, match=r"source era5 variable t2m: unknown unit 'kelvins'"):
        to_canonical(out["t2m"], "kelvins", "source era5 variable t2m")


def test_noleap_calendar_becomes_standard_dates() -> None:
    time = xr.date_range("2000-02-27", periods=4, calendar="noleap", use_cftime=True)
    values = np.arange(4.0)[:, None, None] * np.ones((4, LAT4.size, LON5.size))
    grid = xr.Dataset({"v": (("time", "lat", "lon"), values)}, coords={"time": time, "lat": LAT4, "lon": LON5})
    out = extract_to_sites(grid, sites_table([("s", 1.0, 11.0)]), "nearest", ["v"], None, "cmip")
    assert np.issubdtype(out["time"].dtype, np.datetime64)
    assert pd.Timestamp(out["time"].values[-1]) == pd.Timestamp("2000-03-02")
    series = out["v"].sel(site="s").to_series()
    assert np.isnan(series["2000-02-29"]) and series["2000-03-01"] == 2.0


# --- out of core and scheduling -----------------------------------------------------------------


def test_extraction_reads_only_the_chunks_holding_the_sites() -> None:
    touched: set[tuple[int, ...]] = set()
    lock = threading.Lock()

    def block(x: np.ndarray, block_info=None) -> np.ndarray:
        with lock:
            touched.add(tuple(block_info[None]["chunk-location"]))
        return x

    lat, lon = np.arange(0.5, 8, 1.0), np.arange(0.5, 8, 1.0)
    base = da.from_array(2.0 * lat[None, :, None] + 3.0 * lon[None, None, :] + np.zeros((4, 1, 1)), chunks=(2, 2, 2))
    grid = xr.Dataset({"v": (("time", "lat", "lon"), base.map_blocks(block, dtype=float))},
                      coords={"time": pd.date_range("2000-01-01", periods=4), "lat": lat, "lon": lon})
    out = extract_to_sites(grid, sites_table([("s", 0.7, 0.7)]), "nearest", ["v"], None, "lazy")
    assert isinstance(out["v"].data, da.Array) and not touched  # building the extraction reads nothing
    with dask.config.set(scheduler="threads"):
        np.testing.assert_allclose(out["v"].values, np.full((1, 4), 2 * 0.5 + 3 * 0.5))
    # 4x4 spatial blocks x 2 time blocks exist; only the block holding cell (0, 0) was computed
    assert touched == {(0, 0, 0), (1, 0, 0)}
    # with site blocks aligned to shards, computing one shard reads only that shard's cells
    touched.clear()
    three = sites_table([("s", 0.7, 0.7), ("t", 1.2, 0.9), ("far", 7.5, 7.5)])
    sharded = extract_to_sites(grid, three, "nearest", ["v"], None, "lazy", site_chunk=2)
    assert sharded["v"].data.chunks[0] == (2, 1)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_allclose(sharded["v"].isel(site=slice(2, 3)).values, np.full((1, 4), 2 * 7.5 + 3 * 7.5))
    assert touched == {(0, 3, 3), (1, 3, 3)}


def test_unreachable_scheduler_is_one_clear_error() -> None:
    with pytest.raises(StefaLandError, match=r"--scheduler tcp://127.0.0.1:9: cannot reach the dask scheduler"):
        with dask_client("tcp://127.0.0.1:9", timeout=2):
            pass
    with pytest.raises(StefaLandError, match=r"give 'local' or a scheduler address"):
        with dask_client("nowhere"):
            pass
    size = local_size()
    assert size.n_workers >= 1 and size.memory_limit > 0


# --- synthetic world and catalog ----------------------------------------------------------------


def test_synthetic_world_through_an_intake_catalog(tmp_path: Path) -> None:
    import intake
    import yaml

    from stefaland.catalog import load_catalog

    sites = sites_table([("g1", 40.1, -100.2), ("g2", 41.3, -99.1), ("g3", 42.0, -101.7)])
    world = write_gridded_world(sites, "2000-01-01", "2000-12-31", seed=7, out_dir=tmp_path / "grids")
    sites.to_csv(tmp_path / "sites.csv", index=False)
    entries = gridded_catalog_entries(world, catalog_dir=tmp_path)
    catalog = {
        "metadata": {"version": 1, "stefaland": {"name": "virtual", "sites": "sites"}},
        "sources": {"sites": {"driver": "csv", "args": {"urlpath": "{{ CATALOG_DIR }}/sites.csv"},
                              "metadata": {"role": "sites", "site_id": "site"}}, **entries},
    }
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    spec = load_catalog(str(tmp_path / "catalog.yaml"))  # the build's own checks accept the metadata
    opened = intake.open_catalog(str(tmp_path / "catalog.yaml"))
    results = {}
    for name in entries:
        method, classes = gridded_options(spec.sources[name].gridded, name)
        variables = list(spec.sources[name].grid_variables)
        results[name] = extract_to_sites(opened[name].to_dask(), sites, method, variables, classes, name).compute()
    forcing = results["grid_forcing"]
    assert forcing["prcp"].dims == ("site", "time") and forcing.sizes["time"] == 366
    celsius = to_canonical(forcing["tmean"].values, "K", "grid_forcing tmean")
    check_plausible(celsius, "K", "grid_forcing tmean")
    assert 0.5 < float(forcing["prcp"].mean()) < 10 and (forcing["prcp"].values >= 0).all()
    assert np.isfinite(results["grid_elevation"]["elevation"].values).all()
    landcover = results["grid_landcover"]
    assert sorted(landcover.data_vars) == sorted(f"band_data_{c}" for c in LANDCOVER_CLASSES.values())
    # the catalog's store variables name each class fraction after the catalog variable
    assert {v.source_var for v in spec.sources["grid_landcover"].variables} == set(landcover.data_vars)
    total = sum(landcover[v] for v in landcover.data_vars)
    np.testing.assert_allclose(total.values, 1.0)


# --- a real dask.distributed LocalCluster (kept last: the fixture's client becomes the default) ---


@pytest.fixture(scope="module")
def two_worker_cluster():
    """One real LocalCluster (2 worker processes) shared by the tests below: starting one costs seconds."""
    with dask_client("local", n_workers=2) as client:
        yield client


def test_local_cluster_with_two_workers(tmp_path: Path, two_worker_cluster) -> None:
    sites = sites_table([("a", 40.1, -100.2), ("b", 41.3, -99.1)])
    world = write_gridded_world(sites, "2000-01-01", "2000-03-31", seed=3, out_dir=tmp_path, resolution=0.5)
    with_basins = sites.assign(geometry=list(basin_squares(sites).geometry))
    with dask.config.set(scheduler="synchronous"):
        expected = extract_to_sites(xr.open_dataset(world.forcing), with_basins, "polygon", ["prcp", "tmean"], None, "grid").compute()
    client = two_worker_cluster
    assert len(client.scheduler_info()["workers"]) == 2
    grid = xr.open_dataset(world.forcing, engine="h5netcdf", chunks={})
    lazy = extract_to_sites(grid, with_basins, "polygon", ["prcp", "tmean"], None, "grid")
    got = client.compute(lazy).result()
    xr.testing.assert_allclose(got, expected)
    assert got["tmean"].shape == (2, 91) and np.isfinite(got["tmean"].values).all()


# --- end to end: data build with gridded sources ------------------------------------------------


def test_build_store_with_gridded_forcing_and_land_cover(tmp_path: Path, two_worker_cluster) -> None:
    import yaml

    from stefaland.assemble import build_store
    from stefaland.store import open_store

    sites = sites_table([("g1", 40.1, -100.2), ("g2", 41.3, -99.1), ("g3", 42.0, -101.7)])
    world = write_gridded_world(sites, "2001-01-01", "2001-06-30", seed=11, out_dir=tmp_path / "grids", resolution=0.5)
    sites.to_csv(tmp_path / "sites.csv", index=False)
    write_basins(sites, tmp_path / "basins.gpkg", half_width=0.3)
    entries = gridded_catalog_entries(world, catalog_dir=tmp_path, basin_method="polygon")
    catalog = {
        "metadata": {"version": 1, "stefaland": {"name": "virtual_gridded", "sites": "sites"}},
        "sources": {
            "sites": {"driver": "csv", "args": {"urlpath": "{{ CATALOG_DIR }}/sites.csv"},
                      "metadata": {"role": "sites", "site_id": "site", "basins": {"urlpath": "basins.gpkg", "id_column": "site"}}},
            **entries,
        },
    }
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    address = two_worker_cluster.scheduler.address  # an existing scheduler, as --scheduler ADDRESS
    summary = build_store(str(tmp_path / "catalog.yaml"), str(tmp_path / "store.zarr"), shard_size=2, quiet=True,
                          scheduler=address)
    assert summary.n_sites == 3 and summary.n_time == 181
    store = open_store(str(tmp_path / "store.zarr"))
    # the store holds the basin means in canonical units: K → °C
    basins = sites.assign(geometry=list(basin_squares(sites, 0.3).geometry))
    with dask.config.set(scheduler="synchronous"):
        direct = extract_to_sites(xr.open_dataset(world.forcing), basins, "polygon", ["tmean", "prcp"], None, "direct").compute()
    stored_t = store["dynamic"].sel(dvar="grid_tmean").sel(site=["g1", "g2", "g3"]).values
    np.testing.assert_allclose(stored_t, direct["tmean"].values - 273.15, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(store["dynamic"].sel(dvar="grid_prcp").sel(site=["g1", "g2", "g3"]).values,
                               direct["prcp"].values, rtol=1e-5, atol=1e-5)
    assert str(store["dvar_units"].sel(dvar="grid_tmean").values) == "degC"
    classes = [f"landcover_{c}" for c in LANDCOVER_CLASSES.values()]
    fractions = store["static"].sel(svar=classes).values
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, rtol=1e-5)
    assert ((fractions >= 0) & (fractions <= 1)).all()
    assert np.isfinite(store["static"].sel(svar="grid_elev").values).all()
