"""The store's time axis is the union of the dynamic records, on the real CAMELS sample.

Basin 01013500 (sorted first) has NLDAS forcings for 1993-2013 only; basin 01022500 has 1980-2014.
An axis taken from the first basin would lose 01022500's 1980-1993 and 2013-2014.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stefaland.assemble import build_store
from stefaland.assemble.timeaxis import MISSING_DAYS_ATTR
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
CAMELS_CATALOG = REPO / "catalog" / "camels.yaml"
SOURCES = "forcing_nldas,attributes,streamflow"


def _forcing(root: Path, gauge: str) -> Path:
    return next((root / "basin_mean_forcing" / "nldas").glob(f"*/{gauge}_lump_nldas_forcing_leap.txt"))


def _file_dates(path: Path) -> pd.DatetimeIndex:
    rows = [line.split()[:3] for line in path.read_text().splitlines()[4:] if line.strip()]
    return pd.DatetimeIndex(pd.to_datetime([f"{y}-{m}-{d}" for y, m, d in rows]))


def _row(path: Path, day: str, column: str) -> float:
    lines = path.read_text().splitlines()
    header = lines[3].split()
    row = next(line.split() for line in lines[4:] if line.split()[:3] == day.split("-"))
    return float(row[header.index(column)])


@pytest.fixture(scope="module")
def union_store(camels_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("union") / "camels.zarr"
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(CAMELS_CATALOG), "--out", str(out), "--quiet",
                                      "--sources", SOURCES, "--shard-size", "8"],
                                env={"CAMELS_ROOT": str(camels_sample_root)})
    assert result.exit_code == 0, result.output
    return out


def test_axis_is_the_union_not_the_first_site(union_store: Path, camels_sample_root: Path) -> None:
    ds = open_store(str(union_store))
    assert str(ds.time.values[0])[:10] == "1980-01-01"  # 01022500's first day, not 01013500's 1993
    assert str(ds.time.values[-1])[:10] == "2014-12-31"
    assert ds.sizes["site"] == 19
    long_record = _forcing(camels_sample_root, "01022500")
    got = float(ds["dynamic"].sel(site="01022500", time="1985-06-15", dvar="prcp"))
    assert got == pytest.approx(_row(long_record, "1985-06-15", "PRCP(mm/day)"), abs=1e-4)
    assert np.isnan(float(ds["dynamic"].sel(site="01013500", time="1985-06-15", dvar="prcp")))
    assert np.isfinite(float(ds["dynamic"].sel(site="01013500", time="2000-01-01", dvar="prcp")))


def test_missing_days_per_site_match_the_files(union_store: Path, camels_sample_root: Path) -> None:
    ds = open_store(str(union_store))
    counts = ds.attrs[MISSING_DAYS_ATTR]
    assert set(counts) == set(ds.site.values.astype(str))
    axis = pd.DatetimeIndex(ds.time.values)
    for gauge in ("01013500", "01022500", "09386900"):
        expected = int((~axis.isin(_file_dates(_forcing(camels_sample_root, gauge)))).sum())
        assert counts[gauge] == expected, gauge
    assert counts["01022500"] == 0 and counts["01013500"] > 5000
    stored = ds["dynamic"].sel(site="01013500").values
    assert counts["01013500"] == int((~np.isfinite(stored).any(axis=-1)).sum())


def test_a_gap_in_the_first_file_stays_that_sites_gap(camels_sample_root: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The first basin's file missing year 2000 must not remove 2000 from every other basin."""
    root = tmp_path / "camels"
    root.mkdir()
    for name in ("usgs_streamflow", "camels_attributes_v2.0"):
        (root / name).symlink_to(camels_sample_root / name)
    source = camels_sample_root / "basin_mean_forcing" / "nldas"
    for huc in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / "basin_mean_forcing" / "nldas" / huc.name).mkdir(parents=True)
        for file in huc.iterdir():
            (root / "basin_mean_forcing" / "nldas" / huc.name / file.name).symlink_to(file)
    first = _forcing(root, "01013500")
    lines = first.read_text().splitlines(keepends=True)
    first.unlink()
    first.write_text("".join(lines[:4] + [line for line in lines[4:] if not line.startswith("2000 ")]))
    out = tmp_path / "gap.zarr"
    catalog = tmp_path / "camels.yaml"
    catalog.write_text(CAMELS_CATALOG.read_text().replace('"env(CAMELS_ROOT)"', f'"{root}"'))
    with caplog.at_level(logging.INFO, logger="stefaland.assemble"):
        build_store(str(catalog), str(out), shard_size=19, sources=SOURCES.split(","), quiet=True)
    ds = open_store(str(out))
    day = "2000-06-01"
    assert np.isnan(float(ds["dynamic"].sel(site="01013500", time=day, dvar="prcp")))
    assert np.isfinite(float(ds["dynamic"].sel(site="01333000", time=day, dvar="prcp")))
    counts = ds.attrs[MISSING_DAYS_ATTR]
    assert counts["01013500"] == counts["01333000"] + 366
    assert "union of the dynamic sources" in caplog.text
    assert "01013500 5840" in caplog.text  # the per-site report names the site and its count


def test_declared_window_is_kept(camels_sample_root: Path, tmp_path: Path) -> None:
    text = CAMELS_CATALOG.read_text().replace('"env(CAMELS_ROOT)"', f'"{camels_sample_root}"')
    text = text.replace("    name: camels_us\n", '    name: camels_us\n    start: "2010-01-01"\n    end: "2010-12-31"\n')
    catalog = tmp_path / "camels.yaml"
    catalog.write_text(text)
    out = tmp_path / "window.zarr"
    summary = build_store(str(catalog), str(out), shard_size=19, sources=SOURCES.split(","), quiet=True)
    assert summary.n_time == 365
    ds = open_store(str(out))
    assert str(ds.time.values[0])[:10] == "2010-01-01" and str(ds.time.values[-1])[:10] == "2010-12-31"
    assert set(ds.attrs[MISSING_DAYS_ATTR].values()) == {0}
