"""`report` trusts nothing it reads, and no writer overwrites what it did not create.

* Bit flips in a fold's predictions.nc (checked against the fold's manifest.json) or in a `predict`
  output (checked against its recorded data sha256) are one line naming the file and both digests.
* A fold that did not finish (no manifest) or never trained (`epochs: 0`) leaves nothing that is scored.
* `report --out` and `splits make --out` refuse a user's files, replace their own only with --force;
  every writing command is listed with its guard.
* A killed `predict` leaves no temp file for good: SIGTERM removes it at once, the next write
  removes what SIGKILL left.
* `report --runs DIR` passes over the store DIR also holds, and says what it looked for when nothing is left.

Everything runs the real CLI on one tiny finetuned fold of the virtual world.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.finetune import finetune, load_config
from stefaland_cli.main import cli

from _guarded import one_line_error, snapshot

TINY = {
    "task": "camels",
    "data": {"seq_len": 60, "train_start": "1980-01-01", "train_end": "2099-12-31",
             "test_start": "1980-01-01", "test_end": "2099-12-31"},
    "model": {"name": "lstm", "hidden": 8, "dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 4},
}


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [*args])
    assert "Traceback" not in result.output, result.output
    return result


def _config(folder: Path, **train) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    path = folder / f"tiny-{len(list(folder.glob('tiny-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _report(runs: Path, out: Path, *extra: str):
    return _invoke("report", "camels", "--split", "pub", "--folds", "1", "--runs", str(runs), "--out", str(out),
                   "--format", "md,json", "--quiet", *extra)


@pytest.fixture(scope="module")
def fold_run(virtual_store: Path, virtual_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finetuned fold (pub fold 1) and a `predict` output beside it; copy before changing anything."""
    root = tmp_path_factory.mktemp("trust")
    run = root / "run"
    result = _invoke("finetune", "--store", str(virtual_store), "--config", str(_config(root)), "--out", str(run),
                     "--split", "pub", "--fold", "1", "--quiet")
    assert result.exit_code == 0, result.output
    result = _invoke("predict", str(run), "--catalog", str(virtual_world), "--out", str(root / "predict" / "p.nc"),
                     "--with-obs", "--quiet")
    assert result.exit_code == 0, result.output
    return root


def _copy_run(fold_run: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(fold_run / "run", runs / "run")
    return runs


def _flip_a_bit_of(path: Path, variable: str = "sim") -> None:
    """Flip one bit inside ``variable``'s values (a contiguous HDF5 dataset), leaving the file readable."""
    with h5py.File(path, "r") as h5:
        offset = h5[variable].id.get_offset()
        size = h5[variable].id.get_storage_size()
    assert offset is not None and size > 64
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x10
    path.write_bytes(bytes(data))


# -- report verifies what it reads ----------------------------------------------------------------

def test_a_bit_flipped_in_a_fold_predictions_is_refused_with_both_digests(fold_run: Path, tmp_path: Path) -> None:
    runs = _copy_run(fold_run, tmp_path)
    predictions = runs / "run" / "fold-1" / "predictions.nc"
    assert _report(runs, tmp_path / "before").exit_code == 0  # intact: scored
    _flip_a_bit_of(predictions)
    manifest = json.loads((runs / "run" / "fold-1" / "manifest.json").read_text())
    expected = next(e["sha256"] for e in manifest["files"] if e["path"] == "predictions.nc")
    actual = hashlib.sha256(predictions.read_bytes()).hexdigest()
    one_line_error(_report(runs, tmp_path / "after"), str(predictions), expected, actual)
    assert not (tmp_path / "after").exists()


def test_a_bit_flipped_in_a_predict_output_is_refused_by_its_data_digest(fold_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict" / "p.nc"
    out.parent.mkdir()
    shutil.copy(fold_run / "predict" / "p.nc", out)
    args = ("report", "camels", "--split", "predict", "--runs", str(out.parent), "--format", "md", "--quiet")
    assert _invoke(*args, "--out", str(tmp_path / "r1")).exit_code == 0
    with xr.open_dataset(out) as written:
        recorded = written.attrs.get("stefaland_data_sha256")
    _flip_a_bit_of(out)
    line = one_line_error(_invoke(*args, "--out", str(tmp_path / "r2")), str(out), "data sha256")
    assert recorded and recorded in line


def test_a_fold_that_did_not_finish_or_was_changed_after_is_not_scored(fold_run: Path, tmp_path: Path) -> None:
    runs = _copy_run(fold_run, tmp_path)
    fold = runs / "run" / "fold-1"
    manifest = fold / "manifest.json"
    saved = manifest.read_bytes()
    manifest.unlink()  # killed between its predictions and its manifest
    one_line_error(_report(runs, tmp_path / "a"), str(fold / "predictions.nc"), "did not finish")
    manifest.write_bytes(saved)
    shutil.copy(fold / "predictions.nc", fold / "other.nc")  # a file the manifest does not vouch for
    one_line_error(_report(runs, tmp_path / "b"), str(fold / "other.nc"), "not listed in")


def test_a_file_without_any_checksum_is_scored_with_a_warning_and_recorded(fold_run: Path, tmp_path: Path) -> None:
    """Predictions written by another tool: no manifest, no digest. Scored (docs/PREDICTIONS.md invites
    them), but stderr and the JSON say they were not verified."""
    runs = tmp_path / "runs"
    runs.mkdir()
    with xr.open_dataset(fold_run / "run" / "fold-1" / "predictions.nc") as source:
        foreign = source.load()
    foreign.attrs = {k: v for k, v in foreign.attrs.items() if k != "stefaland_data_sha256"}
    foreign.to_netcdf(runs / "theirs.nc", engine="h5netcdf")
    result = _report(runs, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "scored unverified" in result.output and str(runs / "theirs.nc") in result.output
    document = json.loads((tmp_path / "r" / "camels_report.json").read_text())
    assert document["runs"][0]["verified"] == {str(runs / "theirs.nc"): "unverified"}
    verified = _report(_copy_run(fold_run, tmp_path / "ours"), tmp_path / "r2")
    assert "unverified" not in verified.output
    document = json.loads((tmp_path / "r2" / "camels_report.json").read_text())
    assert list(document["runs"][0]["verified"].values()) == ["manifest sha256"]


def test_epochs_0_is_refused_and_leaves_no_predictions(virtual_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke("finetune", "--store", str(virtual_store), "--config", str(_config(tmp_path, epochs=0)),
                     "--out", str(out), "--split", "pub", "--fold", "1", "--quiet")
    assert not list(tmp_path.rglob("predictions.nc"))
    one_line_error(result, "train.epochs")
    # a config that slipped past validation (built in code) still writes no predictions
    config = load_config(_config(tmp_path))
    untrained = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 0})})
    with pytest.raises(StefaLandError, match="trained no epoch"):
        finetune(str(virtual_store), untrained, str(out), "pub", 1, quiet=True)
    assert not list(tmp_path.rglob("predictions.nc")) and not list(tmp_path.rglob("manifest.json"))


# -- writers without guards ----------------------------------------------------------------------

def test_report_out_never_overwrites_a_users_files(fold_run: Path, tmp_path: Path) -> None:
    runs = _copy_run(fold_run, tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "camels_table.md").write_text("my own table, by hand\n")
    (mine / "camels_sites.csv").write_text("site,note\nx,mine\n")
    before = snapshot(mine)
    for extra in ((), ("--force",)):
        one_line_error(_report(runs, mine, *extra), str(mine), "not a StefaLand report")
    assert snapshot(mine) == before
    assert not Path(f"{mine}.lock").exists()


def test_report_out_replaces_its_own_report_only_with_force(fold_run: Path, tmp_path: Path) -> None:
    runs, out = _copy_run(fold_run, tmp_path), tmp_path / "report"
    assert _report(runs, out).exit_code == 0
    assert (out / "camels_report.json").exists()
    one_line_error(_report(runs, out), str(out), "already exists", "--force")
    again = _invoke("report", "camels", "--split", "pub", "--folds", "1", "--runs", str(runs), "--out", str(out),
                    "--format", "md", "--force", "--quiet")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in out.iterdir()) == [".stefaland", "camels_table.md"]  # nothing stale left


def test_splits_make_never_overwrites_a_users_file(virtual_store: Path, tmp_path: Path) -> None:
    args = ("splits", "make", "--task", "camels", "--scheme", "pub", "--sites", str(virtual_store), "--basins", "all")
    mine = tmp_path / "folds.csv"
    mine.write_text("site,fold\n01013500,3\n")
    for extra in ((), ("--force",)):
        one_line_error(_invoke(*args, "--out", str(mine), *extra), str(mine), "not a StefaLand split")
    assert mine.read_text() == "site,fold\n01013500,3\n"
    ours = tmp_path / "pub.csv"
    assert _invoke(*args, "--out", str(ours)).exit_code == 0
    one_line_error(_invoke(*args, "--out", str(ours), "--seed", "5"), str(ours), "already exists", "--force")
    assert _invoke(*args, "--out", str(ours), "--seed", "5", "--force").exit_code == 0
    assert '"seed": 5' in ours.read_text().splitlines()[0]


#: Every command that writes files, the option naming what it writes, and how it is guarded: the flag
#: that replaces its own earlier output (None: it resumes or adds to its own instead). A new writing
#: command fails here until it is listed with its guard.
WRITERS = {
    ("data", "build"): ("out", "--force"),  # claim_output(kind store, resumable)
    ("data", "synth"): ("out_dir", "--force"),  # refuses foreign entries; resumes its own world, replaces one
    # made with other settings only with --force (synth/world.py, synth/products.py)
    ("splits", "make"): ("out", "--force"),  # claim_output(kind split): the "# stefaland-split" header line
    ("report",): ("out", "--force"),  # claim_output(kind report): the folder's marker
    ("predict",): ("out", "--force"),  # claim_output(kind predict): the file's stefaland_output attribute
    ("embed",): ("out", "--force"),  # claim_output(kind embed)
    ("pretrain",): ("out", None),  # claim_run_folder(kind pretrain): resumes its own run
    ("finetune",): ("out", None),  # adopt_run_folder(kind finetune) + one lock per fold: resumes
    ("submit", "pretrain"): ("out", None),  # adopt_output before the Job exists; a fresh folder by default
    ("submit", "finetune"): ("out", None),
    ("pull",): ("to", None),  # lock + only a folder holding an earlier pull of the same run
    ("paper", "plan"): ("out", "--force"),  # claim_output(kind paper-plan): the file's first line
    ("paper", "render"): ("out", None),  # claim_output(kind paper-tables, resumable): re-renders its own folder
    ("submit", "build"): ("out", None),  # writes nothing itself: its client pod runs `data build`, which claims the store
}
OUTPUT_OPTIONS = ("out", "out_dir", "to", "output_dir")


def _commands(group, path=()):
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_writing_command_is_guarded() -> None:
    found = {}
    for path, command in _commands(cli):
        names = {p.name: p for p in command.params}
        outputs = [n for n in OUTPUT_OPTIONS if n in names]
        if outputs:
            found[path] = outputs[0]
            flags = {opt for p in command.params for opt in p.opts}
            expected = WRITERS.get(path, (None, None))[1]
            assert expected is None or expected in flags, f"{' '.join(path)} has no {expected}"
    assert found == {path: option for path, (option, _) in WRITERS.items()}


# -- weak: a killed predict's temp file ------------------------------------------------------------

_SLOW_WRITE = """
import sys, time
import xarray as xr
original = xr.Dataset.to_netcdf
def slow(self, path=None, *args, **kwargs):
    if str(path).rsplit("/", 1)[-1].startswith(".tmp-"):
        open(path, "wb").close()  # the 0-byte temp file a killed writer leaves
        print("WRITING", path, flush=True)
        time.sleep(300)
    return original(self, path, *args, **kwargs)
xr.Dataset.to_netcdf = slow
from stefaland_cli.main import cli
cli(sys.argv[1:])
"""


def _predict_killed_while_writing(fold_run: Path, virtual_world: Path, out: Path, sig: int) -> tuple[int, Path]:
    """`stefaland predict` in a subprocess, sent ``sig`` while it writes its temp file; (exit status, temp)."""
    command = [sys.executable, "-c", _SLOW_WRITE, "predict", str(fold_run / "run"), "--catalog", str(virtual_world),
               "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, temp = time.monotonic() + 120, None
    try:
        while temp is None and time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            line = process.stdout.readline() if ready else ""
            if line.startswith("WRITING "):
                temp = Path(line.split(" ", 1)[1].strip())
        assert temp is not None and temp.exists(), process.stdout.read() if process.poll() is not None else "timeout"
        process.send_signal(sig)
        return process.wait(timeout=60), temp
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_during_predict_removes_its_temp_file_and_lock(fold_run: Path, virtual_world: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "p" / "predictions.nc"
    status, temp = _predict_killed_while_writing(fold_run, virtual_world, out, signal.SIGTERM)
    assert status != 0
    assert not temp.exists() and not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no temp, no lock left behind


def test_the_next_predict_removes_what_a_killed_one_left(fold_run: Path, virtual_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "p" / "predictions.nc"
    status, temp = _predict_killed_while_writing(fold_run, virtual_world, out, signal.SIGKILL)
    assert status == -signal.SIGKILL and temp.exists() and temp.stat().st_size == 0
    neighbour = out.parent / ".tmp-notes.nc"  # not ours by name: never touched
    neighbour.write_text("someone else's\n")
    result = _invoke("predict", str(fold_run / "run"), "--catalog", str(virtual_world), "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert not temp.exists() and out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [".tmp-notes.nc", "predictions.nc"]


# -- weak: report --runs DIR that also holds the store --------------------------------------------

def test_report_passes_over_the_store_beside_the_runs(fold_run: Path, virtual_store: Path, tmp_path: Path) -> None:
    runs = _copy_run(fold_run, tmp_path)
    shutil.copytree(virtual_store, runs / "world.zarr")
    xr.Dataset({"q": (("site", "time"), np.zeros((2, 3)))},  # e.g. predict's HBV fluxes: no obs/sim
               coords={"site": ["a", "b"], "time": pd.date_range("2000", periods=3)}).to_netcdf(runs / "fluxes.nc")
    result = _report(runs, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "missing attribute" not in result.output
    shutil.rmtree(runs / "run")
    line = one_line_error(_report(runs, tmp_path / "r2"), "no predictions files found", "obs and sim")
    assert f"{runs / 'world.zarr'} (a StefaLand store output)" in line and "fluxes.nc (no obs/sim" in line
