"""The same sources built to local disk and to a real S3 server (SeaweedFS on loopback) give identical
stores, with sources and catalog read from object storage too, and no credential in the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import s3fs
from click.testing import CliRunner

from stefaland.store import open_store
from stefaland_cli.main import cli

from _seaweed import S3Server

REPO = Path(__file__).resolve().parents[1]
BASINS = ["01013500", "01022500", "05291000", "09386900", "12010000"]


def _upload_camels_subset(shared_data: Path, fs: s3fs.S3FileSystem, prefix: str) -> None:
    sample = shared_data / "camels_us_sample18"
    for gauge in BASINS:
        for path in list(sample.glob(f"basin_mean_forcing/nldas/*/{gauge}_*")) + list(sample.glob(f"usgs_streamflow/*/{gauge}_*")):
            fs.put_file(str(path), f"{prefix}/{path.relative_to(sample)}")
    for path in (shared_data / "camels_us" / "camels_attributes_v2.0").glob("camels_*.txt"):
        fs.put_file(str(path), f"{prefix}/camels_attributes_v2.0/{path.name}")


def test_local_and_s3_builds_are_identical(shared_data: Path, s3_bucket: str, s3_env: S3Server, tmp_path: Path) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    _upload_camels_subset(shared_data, fs, f"{bucket}/camels")
    catalog_text = (REPO / "catalog" / "camels.yaml").read_text().replace('"env(CAMELS_ROOT)"', f'"{s3_bucket}/camels"')
    fs.pipe(f"{bucket}/catalogs/camels.yaml", catalog_text.encode())
    catalog_url = f"{s3_bucket}/catalogs/camels.yaml"
    common = ["--catalog", catalog_url, "--quiet", "--sources", "forcing_nldas,attributes,streamflow",
              "--shard-size", "2", "--start", "2000-01-01", "--end", "2013-09-30"]
    runner = CliRunner()
    remote_url = f"{s3_bucket}/stores/camels.zarr"
    remote = runner.invoke(cli, ["data", "build", "--out", remote_url, *common])
    assert remote.exit_code == 0, remote.output
    local = runner.invoke(cli, ["data", "build", "--out", str(tmp_path / "camels.zarr"), *common])
    assert local.exit_code == 0, local.output

    a, b = open_store(remote_url), open_store(str(tmp_path / "camels.zarr"))
    assert sorted(a["site"].values) == sorted(BASINS)
    for name in ("dynamic", "target", "static", "dynamic_mean", "target_std", "static_mean"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert np.isfinite(a["dynamic"].values).mean() > 0.99

    everything = b"".join(fs.cat(p) for p in fs.find(f"{bucket}/stores") if p.endswith(".json"))
    assert s3_env.secret_key.encode() not in everything and s3_env.access_key.encode() not in everything
    assert json.loads(fs.cat(f"{bucket}/stores/camels.zarr/zarr.json"))["attributes"]["stefaland_complete"] is True
