"""Run folders (pretrain, finetune, pull) are StefaLand's or refused; one writer at a time.

`pretrain --out`, `finetune --out` and `pull --to` given a folder of unrelated files, a plain file,
another kind of output or an S3 prefix holding other things: exit 1, one line naming the path,
the user's data byte-identical, no lock left behind. Re-running the same command resumes; a second
writer is told who writes; a lock left by a killed process (here, or on a pod that was replaced)
does not block the run forever. Plus the small guards: --shard-size range, non-finite model
numbers, and a pretraining exclusion split file of the wrong scheme.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import s3fs
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from stefaland.k8s.submit import Submission, upload_config
from stefaland.model.config import ModelConfig
from stefaland.outputs import (
    RUN_ID_ENV,
    LockLost,
    _boot_id,
    _is_stale,
    _pid_start,
    claim_output,
    lock_output,
    lock_url,
    output_kind,
    write_marker,
)
from stefaland.run.layout import fold_dir
from stefaland.splits import Split, write_split
from stefaland.store import open_store
from stefaland_cli.main import cli

from _finetune_store import write_finetune_store
from _guarded import one_line_error, snapshot
from _seaweed import S3Server
from _stores import write_store

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_TINY = REPO / "configs" / "pretrain_tiny.yaml"


# -- helpers ----------------------------------------------------------------------------------------

def _user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("three years of work\n")
    (path / "config.yaml").write_text("my: own config\n")  # a name a run folder also uses
    (path / "sub" / "data.bin").write_bytes(os.urandom(4096))
    return path


def _pretrain(store: str, config: str, out: str, *extra: str):
    return CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", config, "--out", out, "--quiet", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_store(str(tmp_path_factory.mktemp("store") / "world.zarr"), n_sites=8, n_days=200, shard_size=8)


@pytest.fixture(scope="module")
def pretrain_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    raw = yaml.safe_load(PRETRAIN_TINY.read_text())
    raw["train"].update(epochs=1, eval_batches=1)
    path = tmp_path_factory.mktemp("config") / "one.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# -- pretrain --------------------------------------------------------------------------------------

class TestPretrainRunFolder:
    def test_a_user_folder_a_plain_file_and_another_kind_of_output_are_refused(
            self, store: str, pretrain_config: str, tmp_path: Path) -> None:
        folder = _user_folder(tmp_path / "mine")
        before = snapshot(folder)
        for extra in ((), ("--no-resume",), ("--resume",)):
            one_line_error(_pretrain(store, pretrain_config, str(folder), *extra), str(folder),
                            "not a StefaLand pretrain output", "a folder of other files")
        assert snapshot(folder) == before and not Path(lock_url(str(folder))).exists()

        plain = tmp_path / "run.txt"
        plain.write_bytes(b"not a run")
        one_line_error(_pretrain(store, pretrain_config, str(plain)), str(plain), "(a file)")
        assert plain.read_bytes() == b"not a run"

        embeddings = tmp_path / "emb.zarr"
        write_marker(str(embeddings), "embed")
        (embeddings / "vectors").write_bytes(b"embeddings")
        before = snapshot(embeddings)
        one_line_error(_pretrain(store, pretrain_config, str(embeddings)), "is a StefaLand embed output, not a pretrain")
        assert snapshot(embeddings) == before

    def test_rerunning_resumes_another_config_is_refused_and_the_lock_is_gone(
            self, store: str, pretrain_config: str, tmp_path: Path) -> None:
        out = tmp_path / "run"
        first = _pretrain(store, pretrain_config, str(out))
        assert first.exit_code == 0, first.output
        assert output_kind(str(out)) == ("folder", "pretrain")
        assert not Path(lock_url(str(out))).exists()
        steps = first.output.split("pretrained ")[1].split(" ")[0]
        again = _pretrain(store, pretrain_config, str(out))  # the same command: resumes (here: already done)
        assert again.exit_code == 0 and f"pretrained {steps} steps" in again.output, again.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert ".stefaland/zarr.json" in {entry["path"] for entry in manifest["files"]}  # pull carries the marker
        changed = Path(pretrain_config).with_name("other.yaml")
        changed.write_text(Path(pretrain_config).read_text().replace("lr: 0.005", "lr: 0.004"))
        before = snapshot(out)
        one_line_error(_pretrain(store, str(changed), str(out)), "different config")
        assert snapshot(out) == before and not Path(lock_url(str(out))).exists()

    def test_a_second_writer_is_turned_away_and_a_killed_ones_lock_taken_over(
            self, store: str, pretrain_config: str, tmp_path: Path) -> None:
        long = tmp_path / "long.yaml"
        raw = yaml.safe_load(Path(pretrain_config).read_text())
        raw["train"].update(epochs=500)
        long.write_text(yaml.safe_dump(raw))
        out = tmp_path / "busy"
        lock = Path(lock_url(str(out)))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        process = subprocess.Popen([sys.executable, "-m", "stefaland_cli.main", "pretrain", "--store", store,
                                    "--config", str(long), "--out", str(out), "--quiet"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not (out / "checkpoints" / "latest.json").exists():
                assert process.poll() is None, process.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.05)
            holder = json.loads(lock.read_text())
            assert holder["pid"] == process.pid and holder["stale_after_s"] == 600  # keep_alive() declared it
            second = _pretrain(store, str(long), str(out))
            one_line_error(second, str(out), "being written by host", f"pid {process.pid}")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        assert lock.exists()  # kill -9: nobody released it
        # the same machine sees that pid is gone: the next run takes the lock over and starts again
        restarted = _pretrain(store, pretrain_config, str(out), "--no-resume")
        assert restarted.exit_code == 0, restarted.output
        assert not lock.exists() and output_kind(str(out)) == ("folder", "pretrain")


# -- the stale-lock rules (a restarted pod, a reused pid, a reboot) ------------------------------

def _lock(out: Path, **fields) -> None:
    payload = {"host": "pod-7f9c-0", "pid": 42, "token": "theirs", "started": "2026-01-01T00:00:00+00:00",
               "started_unix": time.time(), "heartbeat_unix": time.time(), **fields}
    Path(lock_url(str(out))).write_text(json.dumps(payload))


class TestStaleLocks:
    @pytest.fixture(autouse=True)
    def _no_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("STEFALAND_LOCK_STALE_S", raising=False)
        monkeypatch.delenv(RUN_ID_ENV, raising=False)

    def _taken_over(self, out: Path) -> bool:
        try:
            claim_output(str(out), "pretrain", resumable=True).release()
        except Exception as exc:  # noqa: BLE001
            assert "being written by host" in str(exc), exc
            return False
        assert not Path(lock_url(str(out))).exists()
        return True

    def test_another_hosts_lock_is_kept_while_its_heartbeat_is_fresh(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        _lock(out, stale_after_s=600, heartbeat_unix=time.time() - 300)
        assert not self._taken_over(out)
        _lock(out, stale_after_s=600, heartbeat_unix=time.time() - 700)  # the pod died 11+ minutes ago
        assert self._taken_over(out)
        _lock(out, heartbeat_unix=time.time() - 700)  # a writer without keep_alive(): 6 h by default
        assert not self._taken_over(out)

    def test_the_environment_overrides_the_declared_time(self, tmp_path: Path, monkeypatch) -> None:
        out = tmp_path / "run"
        monkeypatch.setenv("STEFALAND_LOCK_STALE_S", "60")
        _lock(out, stale_after_s=600, heartbeat_unix=time.time() - 120)
        assert self._taken_over(out)

    def test_the_replacement_pod_of_the_same_run_takes_over_at_once(self, tmp_path: Path, monkeypatch) -> None:
        out = tmp_path / "run"
        monkeypatch.setenv(RUN_ID_ENV, "pretrain-20260101-120000-0a1b2c")
        _lock(out, stale_after_s=600, run_id="pretrain-20260101-120000-ffffff")  # another run: a live writer
        assert not self._taken_over(out)
        _lock(out, stale_after_s=600, run_id="pretrain-20260101-120000-0a1b2c")  # the pod this one replaces
        assert self._taken_over(out)
        # an Indexed Job's replacement pod keeps the host name, on another node (S3 lock): the run id decides
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "boot_id": "another-node",
                  "heartbeat_unix": time.time(), "stale_after_s": 600}
        assert not _is_stale(holder, remote=True)
        assert _is_stale({**holder, "run_id": "pretrain-20260101-120000-0a1b2c"}, remote=True)

    def test_a_reused_pid_and_a_reboot_do_not_hold_a_lock(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        me = os.getpid()
        if _pid_start(me) is None or _boot_id() is None:
            pytest.skip("needs Linux /proc")
        _lock(out, host=socket.gethostname(), pid=me, boot_id=_boot_id(), pid_start=_pid_start(me))
        assert not self._taken_over(out)  # that very process lives
        _lock(out, host=socket.gethostname(), pid=me, boot_id=_boot_id(), pid_start=_pid_start(me) - 1)
        assert self._taken_over(out)  # the pid now belongs to another process (a restarted container)
        _lock(out, host=socket.gethostname(), pid=me, boot_id="before-the-reboot")
        assert self._taken_over(out)

    def test_keep_alive_beats_and_notices_a_takeover(self, tmp_path: Path) -> None:
        out = tmp_path / "run"
        claim = claim_output(str(out), "pretrain")
        lock = Path(claim.lock)
        claim.keep_alive(every_s=0.05, stale_after_s=1)
        first = json.loads(lock.read_text())
        assert first["stale_after_s"] == 1 and first["token"] == claim.token
        time.sleep(0.3)
        assert json.loads(lock.read_text())["heartbeat_unix"] > first["heartbeat_unix"]
        claim.check()
        lock.write_text(json.dumps({**first, "token": "someone-else"}))
        deadline = time.monotonic() + 10
        while claim.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LockLost, match="lost the lock"):
            claim.check()
        claim.release()
        assert json.loads(lock.read_text())["token"] == "someone-else"  # never removes another's lock


# -- finetune --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ft_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("ft") / "store.zarr", n_sites=12, days=400, n_pub=3)


@pytest.fixture(scope="module")
def ft_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    values = {
        "data": {"seq_len": 30, "train_start": "1990-01-01", "train_end": "1990-12-31",
                 "test_start": "1990-01-01", "test_end": "1990-12-31"},
        "model": {"name": "lstm", "hidden": 8, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 2},
    }
    path = tmp_path_factory.mktemp("ftconfig") / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _finetune(store: str, config: str, out: str, *extra: str):
    return CliRunner().invoke(cli, ["finetune", "--store", store, "--config", config, "--out", out, "--split", "pub",
                                    "--fold", "1", "--quiet", *extra])


class TestFinetuneRunFolder:
    def test_a_user_folder_a_plain_file_and_a_pretraining_run_are_refused(
            self, ft_store: str, ft_config: str, tmp_path: Path) -> None:
        folder = _user_folder(tmp_path / "mine")
        before = snapshot(folder)
        one_line_error(_finetune(ft_store, ft_config, str(folder)), str(folder), "not a StefaLand finetune output")
        assert snapshot(folder) == before
        assert not list(tmp_path.glob("**/*.lock"))

        plain = tmp_path / "results"
        plain.write_bytes(b"numbers")
        one_line_error(_finetune(ft_store, ft_config, str(plain)), str(plain), "(a file)")
        assert plain.read_bytes() == b"numbers"

        pretrained = tmp_path / "pretrain-run"
        write_marker(str(pretrained), "pretrain")
        (pretrained / "config.yaml").write_text("train: {epochs: 1}\n")
        before = snapshot(pretrained)
        one_line_error(_finetune(ft_store, ft_config, str(pretrained)), "is a StefaLand pretrain output, not a finetune")
        assert snapshot(pretrained) == before

    def test_rerunning_resumes_and_a_second_writer_of_a_fold_is_turned_away(
            self, ft_store: str, ft_config: str, tmp_path: Path) -> None:
        out = tmp_path / "ft"
        first = _finetune(ft_store, ft_config, str(out))
        assert first.exit_code == 0, first.output
        assert output_kind(str(out)) == ("folder", "finetune")
        assert not list(tmp_path.glob("**/*.lock"))
        predictions = (out / "fold-1" / "predictions.nc").read_bytes()
        again = _finetune(ft_store, ft_config, str(out))
        assert again.exit_code == 0 and "fold 1:" in again.output, again.output
        assert (out / "fold-1" / "predictions.nc").exists() and predictions
        with lock_output(fold_dir(str(out), 1), "finetune"):
            one_line_error(_finetune(ft_store, ft_config, str(out)), f"{out}/fold-1", "being written by host",
                            f"pid {os.getpid()}")
        assert not list(tmp_path.glob("**/*.lock"))


# -- pull into a local folder ---------------------------------------------------------------------

def test_pull_refuses_a_folder_that_is_not_a_pull_of_that_run(tmp_path: Path) -> None:
    run = tmp_path / "remote-run"
    write_marker(str(run), "pretrain")
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    (run / "manifest.json").write_text(json.dumps({"files": []}))
    folder = _user_folder(tmp_path / "mine")
    before = snapshot(folder)
    runner = CliRunner()
    one_line_error(runner.invoke(cli, ["pull", str(run), "--to", str(folder), "-q"]), str(folder),
                    f"is not a pull of {run}", "a folder of other files")
    assert snapshot(folder) == before and not Path(lock_url(str(folder))).exists()
    copy = tmp_path / "copy"
    for _ in range(2):  # a second pull into its own folder resumes
        result = runner.invoke(cli, ["pull", str(run), "--to", str(copy), "-q"])
        assert result.exit_code == 0, result.output
    assert (copy / "config.yaml").read_text() == "train: {epochs: 1}\n"
    assert output_kind(str(copy)) == ("folder", "pretrain")
    other = tmp_path / "other-run"
    write_marker(str(other), "pretrain")
    (other / "config.yaml").write_text("x: 1\n")
    one_line_error(runner.invoke(cli, ["pull", str(other), "--to", str(copy), "-q"]), str(copy),
                    "is not a pull of", "a StefaLand pretrain output")


# -- S3 --------------------------------------------------------------------------------------------

def test_s3_prefix_with_other_things_is_refused_by_pretrain_and_submit(
        store: str, pretrain_config: str, s3_bucket: str, s3_env: S3Server) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    others = {f"{bucket}/runs/a/model.pt": b"weights-a", f"{bucket}/runs/notes.txt": b"notes"}
    for key, data in others.items():
        fs.pipe(key, data)
    runs = f"{s3_bucket}/runs"
    one_line_error(_pretrain(store, pretrain_config, runs), runs, "not a StefaLand pretrain output")
    config = Path(pretrain_config).read_bytes()
    with pytest.raises(Exception, match="not a StefaLand pretrain output"):
        upload_config(Submission("pretrain-20260101-120000-0a1b2c", "ns", runs, f"{runs}/config.yaml", config, []))
    fs.invalidate_cache()
    assert {k: fs.cat(k) for k in others} == others and not fs.exists(f"{bucket}/runs/config.yaml")
    assert not fs.exists(f"{bucket}/runs.lock")

    # a new prefix: submit marks it before the config; a live writer makes submit refuse
    out = f"{s3_bucket}/runs/new"
    upload_config(Submission("pretrain-20260101-120000-0a1b2c", "ns", out, f"{out}/config.yaml", config, []))
    assert output_kind(out) == ("folder", "pretrain")
    with claim_output(out, "pretrain", resumable=True):
        with pytest.raises(Exception, match="being written by host"):
            upload_config(Submission("pretrain-20260101-130000-1a1b2c", "ns", out, f"{out}/config.yaml", config, []))


# -- the small guards ---------------------------------------------------------------------------------

def test_an_absurd_shard_size_is_one_line_before_anything_is_read(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(tmp_path / "no-catalog"), "--out", str(out),
                                      "--shard-size", str(10**11), "--quiet"])
    one_line_error(result, "--shard-size", "1<=x<=100000")
    assert not out.exists()


@pytest.mark.parametrize("field", ["dropout", "init_range"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_model_config_refuses_non_finite_numbers(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        ModelConfig(**{field: value})


def test_pretraining_exclusion_split_file_of_another_scheme_is_one_line(store: str, pretrain_config: str,
                                                                        tmp_path: Path) -> None:
    sites = [str(s) for s in open_store(store)["site"].values]
    split_file = tmp_path / "pub.csv"
    folds = pd.Series(np.arange(len(sites)) % 2 + 1, index=pd.Index(sites, name="site"), dtype="int16")
    write_split(Split(folds=folds, task="camels", scheme="pub", seed=0, fold_names={1: "a", 2: "b"}), str(split_file))
    raw = yaml.safe_load(Path(pretrain_config).read_text())
    raw["data"]["exclude"] = {"split": "pur", "fold": 1, "split_file": str(split_file)}
    config = tmp_path / "exclude.yaml"
    config.write_text(yaml.safe_dump(raw))
    one_line_error(_pretrain(store, str(config), str(tmp_path / "run")), str(split_file), "scheme is 'pub'",
                    "data.exclude.split is 'pur'")
