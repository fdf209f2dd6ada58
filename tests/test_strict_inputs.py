"""Strict, physical input checks on real CAMELS files (copied into tmp and damaged one cell at a time).

Each damaged input is either a one-line error naming the file/line or the site, or — where the
catalog explicitly allows it with ``on_invalid: nan`` — NaN plus a logged count.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stefaland.assemble import build_store
from stefaland.errors import StefaLandError
from stefaland.sources.camels import read_attribute_tables
from stefaland.splits import Split, apply_split, read_split, write_split
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
CAMELS_CATALOG = REPO / "catalog" / "camels.yaml"
SOURCES = ["forcing_nldas", "attributes", "streamflow"]
GAUGE = "01013500"  # sorted first: read by `catalog validate` and by every shard


def _root(sample: Path, tmp: Path, own: list[str]) -> Path:
    """A CAMELS root of real folders linking every real file except those in ``own`` (relative
    paths), which are copied so that a test can damage them. Folders are never links, so no write
    can reach the read-only sample."""
    root = tmp / "camels"
    for folder, _, files in os.walk(sample, followlinks=True):
        relative_folder = Path(folder).relative_to(sample)
        (root / relative_folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            relative = relative_folder / name
            source, target = Path(folder) / name, root / relative
            if str(relative) in own:
                shutil.copyfile(source, target)
            else:
                target.symlink_to(source.resolve())
    for relative in own:
        assert not (root / relative).is_symlink() and (root / relative).resolve().is_relative_to(tmp.resolve())
    return root


def _catalog(root: Path, tmp: Path, text_edit=None) -> Path:
    text = CAMELS_CATALOG.read_text().replace('"env(CAMELS_ROOT)"', f'"{root}"')
    if text_edit:
        text = text_edit(text)
    path = tmp / "camels.yaml"
    path.write_text(text)
    return path


def _forcing(sample: Path) -> str:
    return str(next(sample.glob(f"basin_mean_forcing/nldas/*/{GAUGE}_lump_nldas_forcing_leap.txt")).relative_to(sample))


def _streamflow(sample: Path) -> str:
    return str(next(sample.glob(f"usgs_streamflow/*/{GAUGE}_streamflow_qc.txt")).relative_to(sample))


def _edit_line(path: Path, starts: str, edit) -> int:
    """Apply ``edit`` to the first line starting with ``starts``; return its 1-based number."""
    assert not path.is_symlink() and "/shared/" not in str(path.resolve()), path  # only ever our own copies
    lines = path.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if line.startswith(starts))
    lines[number] = edit(lines[number])
    path.write_text("".join(lines))
    return number + 1


def _one_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture()
def sample(camels_sample_root: Path) -> Path:
    return camels_sample_root


def test_row_cut_after_its_date_names_file_and_line(sample: Path, tmp_path: Path) -> None:
    relative = _forcing(sample)
    root = _root(sample, tmp_path, [relative])
    line = _edit_line(root / relative, "2000 01 15", lambda text: " ".join(text.split()[:4]) + "\n")
    result = CliRunner().invoke(cli, ["catalog", "validate", str(_catalog(root, tmp_path)), "--sources", "forcing_nldas"])
    assert result.exit_code == 1
    assert f"{relative.split('/')[-1]} line {line}: 4 fields where the header has 11" in result.output


def test_short_streamflow_row_and_bad_number_name_the_line(sample: Path, tmp_path: Path) -> None:
    relative = _streamflow(sample)
    root = _root(sample, tmp_path, [relative])
    path = root / relative
    line = _edit_line(path, f"{GAUGE} 2001 02 03", lambda text: " ".join(text.split()[:4]) + "\n")
    catalog = _catalog(root, tmp_path)
    message = _one_error(CliRunner().invoke(cli, ["data", "build", "--catalog", str(catalog), "--out",
                                                  str(tmp_path / "s.zarr"), "--quiet", "--sources", ",".join(SOURCES)]))
    assert f"line {line}: 4 fields" in message and "streamflow_qc.txt" in message
    with pytest.raises(StefaLandError):  # the half-built store is never usable
        open_store(str(tmp_path / "s.zarr"))
    shutil.copyfile(sample / relative, path)
    line = _edit_line(path, f"{GAUGE} 2001 02 03", lambda text: text.replace(text.split()[4], "12,5"))
    result = CliRunner().invoke(cli, ["catalog", "validate", str(catalog), "--sources", "streamflow"])
    assert f"line {line}: column QObs has a non-numeric value '12,5'" in result.output and result.exit_code == 1


def _build(catalog: Path, out: Path) -> None:
    build_store(str(catalog), str(out), shard_size=19, sources=SOURCES, start="2000-01-01", end="2000-12-31", quiet=True)


def test_negative_discharge_is_refused_unless_the_catalog_allows_nan(sample: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    relative = _streamflow(sample)
    root = _root(sample, tmp_path, [relative])
    _edit_line(root / relative, f"{GAUGE} 2000 03 01", lambda text: text.replace(text.split()[4], "-5.00"))
    with pytest.raises(StefaLandError, match=rf"variable streamflow: site {GAUGE} on 2000-03-01 has a negative value \(-5 ft3/s\)"):
        _build(_catalog(root, tmp_path), tmp_path / "refused.zarr")
    allow = _catalog(root, tmp_path, lambda t: t.replace("per_area: area_gages2,", "per_area: area_gages2, on_invalid: nan,"))
    with caplog.at_level(logging.WARNING, logger="stefaland.assemble"):
        _build(allow, tmp_path / "allowed.zarr")
    ds = open_store(str(tmp_path / "allowed.zarr"))
    assert np.isnan(float(ds["target"].sel(site=GAUGE, time="2000-03-01", tvar="streamflow")))
    assert np.isfinite(float(ds["target"].sel(site=GAUGE, time="2000-03-02", tvar="streamflow")))
    assert "1 cells with a negative value set to NaN" in caplog.text


def test_negative_precipitation_is_refused(sample: Path, tmp_path: Path) -> None:
    relative = _forcing(sample)
    root = _root(sample, tmp_path, [relative])

    def negative_precipitation(text: str) -> str:
        fields = text.rstrip("\n").split("\t")
        return "\t".join(fields[:2] + ["-3.00"] + fields[3:]) + "\n"

    _edit_line(root / relative, "2000 07 04", negative_precipitation)
    with pytest.raises(StefaLandError,
                       match=rf"source forcing_nldas variable prcp: site {GAUGE} on 2000-07-04 has a negative value \(-3 mm/day\)"):
        _build(_catalog(root, tmp_path), tmp_path / "s.zarr")


def test_zero_basin_area_and_latitude_out_of_range(sample: Path, tmp_path: Path) -> None:
    relative = "camels_attributes_v2.0/camels_topo.txt"
    root = _root(sample, tmp_path, [relative])
    original = (root / relative).read_text()

    def set_field(index: int, value: str) -> None:
        lines = original.splitlines(keepends=True)
        row = next(i for i, line in enumerate(lines) if line.startswith(GAUGE + ";"))
        fields = lines[row].rstrip("\n").split(";")
        fields[index] = value
        lines[row] = ";".join(fields) + "\n"
        (root / relative).write_text("".join(lines))

    header = original.splitlines()[0].split(";")
    set_field(header.index("area_gages2"), "0")
    with pytest.raises(StefaLandError, match=rf"variable area_gages2: site {GAUGE} has an area <= 0 \(0 km2\)"):
        _build(_catalog(root, tmp_path), tmp_path / "a.zarr")
    set_field(header.index("gauge_lat"), "95.2")
    result = CliRunner().invoke(cli, ["catalog", "validate", str(_catalog(root, tmp_path))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"site {GAUGE} has lat 95.2 (column 'gauge_lat'), outside -90..90" in result.output


def test_same_attribute_in_two_tables_must_agree(sample: Path, tmp_path: Path) -> None:
    topo = sample / "camels_attributes_v2.0" / "camels_topo.txt"
    extra = tmp_path / "camels_extra.txt"
    rows = topo.read_text().splitlines()
    header = rows[0].split(";")
    at = header.index("elev_mean")
    lines = ["gauge_id;elev_mean"] + [f"{r.split(';')[0]};{r.split(';')[at]}" for r in rows[1:]]
    extra.write_text("\n".join(lines) + "\n")
    agreed = read_attribute_tables([str(topo), str(extra)], "attributes")
    assert len(agreed) == len(rows) - 1  # the same values twice: fine
    lines[1] = lines[1].split(";")[0] + ";9999"
    extra.write_text("\n".join(lines) + "\n")
    gauge = rows[1].split(";")[0]
    with pytest.raises(StefaLandError,
                       match=rf"column elev_mean of site {gauge} is '.*' in .*camels_topo.txt but '9999' in .*camels_extra.txt"):
        read_attribute_tables([str(topo), str(extra)], "attributes")


def test_split_file_scheme_must_match_split(sample: Path, tmp_path: Path) -> None:
    split = tmp_path / "pur.csv"
    gauges = sorted(p.name[:8] for p in sample.glob("usgs_streamflow/*/*_streamflow_qc.txt"))
    folds = pd.Series(np.arange(len(gauges)) % 2, index=pd.Index(gauges, name="site"), dtype="int16")
    write_split(Split(folds, "camels", "pur", 1, {0: "a", 1: "b"}), str(split))
    sites = list(read_split(str(split)).folds.index)
    assert apply_split(sites, str(split), scheme="pur")
    with pytest.raises(StefaLandError, match=r"pur.csv: split file scheme is 'pur' but 'pub' was asked for"):
        apply_split(sites, str(split), scheme="pub")
    config = tmp_path / "finetune.yaml"
    shutil.copyfile(REPO / "configs" / "finetune_tiny.yaml", config)
    result = CliRunner().invoke(cli, ["submit", "finetune", "--task", "camels", "--split", "pub", "--split-file", str(split),
                                      "--folds", "1,2", "--config", str(config), "--store", "s3://b/store.zarr",
                                      "--out", "s3://b/runs/x", "--pvc", "claim", "--pvc-mount", str(tmp_path), "--dry-run"])
    assert "split file scheme is 'pur' but 'pub' was asked for" in _one_error(result)


@pytest.mark.parametrize("option, value, message", [
    ("-n", "Team_A", "--namespace 'Team_A': not a valid namespace (DNS-1123"),
    ("--image", "stefaland:latest; rm -rf /", "not a valid image reference"),
    ("--image", "Stefaland:1", "not a valid image reference"),
    ("--cpu", "8 cores", "--cpu '8 cores': not a Kubernetes quantity"),
    ("--memory", "-4Gi", "--memory '-4Gi': not a Kubernetes quantity"),
    ("--memory", "32", "--memory '32': below 1Mi"),
])
def test_submit_checks_names_and_quantities_before_manifests(option: str, value: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "finetune.yaml"
    shutil.copyfile(REPO / "configs" / "finetune_tiny.yaml", config)
    args = ["submit", "finetune", "--task", "camels", "--split", "pub", "--folds", "1", "--config", str(config),
            "--store", "s3://b/store.zarr", "--out", "s3://b/runs/x", "--image", "ghcr.io/org/stefaland:1", option, value,
            "--dry-run"]
    assert message in _one_error(CliRunner().invoke(cli, args))
    ok = CliRunner().invoke(cli, args[:-3] + ["--dry-run"])
    assert ok.exit_code == 0 and "kind: Job" in ok.output
