"""Soil-profile texture through `catalog/wosis.yaml`: the real Africa Soil Profiles horizons, reduced
to a 0-30 cm texture per profile, checked by hand; the store built from it with the products at the
profiles is tests/test_ismn_wosis_end_to_end.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.sources.wosis import SoilProfilesSource
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "catalog" / "wosis.yaml"
CSV_PATH = "isric_afsp_gsif/afsp_texture_derived.csv"


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
    env = {"SOIL_PROFILES_CSV": str(_tmp_csv(tmp_path, rows)), "STEFALAND_GLOBAL_ROOT": str(tmp_path)}
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
