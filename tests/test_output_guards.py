"""Commands that write never delete or overwrite what StefaLand did not create, locally and on S3;
a previous output is replaced only with --force; two writers to one --out never both proceed.

Each refusal is one line naming the path, exit status 1, and the guarded data survives byte for byte.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import s3fs
import xarray as xr
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.outputs import claim_output, lock_url, output_kind
from stefaland.predict.write import write_dataset
from stefaland.store import open_store
from stefaland.synth import write_virtual_world
from stefaland_cli.main import cli

from _guarded import one_line_error, snapshot
from _seaweed import S3Server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_virtual_world(tmp_path_factory.mktemp("guards") / "world", n_sites=6, years=1, seed=3, quiet=True)


def _build(world: Path, out: str, *extra: str):
    return CliRunner().invoke(cli, ["data", "build", "--catalog", str(world), "--out", out, "--shard-size", "2",
                                    "--quiet", *extra])


def _user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("three years of work\n")
    (path / "sub" / "data.bin").write_bytes(os.urandom(4096))
    return path


class TestLocalGuards:
    def test_build_refuses_a_folder_of_unrelated_files(self, world: Path, tmp_path: Path) -> None:
        folder = _user_folder(tmp_path / "mine")
        before = snapshot(folder)
        one_line_error(_build(world, str(folder)), str(folder), "not a StefaLand store")
        one_line_error(_build(world, str(folder), "--force"), str(folder), "not a StefaLand store")
        assert snapshot(folder) == before
        assert not Path(str(folder) + ".lock").exists()

    def test_build_refuses_a_plain_file(self, world: Path, tmp_path: Path) -> None:
        target = tmp_path / "notes.zarr"
        target.write_bytes(b"not a store")
        one_line_error(_build(world, str(target), "--force"), str(target), "a file")
        assert target.read_bytes() == b"not a store"

    def test_a_store_is_replaced_only_with_force_and_nothing_beside_it(self, world: Path, tmp_path: Path) -> None:
        out = tmp_path / "w.zarr"
        assert _build(world, str(out)).exit_code == 0
        assert output_kind(str(out)) == ("folder", "store")
        sibling, backup = _user_folder(tmp_path / "w.zarr2"), tmp_path / "w.zarr.bak"
        backup.write_text("keep me")
        before, siblings = snapshot(out), (snapshot(sibling), backup.read_bytes())
        again = _build(world, str(out))
        assert again.exit_code == 0 and "up to date" in again.output
        other = _build(world, str(out), "--shard-size", "3")
        one_line_error(other, str(out), "another catalog or other options", "--force")
        assert snapshot(out) == before
        forced = _build(world, str(out), "--shard-size", "3", "--force")
        assert forced.exit_code == 0, forced.output
        assert open_store(str(out)).attrs["shard_size"] == 3
        assert (snapshot(sibling), backup.read_bytes()) == siblings

    def test_embed_refuses_a_user_folder_before_loading_anything(self, tmp_path: Path) -> None:
        folder = _user_folder(tmp_path / "emb.zarr")
        before = snapshot(folder)
        result = CliRunner().invoke(cli, ["embed", str(tmp_path / "no-checkpoint"), "--store", str(tmp_path / "s"),
                                          "--out", str(folder), "--force"])
        one_line_error(result, str(folder), "not a StefaLand embed")
        assert snapshot(folder) == before

    def test_predictions_never_replace_a_foreign_file_and_replace_their_own_only_with_force(self, tmp_path: Path) -> None:
        dataset = xr.Dataset({"sim": (("site",), np.ones(2, np.float32))}, coords={"site": ["a", "b"]})
        theirs = tmp_path / "theirs.nc"
        xr.Dataset({"x": (("y",), [1.0])}).to_netcdf(theirs, engine="h5netcdf")
        before = theirs.read_bytes()
        with pytest.raises(StefaLandError, match="not a StefaLand predict"):
            write_dataset(dataset, str(theirs), force=True)
        assert theirs.read_bytes() == before
        for suffix in (".nc", ".zarr"):
            ours = str(tmp_path / f"ours{suffix}")
            write_dataset(dataset, ours)
            with pytest.raises(StefaLandError, match="already exists; pass --force"):
                write_dataset(dataset, ours)
            write_dataset(dataset * 2, ours, force=True)
            assert output_kind(ours)[1] == "predict"

    def test_a_second_writer_is_told_who_writes(self, world: Path, tmp_path: Path) -> None:
        out = tmp_path / "busy.zarr"
        with claim_output(str(out), "store"):
            result = _build(world, str(out))
            one_line_error(result, str(out), "being written by host", f"pid {os.getpid()}")
        assert not out.exists() and not Path(lock_url(str(out))).exists()

    def test_a_lock_left_by_a_dead_process_is_taken_over(self, world: Path, tmp_path: Path) -> None:
        out = tmp_path / "stale.zarr"
        Path(lock_url(str(out))).write_text(json.dumps(
            {"host": socket.gethostname(), "pid": 2**22 + 12345, "started": "2020-01-01T00:00:00+00:00",
             "started_unix": 0, "heartbeat_unix": 0, "token": "dead"}))
        result = _build(world, str(out))
        assert result.exit_code == 0, result.output
        assert not Path(lock_url(str(out))).exists()


class TestS3Guards:
    @staticmethod
    def _fs(server: S3Server) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(endpoint_url=server.endpoint, key=server.access_key, secret=server.secret_key,
                                 skip_instance_cache=True)

    def test_prefix_with_other_runs_bucket_root_and_siblings_survive(self, world: Path, s3_bucket: str,
                                                                      s3_env: S3Server) -> None:
        fs = self._fs(s3_env)
        bucket = s3_bucket.removeprefix("s3://")
        others = {f"{bucket}/runs/a/model.pt": b"weights-a", f"{bucket}/runs/b/log.txt": b"log-b",
                  f"{bucket}/stores/w.zarr2/x": b"sibling", f"{bucket}/stores/w.zarr.bak": b"backup"}
        for key, data in others.items():
            fs.pipe(key, data)
        one_line_error(_build(world, f"{s3_bucket}/runs", "--force"), f"{s3_bucket}/runs", "not a StefaLand store")
        one_line_error(_build(world, s3_bucket, "--force"), s3_bucket, "whole bucket")
        out = f"{s3_bucket}/stores/w.zarr"
        assert _build(world, out).exit_code == 0
        one_line_error(_build(world, out, "--shard-size", "3"), out, "--force")
        assert _build(world, out, "--shard-size", "3", "--force").exit_code == 0
        fs.invalidate_cache()
        assert {k: fs.cat(k) for k in others} == others
        assert open_store(out).attrs["shard_size"] == 3
        assert not fs.exists(f"{bucket}/stores/w.zarr.lock")

    def test_s3_lock_turns_the_second_writer_away(self, world: Path, s3_bucket: str, s3_env: S3Server) -> None:
        out = f"{s3_bucket}/busy.zarr"
        with claim_output(out, "store"):
            one_line_error(_build(world, out), out, "being written by host")
        fs = self._fs(s3_env)
        assert not fs.exists(f"{s3_bucket.removeprefix('s3://')}/busy.zarr.lock")
        assert not fs.find(f"{s3_bucket.removeprefix('s3://')}/busy.zarr/")
