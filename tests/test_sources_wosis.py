"""Soil-profile texture through `catalog/wosis.yaml`: the real Africa Soil Profiles horizons, reduced
to a 0-30 cm texture per profile, checked by hand and built into a store with a tiny forcing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from stefaland.build import build_store
from stefaland.catalog import load_catalog
from stefaland.errors import StefaLandError
from stefaland.sources.wosis import SoilProfilesSource
from stefaland.store import open_store
from stefaland.units import UNITS
from stefaland_cli.main import cli

# the small forcing zarrs written here keep their site ids as fixed-width unicode, which zarr 3 flags
pytestmark = [pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification"),
              pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")]

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "catalog" / "wosis.yaml"
CSV_PATH = "isric_afsp_gsif/afsp_texture_derived.csv"
_TYPICAL = {"temperature": 18.0, "water_flux": 3.0, "energy_flux": 200.0, "fraction": 0.5}


@pytest.fixture(scope="module")
def horizons(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / CSV_PATH, newline="") as handle:
        return list(csv.DictReader(handle))


def _profile_crossing_30cm(rows: list[dict[str, str]]) -> str:
    """A profile with at least two horizons in 0-30 cm, one of them reaching below 30 cm."""
    by_profile: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_profile.setdefault(row["SOURCEID"], []).append(row)
    for name, its in by_profile.items():
        inside = [r for r in its if float(r["UHDICM"]) < 30]
        if len(inside) >= 2 and any(float(r["LHDICM"]) > 30 for r in inside) and len({r["SNDPPT"] for r in inside}) > 1:
            return name
    raise AssertionError("no profile crosses 30 cm")


def test_topsoil_sand_equals_a_hand_computation(shared_data: Path, horizons: list[dict[str, str]]) -> None:
    profile = _profile_crossing_30cm(horizons)
    numerator = thickness = 0.0
    for row in horizons:
        if row["SOURCEID"] != profile:
            continue
        top, bottom = float(row["UHDICM"]), float(row["LHDICM"])
        cm_in_layer = max(0.0, min(bottom, 30.0) - max(top, 0.0))
        numerator += float(row["SNDPPT"]) * cm_in_layer
        thickness += cm_in_layer
    table = SoilProfilesSource(str(shared_data / CSV_PATH)).read().set_index("SOURCEID")
    assert table.loc[profile, "sand"] == pytest.approx(numerator / thickness, rel=1e-12)
    assert table.loc[profile, "layer_thickness_cm"] == pytest.approx(30.0)
    first = next(r for r in horizons if r["SOURCEID"] == profile)
    assert table.loc[profile, "lat"] == pytest.approx(float(first["LATWGS84"]))
    assert table.loc[profile, "lon"] == pytest.approx(float(first["LONWGS84"]))
    deep_only = {r["SOURCEID"] for r in horizons} - {r["SOURCEID"] for r in horizons if float(r["UHDICM"]) < 30}
    assert deep_only and not deep_only & set(table.index)  # profiles sampled only below 30 cm have no topsoil


def _tmp_csv(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "horizons.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_contradicting_coordinates_name_the_profile(horizons: list[dict[str, str]], tmp_path: Path) -> None:
    profile = _profile_crossing_30cm(horizons)
    rows = [dict(r) for r in horizons if r["SOURCEID"] == profile] + [dict(r) for r in horizons[:20] if r["SOURCEID"] != profile]
    rows[1]["LATWGS84"] = str(float(rows[1]["LATWGS84"]) + 0.5)
    path = _tmp_csv(tmp_path, rows)
    with pytest.raises(StefaLandError, match=f"profile {profile} .* contradicting coordinates") as err:
        SoilProfilesSource(str(path)).read()
    assert "\n" not in str(err.value)
    first = SoilProfilesSource(str(path), coordinates="first").read().set_index("SOURCEID")
    assert first.loc[profile, "lat"] == pytest.approx(float(rows[0]["LATWGS84"]))  # the documented rule


def test_build_stops_on_contradicting_coordinates_with_one_line(horizons: list[dict[str, str]], tmp_path: Path) -> None:
    profile = _profile_crossing_30cm(horizons)
    rows = [dict(r) for r in horizons if r["SOURCEID"] == profile]
    rows[-1]["LONWGS84"] = str(float(rows[-1]["LONWGS84"]) - 1.0)
    env = {"SOIL_PROFILES_CSV": str(_tmp_csv(tmp_path, rows)), "STEFALAND_WOSIS_FORCING_ROOT": str(tmp_path)}
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(CATALOG), "--out", str(tmp_path / "s.zarr"),
                                      "--quiet", "--start", "2000-01-01", "--end", "2000-01-31"], env=env)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: source sites: profile {profile} ") and "contradicting coordinates" in lines[0]
    assert not (tmp_path / "s.zarr").exists()


def test_non_numeric_depth_is_one_line_naming_profile(horizons: list[dict[str, str]], tmp_path: Path) -> None:
    rows = [dict(r) for r in horizons[:10]]
    rows[3]["LHDICM"] = "deep"
    with pytest.raises(StefaLandError, match=rf"line 5 \(profile {rows[3]['SOURCEID']}\): column LHDICM .*'deep'"):
        SoilProfilesSource(str(_tmp_csv(tmp_path, rows))).read()


def _write_forcing(catalog: Path, root: Path, sites: list[str], time: pd.DatetimeIndex) -> None:
    """Tiny forcing zarrs for a handful of profile ids, holding every variable the catalog declares."""
    spec = load_catalog(str(catalog))
    rng = np.random.default_rng(1)
    for name in ("mswx", "mswep"):
        data = {}
        for variable in spec.sources[name].variables:
            unit = UNITS[variable.units]
            canonical = _TYPICAL[unit.quantity] * (1 + 0.05 * rng.random((len(sites), len(time))))
            data[variable.source_var] = (("site", "time"), (canonical - unit.offset) / unit.scale)
        xr.Dataset(data, coords={"site": sites, "time": time}).to_zarr(root / f"{name}_profiles_daily.zarr", mode="w")


def test_build_with_texture_and_a_tiny_forcing(shared_data: Path, horizons: list[dict[str, str]],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOIL_PROFILES_CSV", str(shared_data / CSV_PATH))
    monkeypatch.setenv("STEFALAND_WOSIS_FORCING_ROOT", str(tmp_path))
    profiles = sorted({r["SOURCEID"] for r in horizons[::5000]} | {_profile_crossing_30cm(horizons)})
    time = pd.date_range("2000-01-01", "2000-03-31")
    _write_forcing(CATALOG, tmp_path, profiles, time)
    out = tmp_path / "wosis.zarr"
    build_store(str(CATALOG), str(out), shard_size=4, start="2000-01-01", end="2000-03-31", quiet=True)
    ds = open_store(str(out))
    assert sorted(ds["site"].values.astype(str)) == profiles
    texture = ds["static"].sel(svar=["sand", "silt", "clay"]).values.astype(np.float64)
    np.testing.assert_allclose(texture.sum(axis=1), 1.0, atol=1e-6)  # normalise: true, % → fraction
    raw = SoilProfilesSource(str(shared_data / CSV_PATH)).read().set_index("SOURCEID").loc[profiles]
    expected_sand = raw["sand"] / raw[["sand", "silt", "clay"]].sum(axis=1)
    np.testing.assert_allclose(ds["static"].sel(svar="sand").values, expected_sand.to_numpy(), rtol=1e-6)
    assert list(ds["svar_group"].values.astype(str)) == ["soil", "soil", "soil"]
    np.testing.assert_allclose(ds["lat"].values, raw["lat"].to_numpy())
