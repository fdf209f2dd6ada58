"""Every catalog shipped in catalog/ parses, names known units and groups, and picks a site table."""

from __future__ import annotations

from pathlib import Path

import pytest

from stefaland.catalog import load_catalog
from stefaland.units import CANONICAL, lookup

CATALOGS = sorted((Path(__file__).resolve().parents[1] / "catalog").glob("*.yaml"))


@pytest.mark.parametrize("path", CATALOGS, ids=[p.name for p in CATALOGS])
def test_catalog_is_well_formed(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAMELS_ROOT", "STEFALAND_GLOBAL_ROOT", "CARAVAN_ROOT", "ISMN_ROOT", "WOSIS_ROOT"):
        monkeypatch.setenv(name, "s3://example-bucket/prefix")
    spec = load_catalog(str(path))
    assert spec.sources[spec.sites_source].role == "sites"
    assert spec.by_role("dynamic"), "a catalog needs at least one forcing source"
    for source in spec.sources.values():
        for variable in source.variables:
            assert lookup(variable.units, variable.name).quantity in CANONICAL
    spec.select(None)  # the default selection has no clashing variable names


def test_global_catalog_covers_table_c1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEFALAND_GLOBAL_ROOT", "s3://bucket/prefix")
    spec = load_catalog(str(Path(__file__).resolve().parents[1] / "catalog" / "global.yaml"))
    variables = {v.name: (s.name, v.group) for s in spec.sources.values() for v in s.variables}
    for name in ("tmax", "tmin", "swd", "relhum", "precipitation", "ndvi", "sand", "silt", "clay",
                 "elevation", "slope", "aspect", "soil_thickness", "lithology_carbonate", "porosity",
                 "permeability", "population_density", "gdp_per_capita", "hdi", "intact_forest_fraction", "lccs_forest_needleleaf"):
        assert name in variables, name
    groups = {group for _, group in variables.values()}
    assert groups == {"climate", "terrain", "soil", "geology", "vegetation", "human"}
    # every product is read in its provider's format: no source expects a pre-converted zarr
    assert {s.driver for s in spec.sources.values()} == {
        "csv", "stefaland_netcdf", "stefaland_raster", "stefaland_terrain", "stefaland_hwsd", "stefaland_vector"}
    assert spec.sources["glhymps"].vector is not None and spec.sources["mswx"].gridded is not None
    # TerraMind's patches (768 columns only terramind_resconn reads) are chosen explicitly
    patches = {"terramind_dem", "terramind_lulc", "terramind_ndvi"}
    assert set(spec.default_sources) == set(spec.sources) - {"sites"} - patches
    assert all((spec.sources[name].gridded or {}).get("method") == "patch" for name in patches)


def test_include_borrows_sources_from_another_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ISMN/WoSIS catalogs take the global products from global.yaml instead of copying them."""
    import shutil

    from stefaland.errors import StefaLandError

    shutil.copy(Path(__file__).resolve().parents[1] / "catalog" / "global.yaml", tmp_path / "global.yaml")
    (tmp_path / "sites.csv").write_text("site,lat,lon\na,1,2\n")
    body = """
metadata:
  stefaland:
    include: [{catalog: global.yaml, sources: [mswx, gmted]}]
sources:
  sites:
    driver: csv
    args: {urlpath: "{{ CATALOG_DIR }}/sites.csv"}
    metadata: {role: sites, site_id: site}
"""
    (tmp_path / "stations.yaml").write_text(body)
    monkeypatch.delenv("STEFALAND_GLOBAL_ROOT", raising=False)
    spec = load_catalog(str(tmp_path / "stations.yaml"))
    assert set(spec.sources) == {"sites", "mswx", "gmted"} and spec.sources["mswx"].driver == "stefaland_netcdf"
    with pytest.raises(StefaLandError, match="STEFALAND_GLOBAL_ROOT is not set"):
        spec.refuse_unset(["mswx"])  # the included catalog's parameters stay its own
    monkeypatch.setenv("STEFALAND_GLOBAL_ROOT", "/products")
    spec = load_catalog(str(tmp_path / "stations.yaml"))
    assert spec.open("gmted").urlpath == "/products/GMTED2010/mn30_grd.tif"
    before = spec.sha256
    with open(tmp_path / "global.yaml", "a") as handle:
        handle.write("\n# edited\n")
    assert load_catalog(str(tmp_path / "stations.yaml")).sha256 != before  # a changed include is a changed catalog
    (tmp_path / "bad.yaml").write_text(body.replace("[mswx, gmted]", "[mswx, nope]"))
    with pytest.raises(StefaLandError, match="include names source nope"):
        load_catalog(str(tmp_path / "bad.yaml"))
    (tmp_path / "clash.yaml").write_text(body.replace("[mswx, gmted]", "[sites]"))
    with pytest.raises(StefaLandError, match="both declared here and included"):
        load_catalog(str(tmp_path / "clash.yaml"))
