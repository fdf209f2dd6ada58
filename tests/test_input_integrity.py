"""Inputs that are wrong without looking wrong: ±inf values, tables keyed so they join to nothing,
and shards that hold only ungauged sites (the ``--shard-size 1`` case).

Each case runs a real ``data build`` (Click CLI) on the virtual world or on a copy of the real
CAMELS sample in which only the damaged file is a private copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
CAMELS_CATALOG = REPO / "catalog" / "camels.yaml"
SOIL = "camels_attributes_v2.0/camels_soil.txt"
SOIL_VARIABLES = ["soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity",
                  "max_water_content", "sand_frac", "silt_frac", "clay_frac"]


def _build(catalog: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["data", "build", "--catalog", str(catalog), "--out", str(out), "--quiet", *extra],
                              env=env)


def _one_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _world(virtual_world: Path, tmp_path: Path) -> Path:
    """A private copy of the virtual world (2.7 MB) that a test may damage; returns its catalog."""
    copy = tmp_path / "world"
    shutil.copytree(virtual_world.parent, copy)
    return copy / virtual_world.name


def _edit_table(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite a ``;`` attribute table through ``edit`` (ids read as text, as CAMELS writes them)."""
    assert not path.is_symlink() and "/shared/" not in str(path.resolve()), path  # only ever our own copies
    table = pd.read_csv(path, sep=";", dtype=str)
    edit(table).to_csv(path, sep=";", index=False)


def _set_forcing(path: Path, day: str, column: str, value: str) -> None:
    """Put ``value`` in ``column`` of the forcing file's row for ``day`` (YYYY MM DD)."""
    lines = path.read_text().splitlines(keepends=True)
    header = lines[3].split()
    row = next(i for i, line in enumerate(lines) if line.startswith(day))
    fields = lines[row].rstrip("\n").split("\t")  # "Y M D H" then one tab-separated field per variable
    fields[header.index(column) - 3] = value
    lines[row] = "\t".join(fields) + "\n"
    path.write_text("".join(lines))


# -- ±inf is refused like any impossible value, in forcings and in static attributes


def test_inf_forcing_is_refused_naming_site_and_date_or_blanked_when_allowed(
        virtual_world: Path, tmp_path: Path) -> None:
    catalog = _world(virtual_world, tmp_path)
    forcing = next(catalog.parent.glob("basin_mean_forcing/*/*/90000005_*_forcing_leap.txt"))
    _set_forcing(forcing, "1981 07 04", "prcp(mm/day)", "inf")
    message = _one_error(_build(catalog, tmp_path / "refused.zarr"))
    assert "source forcing variable prcp: site 90000005 on 1981-07-04 has a non-finite value (inf mm/day)" in message
    _set_forcing(forcing, "1981 07 04", "prcp(mm/day)", "0.00")
    _set_forcing(forcing, "1981 07 05", "tmax(C)", "-inf")  # a temperature has no sign rule: only its range
    assert "variable tmax: site 90000005 on 1981-07-05 has a non-finite value (-inf degC)" in _one_error(
        _build(catalog, tmp_path / "refused2.zarr"))
    allow = catalog.with_name("allow.yaml")
    field = "          description: daily maximum"
    allow.write_text(catalog.read_text().replace(field, "          on_invalid: nan\n" + field))
    assert "on_invalid: nan" in allow.read_text()
    allowed = _build(allow, tmp_path / "allowed.zarr")
    assert allowed.exit_code == 0, allowed.output
    ds = open_store(str(tmp_path / "allowed.zarr"))
    assert np.isnan(float(ds["dynamic"].sel(site="90000005", time="1981-07-05", dvar="tmax")))
    assert np.isfinite(ds["dynamic"].values).sum() == ds["dynamic"].size - 1
    assert "1 cells with a non-finite value set to NaN" in allowed.output  # the CLI logs warnings even --quiet


def test_inf_or_float32_overflow_in_a_static_attribute_is_refused(virtual_world: Path, tmp_path: Path) -> None:
    catalog = _world(virtual_world, tmp_path)
    topo = catalog.parent / "camels_attributes_v2.0" / "camels_topo.txt"
    original = topo.read_text()

    def set_elevation(value: str) -> None:
        topo.write_text(original)
        _edit_table(topo, lambda t: t.assign(elev_mean=t.elev_mean.where(t.gauge_id != "90000003", value)))

    set_elevation("inf")  # a length has no plausible range: the range check could never see it
    assert "source attributes variable elev_mean: site 90000003 has a non-finite value (inf m)" in _one_error(
        _build(catalog, tmp_path / "a.zarr"))
    set_elevation("1e39")  # finite in the file, inf once stored as float32
    assert "variable elev_mean: site 90000003 is 1e+39 m after conversion, not finite as float32" in _one_error(
        _build(catalog, tmp_path / "b.zarr"))


# -- every table of a source keys its rows alike; a table or a variable that matches nothing is refused


def _camels_root(sample: Path, tmp: Path, own: list[str]) -> Path:
    """A CAMELS root of real folders linking every real file except those in ``own``, which are copied."""
    root = tmp / "camels"
    for folder, _, files in os.walk(sample, followlinks=True):
        relative_folder = Path(folder).relative_to(sample)
        (root / relative_folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            relative, target = relative_folder / name, root / relative_folder / name
            if str(relative) in own:
                shutil.copyfile(Path(folder) / name, target)
            else:
                target.symlink_to((Path(folder) / name).resolve())
    return root


def _camels_build(root: Path, out: Path):
    return _build(CAMELS_CATALOG, out, "--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "19",
                  "--start", "2000-01-01", "--end", "2000-03-31", env={"CAMELS_ROOT": str(root)})


def test_attribute_table_without_leading_zeros_joins_like_the_others(camels_sample_root: Path, tmp_path: Path) -> None:
    root = _camels_root(camels_sample_root, tmp_path, [SOIL])
    # a spreadsheet round-trip: "01013500" -> 1013500 (and some rows as 1013500.0)
    _edit_table(root / SOIL, lambda t: t.assign(gauge_id=[str(int(g)) + (".0" if i % 2 else "")
                                                          for i, g in enumerate(t.gauge_id)]))
    result = _camels_build(root, tmp_path / "s.zarr")
    assert result.exit_code == 0, result.output
    ds = open_store(str(tmp_path / "s.zarr"))
    soil = pd.read_csv(camels_sample_root / SOIL, sep=";", dtype={"gauge_id": str}).set_index("gauge_id")
    sites = [str(s) for s in ds["site"].values]
    for name in ("soil_porosity", "sand_frac"):
        stored = ds["static"].sel(svar=name).values
        expected = soil.loc[sites, name].to_numpy(float) / (100 if name == "sand_frac" else 1)
        np.testing.assert_allclose(stored, expected, rtol=1e-6)
    from stefaland.sources.camels import normalise_gauge_ids

    assert list(normalise_gauge_ids(pd.Series([" 1013500", "1013500.0", "01013500", "camels_01013500"]))) == [
        "01013500", "01013500", "01013500", "camels_01013500"]


def test_attribute_table_matching_no_site_is_refused_with_counts(camels_sample_root: Path, tmp_path: Path) -> None:
    root = _camels_root(camels_sample_root, tmp_path, [SOIL])
    _edit_table(root / SOIL, lambda t: t.assign(gauge_id="USGS-" + t.gauge_id))
    message = _one_error(_camels_build(root, tmp_path / "s.zarr"))
    assert "source attributes: " in message and "camels_soil.txt: 0 of 19 sites matched by gauge_id" in message
    assert "its ids look like 'USGS-01013500', the store's like '01013500'" in message
    assert "soil_depth_pelletier" in message and not (tmp_path / "s.zarr" / "zarr.json").exists()


def test_static_variable_missing_at_every_site_is_refused(virtual_world: Path, tmp_path: Path) -> None:
    catalog = _world(virtual_world, tmp_path)
    soil = catalog.parent / SOIL
    original = soil.read_text()
    _edit_table(soil, lambda t: t.assign(soil_porosity=""))
    assert ("source attributes variable soil_porosity: no value at any of the 24 sites" in
            _one_error(_build(catalog, tmp_path / "a.zarr")))
    soil.write_text(original)  # a table that covers only some sites builds, with the counts logged
    _edit_table(soil, lambda t: t[t.gauge_id != "90000002"])
    partial = _build(catalog, tmp_path / "b.zarr")
    assert partial.exit_code == 0, partial.output
    assert "camels_soil.txt: 23 of 24 sites matched by gauge_id" in partial.output


# -- --shard-size 1: a shard holding only an ungauged site is an ungauged row, not an error


def test_shard_of_only_an_ungauged_site_builds_the_same_store(virtual_world: Path, virtual_store: Path,
                                                              tmp_path: Path) -> None:
    result = _build(virtual_world, tmp_path / "one.zarr", "--shard-size", "1")
    assert result.exit_code == 0, result.output
    one, reference = open_store(str(tmp_path / "one.zarr")), open_store(str(virtual_store))
    ungauged = ~np.isfinite(one["target"].values).any(axis=(1, 2))
    assert ungauged.sum() >= 1  # the world has an ungauged site, alone in its shard here
    for block in ("dynamic", "target", "static"):
        np.testing.assert_array_equal(one[block].values, reference[block].values)
