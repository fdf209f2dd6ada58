"""One line, never a traceback: each failure seen as a traceback, reproduced with the
real CLI in a subprocess (real S3 server, real files, real kubeconfig parsing), must print exactly
one ``error:`` line on stderr naming what is wrong and what to do; ``-v`` keeps the traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from _guarded import clean_env, cli_subprocess
from _seaweed import S3Server

REPO = Path(__file__).resolve().parents[1]
READ_ONLY = Path("/sys")  # sysfs refuses new entries, to root too (a chmod'ed folder does not stop root)


def stefaland(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return cli_subprocess(*args, env=env, timeout=timeout)


def one_line(process: subprocess.CompletedProcess, *expected: str) -> str:
    """The single ``error:`` line; fails on a traceback, a second error line, or exit status 0."""
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert process.returncode == 1 and len(errors) == 1, process.stderr[-3000:]
    others = [line for line in process.stderr.splitlines() if line.strip() and not line.startswith("error:")]
    assert all("WARNING" in line or line.startswith(" ") for line in others), process.stderr  # only log warnings
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- S3 ------------------------------------------------------------------------------------------

def test_s3_wrong_secret_is_one_line(s3_bucket: str, s3_env: S3Server, tmp_path: Path) -> None:
    env = clean_env(**{**s3_env.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    line = one_line(stefaland("data", "build", "--catalog", f"{s3_bucket}/catalog.yaml", "--out",
                              str(tmp_path / "s.zarr"), "--quiet", env=env),
                    "refused the request", f"{s3_bucket}/catalog.yaml", "AWS_SECRET_ACCESS_KEY")
    assert "not-the-secret" not in line  # never echo a credential


def test_s3_unknown_access_key_on_report_output_is_one_line(s3_bucket: str, s3_env: S3Server, tmp_path: Path) -> None:
    env = clean_env(**{**s3_env.env(), "AWS_ACCESS_KEY_ID": "nobody"})
    one_line(stefaland("report", "camels", "--runs", f"{s3_bucket}/runs", "--quiet", env=env),
             "refused the request", s3_env.endpoint)


def test_no_s3_credentials_is_one_line(s3_bucket: str, s3_env: S3Server) -> None:
    env = clean_env(AWS_ENDPOINT_URL=s3_env.endpoint, AWS_DEFAULT_REGION="us-east-1")
    one_line(stefaland("report", "camels", "--runs", f"{s3_bucket}/runs", "--quiet", env=env),
             "no S3 credentials found", "AWS_ACCESS_KEY_ID")


def test_unreachable_s3_endpoint_is_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = clean_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b",
                     AWS_DEFAULT_REGION="us-east-1")
    one_line(stefaland("data", "build", "--catalog", "s3://bucket/catalog.yaml", "--out", str(tmp_path / "s.zarr"),
                       "--quiet", env=env), "cannot reach the S3 endpoint", endpoint, "AWS_ENDPOINT_URL")


# -- paths ---------------------------------------------------------------------------------------

def test_read_only_out_is_one_line(virtual_world: Path) -> None:
    target = READ_ONLY / "stefaland-test.zarr"
    one_line(stefaland("data", "build", "--catalog", str(virtual_world), "--out", str(target), "--quiet"),
             str(target))
    assert not target.exists()


def test_read_only_report_out_is_one_line(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from stefaland.report import write_predictions

    rng = np.random.default_rng(0)
    for fold in range(1, 11):
        write_predictions(str(tmp_path / "runs" / f"{fold}.nc"), rng.random((2, 40)), rng.random((2, 40)),
                          [f"s{fold}a", f"s{fold}b"], pd.date_range("2001-01-01", periods=40), "camels", "pub",
                          fold, "M", "mm/day")
    target = READ_ONLY / "stefaland-report"
    one_line(stefaland("report", "camels", "--runs", str(tmp_path / "runs"), "--out", str(target), "--format", "csv",
                       "--quiet"), str(target))


def test_a_file_in_the_out_path_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a user's file\n")
    out = tmp_path / "afile" / "run"
    one_line(stefaland("pretrain", "--store", str(virtual_store), "--config", str(REPO / "configs" / "pretrain_tiny.yaml"),
                       "--out", str(out), "--quiet"), str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "a user's file\n"  # untouched


def test_a_folder_as_catalog_or_config_is_one_line(virtual_world: Path, virtual_store: Path, tmp_path: Path) -> None:
    folder = virtual_world.parent
    one_line(stefaland("data", "build", "--catalog", str(folder), "--out", str(tmp_path / "s.zarr"), "--quiet"),
             str(folder), "folder")
    one_line(stefaland("pretrain", "--store", str(virtual_store), "--config", str(REPO / "configs"),
                       "--out", str(tmp_path / "run"), "--quiet"), str(REPO / "configs"), "folder")


# -- Kubernetes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("unclosed", "apiVersion: v1\nclusters: [[[\n"),
    ("wrong_types", "apiVersion: v1\nclusters: 5\ncontexts: 7\ncurrent-context: x\n"),
    ("a_list", "- a\n- b\n"),
    ("binary", "\x00\xff\xfe garbage"),
])
def test_a_malformed_kubeconfig_is_one_line(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    one_line(stefaland("jobs", "list", env=clean_env(KUBECONFIG=str(path))), str(path), "kubeconfig")


# -- sizes ---------------------------------------------------------------------------------------

def test_an_absurd_shard_size_is_one_line(virtual_world: Path, tmp_path: Path) -> None:
    one_line(stefaland("data", "build", "--catalog", str(virtual_world), "--out", str(tmp_path / "s.zarr"),
                       "--shard-size", "100000000000", "--quiet"), "--shard-size")


def test_seq_len_above_max_len_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "long.yaml"
    config.write_text((REPO / "configs" / "pretrain_tiny.yaml").read_text().replace("seq_len: 60", "seq_len: 5000"))
    one_line(stefaland("pretrain", "--store", str(virtual_store), "--config", str(config), "--out",
                       str(tmp_path / "run")), "data.seq_len (5000) exceeds model.max_len (1000)")


# -- -v keeps the traceback ----------------------------------------------------------------------

def test_verbose_keeps_the_traceback(virtual_world: Path) -> None:
    process = stefaland("-v", "data", "build", "--catalog", str(virtual_world.parent), "--out", "/tmp/never.zarr")
    assert process.returncode != 0
    assert "Traceback" in process.stderr and "IsADirectoryError" in process.stderr
