"""A build killed with SIGKILL leaves a store that refuses to open, and a re-run completes it with
exactly the arrays of an uninterrupted build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stefaland.assemble import build_store
from stefaland.errors import StefaLandError
from stefaland.store import open_store

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "1",
        "--start", "1994-01-01", "--end", "2013-09-30", "--quiet"]


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "stefaland_cli.main", "data", "build",
            "--catalog", str(REPO / "catalog" / "camels.yaml"), "--out", str(out), *ARGS]


def _shards_done(out: Path) -> int:
    state = Path(str(out) + ".build-state.json")
    try:
        return len(json.loads(state.read_text())["done"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_killed_build_resumes_to_the_same_store(camels_sample_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CAMELS_ROOT": str(camels_sample_root)}
    killed = tmp_path / "killed.zarr"
    process = subprocess.Popen(_command(killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _shards_done(killed) < 3:
        assert process.poll() is None, f"build ended before it could be killed: {process.communicate()}"
        assert time.monotonic() < deadline, "build made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = _shards_done(killed)
    assert 3 <= done_at_kill < 19

    with pytest.raises(StefaLandError, match="incomplete"):
        open_store(str(killed))

    resumed = subprocess.run(_command(killed), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{19 - done_at_kill} of 19 shards written" in resumed.stdout

    os.environ["CAMELS_ROOT"] = str(camels_sample_root)
    try:
        clean = tmp_path / "clean.zarr"
        build_store(str(REPO / "catalog" / "camels.yaml"), str(clean), shard_size=1,
                    sources=["forcing_nldas", "attributes", "streamflow"], start="1994-01-01", end="2013-09-30", quiet=True)
    finally:
        del os.environ["CAMELS_ROOT"]
    a, b = open_store(str(killed)), open_store(str(clean))
    for name in ("dynamic", "target", "static", "dynamic_mean", "dynamic_std", "target_mean", "static_std"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert list(a["site"].values) == list(b["site"].values)
    assert not Path(str(killed) + ".build-state.json").exists()
