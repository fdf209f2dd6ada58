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
    for name in ("tmax", "tmin", "swd", "relhum", "pet", "precipitation", "ndvi", "sand", "silt", "clay",
                 "elevation", "slope", "aspect", "soil_thickness", "carbonate_fraction", "porosity",
                 "permeability", "population_density", "gdp_per_capita", "hdi", "intact_forest_fraction", "lccs_forest_needleleaf"):
        assert name in variables, name
    groups = {group for _, group in variables.values()}
    assert groups == {"climate", "terrain", "soil", "geology", "vegetation", "human"}
    assert all(s.driver in ("zarr", "netcdf", "csv") for s in spec.sources.values())
    assert spec.open("mswx").reader.data.url == "s3://bucket/prefix/mswx/daily.zarr"  # root from the environment
