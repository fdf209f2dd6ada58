"""Every bad input stops `data build` with one line naming the source, site or variable at fault,
and never leaves a store that opens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SOURCES = "forcing_daymet,attributes,streamflow"


@pytest.fixture()
def camels_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A private copy of the 4 real test basins that a test may break (in tmp, never in the repo)."""
    root = tmp_path / "camels"
    shutil.copytree(shared_data / "camels_us", root)
    return root


def _catalog(root: Path, edit=None) -> Path:
    text = (REPO / "catalog" / "camels.yaml").read_text().replace('"env(CAMELS_ROOT)"', f'"{root}"')
    if edit:
        text = edit(text)
    path = root / "catalog.yaml"
    path.write_text(text)
    return path


def _build(catalog: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["data", "build", "--catalog", str(catalog), "--out", str(out), "--quiet", "--sources", SOURCES,
              "--start", "2000-01-01", "--end", "2002-12-31"],
    )
    return result.exit_code, result.output


def _assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_unbroken_copy_builds(camels_copy: Path, tmp_path: Path) -> None:
    code, output = _build(_catalog(camels_copy), tmp_path / "ok.zarr")
    assert code == 0, output
    assert open_store(str(tmp_path / "ok.zarr")).sizes["site"] == 4


def test_missing_file(camels_copy: Path, tmp_path: Path) -> None:
    (camels_copy / "camels_attributes_v2.0" / "camels_geol.txt").unlink()
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source attributes", "file not found", "camels_geol.txt")
    assert not (tmp_path / "s.zarr").exists()


def test_source_without_site_id(camels_copy: Path, tmp_path: Path) -> None:
    catalog = _catalog(camels_copy, lambda t: t.replace("site_id: gauge_id\n      variables:", "site_id: basin\n      variables:"))
    code, output = _build(catalog, tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source attributes", "no site id column 'basin'")


def test_file_without_site_id_in_its_name(camels_copy: Path, tmp_path: Path) -> None:
    folder = camels_copy / "basin_mean_forcing" / "daymet"
    (folder / "01022500_lump_cida_forcing_leap.txt").rename(folder / "basin_lump_cida_forcing_leap.txt")
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source forcing_daymet", "basin_lump_cida_forcing_leap.txt", "no site id")


def test_variable_declared_in_the_wrong_unit(camels_copy: Path, tmp_path: Path) -> None:
    catalog = _catalog(camels_copy, lambda t: t.replace("prcp: {units: mm/day", "prcp: {units: kg m-2 s-1", 1))
    code, output = _build(catalog, tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source forcing_daymet variable prcp", "'kg m-2 s-1'", "'mm/day'")


def test_implausible_values_for_the_declared_unit(camels_copy: Path, tmp_path: Path) -> None:
    # an attribute table has no unit of its own: a percent declared as a fraction is caught by range
    catalog = _catalog(camels_copy, lambda t: t.replace('sand_frac: {units: "%"', "sand_frac: {units: fraction"))
    code, output = _build(catalog, tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source attributes variable sand_frac", "plausible")


def test_unknown_unit(camels_copy: Path, tmp_path: Path) -> None:
    catalog = _catalog(camels_copy, lambda t: t.replace("vp: {units: Pa", "vp: {units: furlongs", 1))
    code, output = _build(catalog, tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "variable vp", "unknown unit 'furlongs'")


def test_duplicated_site_ids(camels_copy: Path, tmp_path: Path) -> None:
    table = camels_copy / "camels_attributes_v2.0" / "camels_clim.txt"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines + [lines[5]]) + "\n")
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source attributes", "camels_clim.txt", f"duplicated site id {lines[5].split(';')[0]}")


def test_unparseable_date(camels_copy: Path, tmp_path: Path) -> None:
    path = camels_copy / "basin_mean_forcing" / "daymet" / "02064000_lump_cida_forcing_leap.txt"
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace("2000 01 07", "2000 13 07", 1)
    path.write_text("\n".join(lines) + "\n")
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source forcing_daymet", "02064000_lump_cida_forcing_leap.txt", "line 11",
                           "unparseable date 2000-13-7")


def test_all_nan_site(camels_copy: Path, tmp_path: Path) -> None:
    path = camels_copy / "basin_mean_forcing" / "daymet" / "03015500_lump_cida_forcing_leap.txt"
    lines = path.read_text().splitlines()
    header = lines[3].split()
    column = header.index("prcp(mm/day)")
    for i in range(4, len(lines)):
        cells = lines[i].split()
        cells[column] = "-999"
        lines[i] = " ".join(cells)
    path.write_text("\n".join(lines) + "\n")
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    _assert_one_line_error(code, output, "source forcing_daymet", "site 03015500", "variable prcp", "no valid value")
    with pytest.raises(StefaLandError, match="incomplete"):
        open_store(str(tmp_path / "s.zarr"))


def test_nan_gaps_are_kept_not_zero_filled(camels_copy: Path, tmp_path: Path) -> None:
    path = camels_copy / "basin_mean_forcing" / "daymet" / "01547700_lump_cida_forcing_leap.txt"
    lines = path.read_text().splitlines()
    column = lines[3].split().index("tmax(C)")
    cells = lines[4 + 40].split()
    cells[column] = "-999"
    lines[4 + 40] = " ".join(cells)
    path.write_text("\n".join(lines) + "\n")
    code, output = _build(_catalog(camels_copy), tmp_path / "s.zarr")
    assert code == 0, output
    tmax = open_store(str(tmp_path / "s.zarr"))["dynamic"].sel(site="01547700", dvar="tmax")
    assert bool(tmax.isnull().sel(time="2000-02-10")) and int(tmax.isnull().sum()) == 1


def test_catalog_yaml_error(camels_copy: Path, tmp_path: Path) -> None:
    catalog = _catalog(camels_copy, lambda t: t.replace("  streamflow:\n", "  streamflow:\n   bad: [unclosed\n", 1))
    code, output = _build(catalog, tmp_path / "s.zarr")
    _assert_one_line_error(code, output, f"catalog {catalog}", "line", "YAML error")
