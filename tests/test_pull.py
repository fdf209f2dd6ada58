"""``stefaland pull`` and ``write_run_manifest`` against a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import s3fs
import xarray as xr
from click.testing import CliRunner

from stefaland.k8s import client as kube
from stefaland.k8s.manifests import PodOptions, pretrain_objects
from stefaland.pull import MANIFEST, write_run_manifest
from stefaland_cli.main import cli

from _k8s_api_server import fake_api_server


def s3() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def predictions_netcdf(path: Path) -> bytes:
    xr.Dataset({"streamflow": (("site", "time"), np.random.default_rng(0).random((2, 30)).astype("float32"))},
               coords={"site": ["01013500", "01022500"]}).to_netcdf(path, engine="h5netcdf")
    return path.read_bytes()


@pytest.fixture()
def run_files(tmp_path: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(42)
    return {
        "config.yaml": b"model: {d_model: 64}\n",
        "checkpoints/ckpt-000100.pt": rng.bytes(300_000),
        "checkpoints/ckpt-000200.pt": rng.bytes(300_000),
        "checkpoints/latest.json": b'{"checkpoint": "ckpt-000200.pt", "step": 200}',
        "predictions/fold-0.nc": predictions_netcdf(tmp_path / "p.nc"),
        "metrics.csv": b"site,nse,kge\n01013500,0.71,0.65\n",
    }


@pytest.fixture()
def run_url(s3_bucket: str, run_files: dict[str, bytes]) -> str:
    url = f"{s3_bucket}/runs/pretrain-20260101-120000-0a1b2c"
    fs = s3()
    for relative, data in run_files.items():
        fs.pipe_file(f"{url}/{relative}".removeprefix("s3://"), data)
    return url


def pull(*args: str):
    return CliRunner().invoke(cli, ["pull", *args, "-q"])


def test_manifest_lists_every_file_with_its_size_and_sha256(run_url, run_files):
    manifest = write_run_manifest(run_url)
    stored = json.loads(s3().cat(f"{run_url}/{MANIFEST}".removeprefix("s3://")))
    assert stored["files"] == manifest["files"]
    assert {e["path"]: (e["size"], e["sha256"]) for e in stored["files"]} == {
        path: (len(data), hashlib.sha256(data).hexdigest()) for path, data in run_files.items()}


def test_pull_downloads_verifies_and_prints_where(run_url, run_files, tmp_path):
    write_run_manifest(run_url)
    target = tmp_path / "local"
    result = pull(run_url, "--to", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target.resolve())
    for relative, data in run_files.items():
        assert (target / relative).read_bytes() == data
    # every file, and the manifest itself, checked by sha256; nothing by size only
    assert result.stderr.strip().endswith(f"verified {len(run_files) + 1} by sha256 (manifest.json)")
    with xr.open_dataset(target / "predictions/fold-0.nc", engine="h5netcdf") as predictions:
        assert predictions["streamflow"].shape == (2, 30)
    again = pull(run_url, "--to", str(target))  # nothing to fetch the second time
    assert again.exit_code == 0
    assert f"0 downloaded, {len(run_files) + 1} already present" in again.stderr


def test_pull_refuses_a_file_that_does_not_match_the_manifest(run_url, run_files, tmp_path):
    write_run_manifest(run_url)
    damaged = bytearray(run_files["checkpoints/ckpt-000200.pt"])
    damaged[1000] ^= 0xFF  # same size, one byte flipped: only the checksum can tell
    s3().pipe_file(f"{run_url}/checkpoints/ckpt-000200.pt".removeprefix("s3://"), bytes(damaged))
    target = tmp_path / "local"
    result = pull(run_url, "--to", str(target))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {run_url}/checkpoints/ckpt-000200.pt: sha256 ")
    assert not (target / "checkpoints/ckpt-000200.pt").exists()
    assert not list(target.rglob("*.part"))


def test_pull_without_manifest_checks_sizes_and_says_so(run_url, run_files, tmp_path):
    result = pull(run_url, "--to", str(tmp_path / "local"))
    assert result.exit_code == 0, result.output
    assert "all by size only (no manifest.json)" in result.stderr
    assert (tmp_path / "local/checkpoints/latest.json").read_bytes() == run_files["checkpoints/latest.json"]


def test_file_missing_from_storage_but_in_manifest_is_an_error(run_url, tmp_path):
    write_run_manifest(run_url)
    s3().rm_file(f"{run_url}/metrics.csv".removeprefix("s3://"))
    result = pull(run_url, "--to", str(tmp_path / "local"))
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {run_url}/metrics.csv: listed in manifest.json but missing "
                                     "from object storage")


def test_fold_manifests_cover_their_folders(s3_bucket, tmp_path):
    """Finetuning folds write fold-<k>/manifest.json; pull checks fold files against them."""
    url = f"{s3_bucket}/runs/finetune-20260102-090000-6a7b8c"
    fs = s3()
    fs.pipe_file(f"{url}/config.yaml".removeprefix("s3://"), b"task: camels\n")
    for fold in (1, 2):
        fs.pipe_file(f"{url}/fold-{fold}/checkpoints/ckpt-000010.pt".removeprefix("s3://"), os.urandom(5000))
        write_run_manifest(f"{url}/fold-{fold}")
    fs.pipe_file(f"{url}/fold-2/checkpoints/ckpt-000010.pt".removeprefix("s3://"), os.urandom(5000))
    result = pull(url, "--to", str(tmp_path / "ft"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {url}/fold-2/checkpoints/ckpt-000010.pt: sha256 ")


def test_pull_by_run_id_finds_the_folder_through_the_job(run_url, run_files, tmp_path, monkeypatch):
    write_run_manifest(run_url)
    run_id = run_url.rsplit("/", 1)[1]
    with fake_api_server() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(server.kubeconfig())
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        cluster = kube.connect()
        kube.create_run(cluster, pretrain_objects(run_id, "s3://stores/x", f"{run_url}/config.yaml", run_url,
                                                  PodOptions(image="stefaland:test"), cluster.namespace))
        monkeypatch.chdir(tmp_path)
        result = pull(run_id)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(tmp_path / run_id)
        assert (tmp_path / run_id / "metrics.csv").read_bytes() == run_files["metrics.csv"]
        s3().pipe_file(f"{run_url}/metrics.csv".removeprefix("s3://"), b"site,nse\n01013500,0.8\n")
        write_run_manifest(run_url)  # as the trainer does after writing
        again = pull(run_id)  # ./<run id> now exists; the run id must still mean the remote run
        assert again.exit_code == 0, again.output
        assert (tmp_path / run_id / "metrics.csv").read_bytes() == b"site,nse\n01013500,0.8\n"
        missing = pull("pretrain-20990101-000000-ffffff")
        assert missing.exit_code == 1
        assert missing.stderr.strip() == ("error: no jobs of run pretrain-20990101-000000-ffffff in namespace "
                                          "stefaland (fake)")
    garbage = pull("not a run")
    assert garbage.exit_code == 1 and garbage.stderr.startswith("error: 'not a run' is neither")
