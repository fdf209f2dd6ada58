"""The virtual world builds to local disk and to a real S3 server with identical arrays, and the
store holds what the world's files hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import s3fs
from click.testing import CliRunner

from stefaland.store import open_store, read_shard, shard_slices
from stefaland_cli.main import cli

from _seaweed import S3Server


def test_local_and_s3_builds_of_the_virtual_world_are_identical(
    virtual_world: Path, virtual_store: Path, s3_bucket: str, s3_env: S3Server
) -> None:
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    fs.put(str(virtual_world.parent), f"{bucket}/world", recursive=True)
    remote_catalog = f"{s3_bucket}/world/{virtual_world.name}"
    remote_store = f"{s3_bucket}/stores/world.zarr"
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", remote_catalog, "--out", remote_store,
                                      "--shard-size", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    remote, local = open_store(remote_store), open_store(str(virtual_store))
    assert remote.sizes == local.sizes
    for name in ("dynamic", "target", "static", "dynamic_mean", "dynamic_std", "target_mean", "static_std"):
        np.testing.assert_array_equal(remote[name].values, local[name].values, err_msg=name)
    for coord in ("site", "region", "fold_pub", "fold_pur", "lat", "lon"):
        np.testing.assert_array_equal(remote[coord].values, local[coord].values, err_msg=coord)


def test_store_matches_the_world_files(virtual_world: Path, virtual_store: Path) -> None:
    ds = open_store(str(virtual_store))
    site = str(ds["site"].values[5])
    forcing = next(virtual_world.parent.glob(f"basin_mean_forcing/synthetic/*/{site}_*.txt"))
    frame = pd.read_csv(forcing, sep=r"\s+", skiprows=3)
    row = frame.iloc[200]
    day = pd.Timestamp(year=int(row["Year"]), month=int(row["Mnth"]), day=int(row["Day"]))
    assert float(ds["dynamic"].sel(site=site, time=day, dvar="tmax")) == np.float32(row["tmax(C)"])
    assert float(ds["dynamic"].sel(site=site, time=day, dvar="prcp")) == np.float32(row["prcp(mm/day)"])
    folds = pd.read_csv(virtual_world.parent / "camels_attributes_v2.0" / "synthetic_folds.txt", sep=";", dtype=str)
    expected_fold = int(folds.set_index("gauge_id").loc[site, "pub_fold"])
    assert int(ds["fold_pub"].sel(site=site)) == expected_fold
    assert set(np.unique(ds["fold_pub"].values)) <= set(range(1, 11))  # 1-based folds
    texture = ds["static"].sel(site=site, svar=["sand_frac", "silt_frac", "clay_frac"]).values
    assert abs(float(texture.sum()) - 1.0) < 1e-3  # percent in the files, fractions in the store


def test_a_shard_is_one_chunk_of_sites(virtual_store: Path) -> None:
    ds = open_store(str(virtual_store))
    slices = shard_slices(ds)
    assert [s.stop - s.start for s in slices] == [8, 8, 8]
    shard = read_shard(ds, 1)
    assert shard.dynamic.shape == (8, ds.sizes["time"], ds.sizes["dvar"])
    assert list(shard.sites) == list(ds["site"].values[8:16])
    np.testing.assert_array_equal(shard.static, ds["static"].values[8:16])
