"""``data build`` of a gridded virtual world on the fast path: a gridded source's shards
are extracted with the sites sorted spatially and computed one task per batch on the dask cluster
(``SourceReader.read_shards``), then written in the store's own order. The store must be the one
the synchronous scheduler builds, and the one a shard-by-shard read builds, value for value;
an interrupted build resumes shard by shard to the same store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stefaland.assemble import build as build_module
from stefaland.assemble import build_store
from stefaland.assemble.state import BuildState
from stefaland.catalog.readers import SourceReader
from stefaland.store import open_store
from stefaland_cli.main import cli

SHARD = 8
COMPARED = ("dynamic", "target", "static", "dynamic_mean", "dynamic_std", "target_mean", "target_std", "static_mean",
            "static_std")


@pytest.fixture(scope="module")
def gridded_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gridded_world") / "world"
    result = CliRunner().invoke(cli, ["data", "synth", str(out), "--sites", "28", "--years", "1", "--gridded"])
    assert result.exit_code == 0, result.output
    (catalog,) = out.glob("*.yaml")
    return catalog


@pytest.fixture(scope="module")
def sync_store(gridded_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sync") / "store.zarr"
    build_store(str(gridded_world), str(out), shard_size=SHARD, quiet=True, scheduler="sync")
    return out


def assert_same_store(a_path: Path, b_path: Path) -> None:
    a, b = open_store(str(a_path)), open_store(str(b_path))
    assert a.sizes == b.sizes
    for name in COMPARED:
        if name in a:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for coord in ("site", "time", "dvar", "svar", "region", "fold_pub", "fold_pur", "lat", "lon"):
        if coord in a.coords:
            np.testing.assert_array_equal(a[coord].values, b[coord].values, err_msg=coord)


def test_local_cluster_build_equals_the_synchronous_one(gridded_world: Path, sync_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "local.zarr"
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(gridded_world), "--out", str(out),
                                      "--shard-size", str(SHARD), "--scheduler", "local", "--quiet"])
    assert result.exit_code == 0, result.output
    store = open_store(str(out))
    assert any(str(v).startswith("grid_") for v in store["dvar"].values)  # a gridded forcing is in the store
    assert np.isfinite(store["dynamic"].values).any()
    assert_same_store(out, sync_store)


def test_fast_path_equals_the_shard_by_shard_path(gridded_world: Path, sync_store: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each shard read on its own (``SourceReader.read``, shard by shard): same store."""
    monkeypatch.setattr(SourceReader, "read_shards", lambda self, shards, time: (self.read(s, time) for s in shards))
    out = tmp_path / "before.zarr"
    build_store(str(gridded_world), str(out), shard_size=SHARD, quiet=True, scheduler="sync")
    assert_same_store(out, sync_store)


def test_interrupted_gridded_build_resumes_shard_by_shard(gridded_world: Path, sync_store: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "resumed.zarr"
    written: list[int] = []
    write_shard = build_module.write_shard

    def failing(group, block, rows, values):
        if block == "dynamic" and len(written) == 2:
            raise KeyboardInterrupt("killed")
        if block == "dynamic":
            written.append(rows.start)
        return write_shard(group, block, rows, values)

    monkeypatch.setattr(build_module, "write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        build_store(str(gridded_world), str(out), shard_size=SHARD, quiet=True, scheduler="sync")
    assert sorted(BuildState.load(str(out)).done) == [0, 1]
    monkeypatch.setattr(build_module, "write_shard", write_shard)
    summary = build_store(str(gridded_world), str(out), shard_size=SHARD, quiet=True, scheduler="sync")
    assert summary.shards_written == summary.n_shards - 2
    assert_same_store(out, sync_store)
    again = build_store(str(gridded_world), str(out), shard_size=SHARD, quiet=True, scheduler="sync")
    assert again.up_to_date  # the integrity record and fingerprint of the resumed store check out
