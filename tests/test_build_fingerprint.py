"""Resume and "up to date" see the input files, not only the catalog: an edited input is named and
never mixed into a store; a complete store whose inputs changed is rebuilt only with --force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from stefaland.store import open_store
from stefaland.synth import write_virtual_world
from stefaland_cli.main import cli

from _guarded import one_line_error, snapshot


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    return write_virtual_world(tmp_path / "world", n_sites=6, years=1, seed=5, quiet=True)


def _build(world: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "build", "--catalog", str(world), "--out", str(out), "--shard-size", "2",
                                    "--quiet", *extra])


def test_a_complete_store_whose_input_changed_is_not_up_to_date(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    assert _build(world, out).exit_code == 0
    table = world.parent / "camels_attributes_v2.0" / "camels_soil.txt"
    os.utime(table)  # touched, same content: still up to date (small files are judged by their hash)
    assert "up to date" in _build(world, out).output
    before = snapshot(out)
    text = table.read_text()
    digit = text.index(".", text.index("\n")) + 3  # the third decimal of the first value
    table.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
    one_line_error(_build(world, out), str(table), "not up to date", "--force")
    assert snapshot(out) == before
    rebuilt = _build(world, out, "--force")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "up to date" in _build(world, out).output


def test_a_resume_after_an_input_changed_refuses_to_mix_and_names_the_file(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    last = sorted((world.parent / "basin_mean_forcing").rglob("*.txt"))[-1]
    original = last.read_text()
    last.write_text("\n".join(original.splitlines()[:100]) + "\n1980 12 31 12 garbage\n")
    # a window given on the command line: no scan of every file for the records' span first, so the
    # build dies on the shard that reads the damaged file: an interrupted build
    window = ("--start", "1980-01-01", "--end", "1980-12-31")
    failed = _build(world, out, *window)
    assert failed.exit_code == 1 and Path(str(out) + ".build-state.json").exists(), failed.output
    last.write_text(original.replace("\n", "\r\n", 1))  # fixed -- but not the file the first shards saw
    before = snapshot(out)
    one_line_error(_build(world, out, *window), str(last), "interrupted build", "--force")
    assert snapshot(out) == before
    forced = _build(world, out, "--force", *window)
    assert forced.exit_code == 0, forced.output
    assert open_store(str(out)).sizes["site"] == 6


def test_a_vanished_input_is_named(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.zarr"
    assert _build(world, out).exit_code == 0
    flow = sorted((world.parent / "usgs_streamflow").rglob("*.txt"))[0]
    flow.rename(flow.with_suffix(".old"))
    result = _build(world, out)
    assert result.exit_code == 1 and str(flow) in result.output, result.output
