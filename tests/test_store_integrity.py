"""A damaged store (flipped bytes, deleted or truncated chunk, lost record) stops whoever opens or
reads it with one line naming the array and shard, and ``stefaland store verify`` finds it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import s3fs
import xarray as xr
from click.testing import CliRunner

from stefaland.assemble import build_store
from stefaland.errors import StefaLandError
from stefaland.store import open_store, read_shard
from stefaland_cli.main import cli

from _guarded import one_line_error
from _seaweed import S3Server


@pytest.fixture(scope="module")
def built(virtual_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "world.zarr"
    build_store(str(virtual_world), str(out), shard_size=8, quiet=True)  # 24 sites: shards 0, 1, 2
    return out


@pytest.fixture()
def store(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(built, copy)
    return copy


def _verify(url: str):
    return CliRunner().invoke(cli, ["store", "verify", url])


def _flip(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_intact_store_verifies_and_opens(store: Path) -> None:
    result = _verify(str(store))
    assert result.exit_code == 0 and "intact" in result.output, result.output
    assert read_shard(open_store(str(store)), 2).dynamic.shape[0] == 8


def test_flipped_bytes_stop_the_reader_and_verify_naming_array_and_shard(store: Path) -> None:
    _flip(store / "dynamic" / "c" / "1" / "0" / "0")
    before = (store / "dynamic" / "c" / "1" / "0" / "0").read_bytes()
    dataset = open_store(str(store))  # same sizes: the cheap open check cannot see it ...
    read_shard(dataset, 0)  # ... and the intact shards stay readable
    with pytest.raises(StefaLandError, match=r"array dynamic shard 1 \(chunk dynamic/c/1/0/0\) fails its checksum"):
        read_shard(dataset, 1)
    with pytest.raises(StefaLandError, match="array dynamic shard 1"):  # finetuning reads site subsets this way
        _ = dataset.isel(site=[3, 9, 20])["dynamic"].values
    one_line_error(_verify(str(store)), "array dynamic shard 1", "checksum")
    with pytest.raises(Exception):  # noqa: B017 - even plain xarray cannot decode it (the chunks carry crc32c); zarr picks the type
        _ = xr.open_zarr(store, consolidated=False)["dynamic"].values
    assert (store / "dynamic" / "c" / "1" / "0" / "0").read_bytes() == before


def test_a_deleted_chunk_stops_open_instead_of_reading_nan(store: Path) -> None:
    (store / "target" / "c" / "2" / "0" / "0").unlink()
    with pytest.raises(StefaLandError, match=r"array target shard 2 \(chunk target/c/2/0/0\) is missing"):
        open_store(str(store))
    one_line_error(_verify(str(store)), "array target shard 2", "missing")


def test_a_truncated_chunk_and_a_lost_record_are_refused(store: Path) -> None:
    chunk = store / "static" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    with pytest.raises(StefaLandError, match="array static shard 0 .* bytes"):
        open_store(str(store))
    shutil.rmtree(store / ".stefaland")
    with pytest.raises(StefaLandError, match="integrity record is missing"):
        open_store(str(store))
    one_line_error(_verify(str(store)), "not a StefaLand store")


def test_a_damaged_store_stops_a_command_that_trains_on_it(store: Path, tmp_path: Path) -> None:
    (store / "dynamic" / "c" / "0" / "0" / "0").unlink()
    config = tmp_path / "pretrain.yaml"
    config.write_text("train:\n  epochs: 1\n")
    result = CliRunner().invoke(cli, ["pretrain", "--store", str(store), "--config", str(config),
                                      "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code != 0
    assert "array dynamic shard 0" in result.output and "Traceback" not in result.output, result.output


def test_a_damaged_store_on_s3_is_found_by_verify(virtual_world: Path, s3_bucket: str, s3_env: S3Server) -> None:
    url = f"{s3_bucket}/world.zarr"
    build_store(str(virtual_world), url, shard_size=8, quiet=True)
    assert _verify(url).exit_code == 0
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    key = f"{s3_bucket.removeprefix('s3://')}/world.zarr/dynamic/c/2/0/0"
    data = bytearray(fs.cat(key))
    data[len(data) // 2] ^= 0x01
    fs.pipe(key, bytes(data))
    one_line_error(_verify(url), "array dynamic shard 2", "checksum")
    with pytest.raises(StefaLandError, match="array dynamic shard 2"):
        read_shard(open_store(url), 2)
    assert np.isfinite(read_shard(open_store(url), 1).static).any()
