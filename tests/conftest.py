"""Shared fixtures: paths to the real sample data and a real S3 server on loopback."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from _seaweed import S3Server, seaweed_server

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the suite's tensors are tiny, and on 2 shared cores threads only contend."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
SHARED_DATA = Path(os.environ.get("STEFALAND_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"real sample data not found at {SHARED_DATA} (set STEFALAND_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the standard AWS variables at the loopback server for this test."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture()
def s3_bucket(s3_env: S3Server) -> str:
    """A fresh, empty bucket URL (``s3://name``) on the loopback server."""
    import s3fs

    name = f"t-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key,
                           secret=s3_env.secret_key, skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def virtual_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small virtual world (24 sites × 3 years) in CAMELS formats; returns its catalog path."""
    from stefaland.synth import write_virtual_world

    return write_virtual_world(tmp_path_factory.mktemp("world") / "world", n_sites=24, years=3, seed=7, quiet=True)


@pytest.fixture(scope="session")
def virtual_store(virtual_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The virtual world built into a complete store (shards of 8 sites). Treat it as read-only."""
    from stefaland.assemble import build_store

    out = tmp_path_factory.mktemp("store") / "world.zarr"
    build_store(str(virtual_world), str(out), shard_size=8, quiet=True)
    return out


@pytest.fixture(scope="module")
def camels_sample_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 19 sample basins (NLDAS forcing, streamflow with -999 gaps) beside the 671-basin tables,
    in CAMELS' own layout — linked, not copied."""
    from _camels_sample import link_camels_sample

    return link_camels_sample(shared_data, tmp_path_factory.mktemp("camels"))


@pytest.fixture(scope="session")
def miniature_products(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stefaland data synth DIR --products`: every Table C1 product in its provider's layout, once
    per session, 2017-2018 so that the real ISMN sample's dates (2017-08..2018-08) are covered."""
    from click.testing import CliRunner

    from stefaland_cli.main import cli

    root = tmp_path_factory.mktemp("products") / "global"
    result = CliRunner().invoke(cli, ["data", "synth", str(root), "--products", "--sites", "40", "--years", "2",
                                      "--start-year", "2017", "--quiet"])
    assert result.exit_code == 0, result.output
    return root
