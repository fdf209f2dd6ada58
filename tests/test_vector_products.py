"""Polygon products (GLiM, GLHYMPS, Intact Forest Landscapes) → per-site static values.

Real vector files are written to tmp_path (GeoPackage, shapefile in EPSG:6933, zipped shapefile,
a shapefile on an fsspec memory filesystem). The polygons are lon/lat rectangles sharing one
latitude band, so in the cylindrical equal-area CRS the areas are proportional to the longitude
widths and every expected basin value below is computed by hand from those widths.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import fsspec
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from shapely.geometry import box

from stefaland.catalog import load_catalog
from stefaland.errors import StefaLandError
from stefaland.gridded.vector import extract_vector, vector_options
from stefaland.products.vector import VectorSource

LITHOLOGY = {"sc": "carbonate sedimentary rocks", "su": "unconsolidated sediments"}  # "mt" left undeclared


def lithology_file(path: Path) -> Path:
    """GLiM-like GeoPackage: sc on [0,2], su on [2,4], mt (undeclared) on [4,6]; a second sc overlaps the first."""
    frame = gpd.GeoDataFrame(
        {"xx": ["sc", "su", "mt", "sc"], "IDENTITY_": [1, 2, 3, 4]},
        geometry=[box(0, 0, 2, 2), box(2, 0, 4, 2), box(4, 0, 6, 2), box(0, 0, 1, 2)], crs="EPSG:4326",
    )
    frame.to_file(path, layer="glim", driver="GPKG")
    return path


def glhymps_file(path: Path) -> Path:
    """GLHYMPS-like shapefile in EPSG:6933 (×100 integers); a third polygon overlaps the first."""
    frame = gpd.GeoDataFrame(
        {"logK_Ice_x": [-1300, -1500, -1000], "Porosity_x": [10, 20, 30], "OBJECTID": [1, 2, 3]},
        geometry=[box(0, 0, 2, 2), box(2, 0, 4, 2), box(0, 0, 1, 2)], crs="EPSG:4326",
    )
    frame.to_crs("EPSG:6933").to_file(path)
    return path


def forest_frame() -> gpd.GeoDataFrame:
    """IFL-like polygons: [0,1] and [0.5,1.5] overlap (covered once: [0,1.5])."""
    return gpd.GeoDataFrame({"IFL_ID": ["EUR_1", "EUR_2"]}, geometry=[box(0, 0, 1, 1), box(0.5, 0, 1.5, 1)], crs="EPSG:4326")


def sites(rows: list[tuple[str, float, float]], basins: list | None = None) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["site", "lat", "lon"])
    return table.assign(geometry=basins) if basins is not None else table


def options(**block) -> dict:
    return vector_options(block, "test")


# --- the driver ---------------------------------------------------------------------------------


def test_reads_only_the_named_fields_and_reprojects_to_lonlat(tmp_path: Path) -> None:
    frame = VectorSource(str(glhymps_file(tmp_path / "glhymps.shp")), columns=["logK_Ice_x"]).read()
    assert list(frame.columns) == ["logK_Ice_x", "geometry"]
    assert frame.crs.to_epsg() == 4326
    np.testing.assert_allclose(frame.total_bounds, [0, 0, 4, 2], atol=1e-9)
    glim = VectorSource(str(lithology_file(tmp_path / "glim.gpkg")), layer="glim", columns=["xx"]).read()
    assert list(glim["xx"]) == ["sc", "su", "mt", "sc"]


def test_zipped_shapefile_and_object_storage(tmp_path: Path) -> None:
    forest_frame().to_file(tmp_path / "ifl_2016.shp")
    with zipfile.ZipFile(tmp_path / "ifl_2016.zip", "w") as archive:
        for part in tmp_path.glob("ifl_2016.*"):
            if part.suffix != ".zip":
                archive.write(part, part.name)
    assert list(VectorSource(str(tmp_path / "ifl_2016.zip")).read()["IFL_ID"]) == ["EUR_1", "EUR_2"]
    # on object storage a shapefile is fetched with its sidecars (attributes, CRS) and opened from memory
    memory = fsspec.filesystem("memory")
    for part in tmp_path.glob("ifl_2016.*"):
        if part.suffix != ".zip":
            memory.pipe(f"/vector-test/{part.name}", part.read_bytes())
    try:
        remote = VectorSource("memory://vector-test/ifl_2016.shp", columns=["IFL_ID"]).read()
        assert remote.crs.to_epsg() == 4326 and list(remote["IFL_ID"]) == ["EUR_1", "EUR_2"]
        with pytest.raises(StefaLandError, match=r"memory://vector-test/nothing.shp: file not found"):
            VectorSource("memory://vector-test/nothing.shp").read()
    finally:
        memory.rm("/vector-test", recursive=True)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_file_without_crs_is_taken_as_lonlat_with_a_warning(tmp_path: Path) -> None:
    forest_frame().set_crs(None, allow_override=True).to_file(tmp_path / "nocrs.shp")
    with pytest.warns(UserWarning, match=r"nocrs.shp declares no CRS; assuming EPSG:4326"):
        frame = VectorSource(str(tmp_path / "nocrs.shp")).read()
    assert frame.crs.to_epsg() == 4326


def test_driver_errors_name_the_file(tmp_path: Path) -> None:
    path = lithology_file(tmp_path / "glim.gpkg")
    with pytest.raises(StefaLandError, match=r"vector file .*glim.gpkg: no field 'Litho' \(fields: xx, IDENTITY_\)"):
        VectorSource(str(path), columns=["Litho"]).read()
    with pytest.raises(StefaLandError, match=r"vector file .*missing.shp: file not found"):
        VectorSource(str(tmp_path / "missing.shp")).read()
    (tmp_path / "broken.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(StefaLandError, match=r"vector file .*broken.gpkg: cannot read it") as caught:
        VectorSource(str(tmp_path / "broken.gpkg")).read()
    assert "\n" not in str(caught.value)
    pd.DataFrame({"xx": ["sc"], "value": [1]}).to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(StefaLandError, match=r"vector file .*table.csv: has no geometry"):
        VectorSource(str(tmp_path / "table.csv")).read()


# --- catalog block ------------------------------------------------------------------------------


def test_vector_block_defaults_and_refusals() -> None:
    defaults = options()
    assert {k: v for k, v in defaults.items() if k != "outside"} == {"method": "point", "categorical": False,
                                                                     "classes": None, "presence": False}
    assert math.isnan(options()["outside"]) and options(presence=True)["outside"] == 0.0
    assert math.isnan(options(presence=True, outside="nan")["outside"])
    parsed = options(method="polygon", categorical=True, classes={"sc": "Carbonate sedimentary rocks", 10: "x"})
    assert parsed["classes"] == {"sc": "carbonate_sedimentary_rocks", 10.0: "x"}
    for block, message in [
        ({"metod": "point"}, r"source test: unknown key vector.metod"),
        ({"method": "nearest"}, r"source test: unknown vector method 'nearest'"),
        ({"categorical": True}, r"source test: a categorical vector source needs vector.classes"),
        ({"classes": {"sc": "carbonate"}}, r"source test: vector.classes given but vector.categorical is not true"),
        ({"outside": 5}, r"source test: vector.outside must be nan or 0"),
        ({"presence": "yes"}, r"source test: vector.presence must be true or false"),
        ({"presence": True, "categorical": True, "classes": {"a": "b"}}, r"exclude each other"),
        ({"categorical": True, "classes": {"sc": "a", "su": "A"}}, r"class name 'a' is used twice"),
    ]:
        with pytest.raises(StefaLandError, match=message):
            vector_options(block, "test")


# --- points -------------------------------------------------------------------------------------


def test_points_take_the_first_containing_feature(tmp_path: Path) -> None:
    frame = VectorSource(str(glhymps_file(tmp_path / "glhymps.shp"))).read()
    table = sites([("in_first", 1.0, 0.5), ("in_second", 1.0, 3.0), ("nowhere", 10.0, 10.0), ("east360", 1.0, 361.5)])
    out = extract_vector(frame, table, options(), ["logK_Ice_x", "Porosity_x"], "glhymps")
    assert out["logK_Ice_x"].dims == ("site",) and list(out["site"].values) == ["in_first", "in_second", "nowhere", "east360"]
    # (0.5, 1) lies in polygons 1 and 3: the first in file order wins; lon 361.5 is lon 1.5
    np.testing.assert_array_equal(out["logK_Ice_x"].values, [-1300, -1500, np.nan, -1300])
    np.testing.assert_array_equal(out["Porosity_x"].values, [10, 20, np.nan, 10])
    zero = extract_vector(frame, table, options(outside=0), ["logK_Ice_x"], "glhymps")
    assert zero["logK_Ice_x"].values[2] == 0.0


def test_point_classes_and_presence(tmp_path: Path) -> None:
    glim = VectorSource(str(lithology_file(tmp_path / "glim.gpkg")), columns=["xx"]).read()
    table = sites([("carbonate", 1.0, 1.5), ("sediment", 1.0, 3.0), ("metamorphic", 1.0, 5.0), ("sea", -5.0, -5.0)])
    classes = options(categorical=True, classes=LITHOLOGY)
    out = extract_vector(glim, table, classes, ["xx"], "glim")
    assert sorted(out.data_vars) == ["xx_carbonate_sedimentary_rocks", "xx_unconsolidated_sediments"]
    np.testing.assert_array_equal(out["xx_carbonate_sedimentary_rocks"].values, [1, 0, 0, np.nan])
    np.testing.assert_array_equal(out["xx_unconsolidated_sediments"].values, [0, 1, 0, np.nan])
    assert out["xx_unconsolidated_sediments"].attrs["units"] == "fraction"
    zero = extract_vector(glim, table, options(categorical=True, classes=LITHOLOGY, outside=0), ["xx"], "glim")
    assert zero["xx_carbonate_sedimentary_rocks"].values[3] == 0.0
    forest = extract_vector(forest_frame(), sites([("in", 0.5, 0.7), ("out", 3.0, 3.0)]), options(presence=True), ["IFL_ID"], "ifl")
    np.testing.assert_array_equal(forest["IFL_ID"].values, [1.0, 0.0])
    gaps = extract_vector(forest_frame(), sites([("in", 0.5, 0.7), ("out", 3.0, 3.0)]),
                          options(presence=True, outside="nan"), ["IFL_ID"], "ifl")
    np.testing.assert_array_equal(gaps["IFL_ID"].values, [1.0, np.nan])


# --- basins -------------------------------------------------------------------------------------


def test_basin_means_and_fractions_by_hand(tmp_path: Path) -> None:
    basins = [box(1, 0.5, 4, 1.5), box(3, 0.5, 6, 1.5), box(10, 10, 11, 11)]
    table = sites([("a", 1, 2.5), ("b", 1, 4.5), ("c", 10.5, 10.5)], basins)
    glhymps = VectorSource(str(glhymps_file(tmp_path / "glhymps.shp"))).read()
    out = extract_vector(glhymps, table, options(method="polygon"), ["logK_Ice_x", "Porosity_x"], "glhymps")
    # a: 1 degree of polygon 1 (-1300), 2 of polygon 2 (-1500); polygon 3 only touches its edge
    # b: only [3,4] is covered: the mean over the covered part is polygon 2's value, undiluted
    np.testing.assert_allclose(out["logK_Ice_x"].values[:2], [(-1300 + 2 * -1500) / 3, -1500], rtol=1e-9)
    np.testing.assert_allclose(out["Porosity_x"].values[:2], [(10 + 2 * 20) / 3, 20], rtol=1e-9)
    assert np.isnan(out["logK_Ice_x"].values[2])
    assert extract_vector(glhymps, table, options(method="polygon", outside=0), ["Porosity_x"], "g")["Porosity_x"].values[2] == 0

    glim = VectorSource(str(lithology_file(tmp_path / "glim.gpkg")), columns=["xx"]).read()
    lith_basins = [box(0.5, 0.5, 4.5, 1.5), box(5, 0, 8, 2), box(10, 10, 11, 11)]
    lith = extract_vector(glim, sites([("a", 1, 2), ("b", 1, 6), ("c", 10.5, 10.5)], lith_basins),
                          options(method="polygon", categorical=True, classes=LITHOLOGY), ["xx"], "glim")
    # a (width 4): sc [0.5,2] once although two sc polygons overlap there = 1.5/4; su [2,4] = 2/4;
    # mt [4,4.5] is undeclared but stays in the denominator. b (width 3): mt [5,6], the rest uncovered.
    np.testing.assert_allclose(lith["xx_carbonate_sedimentary_rocks"].values[:2], [1.5 / 4, 0.0], atol=1e-12)
    np.testing.assert_allclose(lith["xx_unconsolidated_sediments"].values[:2], [2 / 4, 0.0], atol=1e-12)
    assert np.isnan(lith["xx_carbonate_sedimentary_rocks"].values[2])

    forest = extract_vector(forest_frame(), sites([("half", 0.5, 1.5), ("none", 5.5, 5.5)], [box(0, 0, 3, 1), box(5, 5, 6, 6)]),
                            options(method="polygon", presence=True), ["IFL_ID"], "ifl")
    np.testing.assert_allclose(forest["IFL_ID"].values, [1.5 / 3, 0.0], atol=1e-12)  # overlap counted once


def test_extraction_errors_name_source_and_field(tmp_path: Path) -> None:
    glim = VectorSource(str(lithology_file(tmp_path / "glim.gpkg"))).read()
    with pytest.raises(StefaLandError, match=r"source glim: field 'Litho' is not in the polygons \(fields: xx, IDENTITY_\)"):
        extract_vector(glim, sites([("a", 1, 1)]), options(), ["Litho"], "glim")
    with pytest.raises(StefaLandError, match=r"source glim: field xx holds a non-numeric value 'sc'"):
        extract_vector(glim, sites([("a", 1, 1)]), options(), ["xx"], "glim")
    with pytest.raises(StefaLandError, match=r"source glim: vector method polygon needs basin polygons"):
        extract_vector(glim, sites([("a", 1, 1)]), options(method="polygon"), ["IDENTITY_"], "glim")
    with pytest.raises(StefaLandError, match=r"source glim: site b has no basin geometry"):
        extract_vector(glim, sites([("a", 1, 1), ("b", 1, 1)], [box(0, 0, 1, 1), None]), options(method="polygon"),
                       ["IDENTITY_"], "glim")


def test_catalog_refuses_vector_with_gridded_or_a_time_role(tmp_path: Path) -> None:
    base = {"sites": {"driver": "csv", "args": {"urlpath": "sites.csv"}, "metadata": {"role": "sites"}}}
    for entry, message in [
        ({"metadata": {"role": "static", "gridded": {}, "vector": {}, "variables": {"v": {"units": "1"}}}},
         r"catalog source glim: metadata has both gridded and vector"),
        ({"metadata": {"role": "dynamic", "vector": {}, "variables": {"v": {"units": "1"}}}},
         r"catalog source glim: metadata.vector gives static values; its role must be static"),
        ({"metadata": {"role": "static", "vector": {"method": "polygon", "classes": {"sc": "c"}}, "variables": {"v": {"units": "1"}}}},
         r"source glim: vector.classes given but vector.categorical is not true"),
    ]:
        (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"sources": {**base, "glim": {"driver": "stefaland_vector", **entry}}}))
        with pytest.raises(StefaLandError, match=message):
            load_catalog(str(tmp_path / "catalog.yaml"))


# --- end to end: data build ---------------------------------------------------------------------


def test_build_store_with_polygon_products(tmp_path: Path) -> None:
    from stefaland.assemble import build_store
    from stefaland.store import open_store

    table = sites([("a", 1.0, 2.5), ("b", 1.0, 4.5), ("c", 0.5, 0.7)])
    table.to_csv(tmp_path / "sites.csv", index=False)
    basins = [box(1.5, 0.5, 4, 1.5), box(3, 0.5, 6, 1.5), box(0, 0, 3, 1)]
    gpd.GeoDataFrame({"site": table["site"]}, geometry=basins, crs="EPSG:4326").to_file(tmp_path / "basins.gpkg")
    time = pd.date_range("2001-01-01", periods=10, freq="D")
    xr.Dataset({"prcp": (("site", "time"), np.ones((3, 10)))}, coords={"site": table["site"].to_numpy(), "time": time}
               ).to_netcdf(tmp_path / "forcing.nc", engine="h5netcdf")
    lithology_file(tmp_path / "glim.gpkg")
    glhymps_file(tmp_path / "glhymps.shp")
    forest_frame().to_file(tmp_path / "ifl_2016.shp")
    catalog = {
        "metadata": {"version": 1, "stefaland": {"name": "polygons", "sites": "sites"}},
        "sources": {
            "sites": {"driver": "csv", "args": {"urlpath": "{{ CATALOG_DIR }}/sites.csv"},
                      "metadata": {"role": "sites", "site_id": "site", "basins": {"urlpath": "basins.gpkg", "id_column": "site"}}},
            "forcing": {"driver": "netcdf", "args": {"urlpath": "{{ CATALOG_DIR }}/forcing.nc", "xarray_kwargs": {"engine": "h5netcdf"}},
                        "metadata": {"role": "dynamic", "site_id": "site",
                                     "variables": {"prcp": {"units": "mm/day", "group": "climate"}}}},
            "glim": {"driver": "stefaland_vector", "args": {"urlpath": "{{ CATALOG_DIR }}/glim.gpkg", "layer": "glim", "columns": ["xx"]},
                     "metadata": {"role": "static", "vector": {"method": "polygon", "categorical": True,
                                                               "classes": {"sc": "carbonate", "su": "unconsolidated"}},
                                  "variables": {"lithology": {"from": "xx", "units": "fraction", "group": "geology"}}}},
            "glhymps": {"driver": "stefaland_vector",
                        "args": {"urlpath": "{{ CATALOG_DIR }}/glhymps.shp", "columns": ["logK_Ice_x", "Porosity_x"]},
                        "metadata": {"role": "static", "vector": {"method": "point"},
                                     "variables": {
                                         "permeability": {"from": "logK_Ice_x", "units": "log10(m2)", "scale": 0.01,
                                                          "group": "geology"},
                                         "porosity": {"from": "Porosity_x", "units": "fraction", "scale": 0.01, "group": "geology"},
                                     }}},
            "ifl": {"driver": "stefaland_vector", "args": {"urlpath": "{{ CATALOG_DIR }}/ifl_2016.shp", "columns": ["IFL_ID"]},
                    "metadata": {"role": "static", "vector": {"method": "polygon", "presence": True},
                                 "variables": {"intact_forest": {"from": "IFL_ID", "units": "fraction", "group": "vegetation"}}}},
        },
    }
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    summary = build_store(str(tmp_path / "catalog.yaml"), str(tmp_path / "store.zarr"), shard_size=2, quiet=True, scheduler="sync")
    assert summary.n_sites == 3
    static = open_store(str(tmp_path / "store.zarr"))["static"].sel(site=["a", "b", "c"])
    value = lambda name: static.sel(svar=name).values  # noqa: E731
    # GLHYMPS ×100 integers × scale 0.01: a at lon 2.5 (polygon 2), b at lon 4.5 (none), c at lon 0.7 (polygon 1 first)
    np.testing.assert_allclose(value("permeability"), [-15.0, np.nan, -13.0], rtol=1e-6)
    np.testing.assert_allclose(value("porosity"), [0.2, np.nan, 0.1], rtol=1e-6)
    # GLiM class fractions of each basin: a = lon 1.5..4: sc 0.5/2.5, su 2/2.5; b = 3..6: su 1/3 (mt undeclared);
    # c = 0..3: sc 2/3, su 1/3
    np.testing.assert_allclose(value("lithology_carbonate"), [0.2, 0.0, 2 / 3], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(value("lithology_unconsolidated"), [0.8, 1 / 3, 1 / 3], rtol=1e-5)
    # intact forest covers [0, 1.5] × [0, 1]: none of a (it touches a's edge), none of b, half of c's [0,3] × [0,1]
    np.testing.assert_allclose(value("intact_forest"), [0.0, 0.0, 0.5], rtol=1e-5)
