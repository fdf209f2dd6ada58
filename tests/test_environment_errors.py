"""What the machine, the cluster or the environment refuses is one ``error:``
line naming the flag, variable or file and the rule, never a traceback: a full disk or file-size
limit during ``data build`` (and the resume after it), a model too large to allocate, Kubernetes
names the API server would reject, credentials in ``AWS_ENDPOINT_URL`` (never echoed), and a
``train.device`` this torch build or machine does not have."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from stefaland_cli.main import cli

from _guarded import clean_env, cli_subprocess

REPO = Path(__file__).resolve().parents[1]
TINY_FINETUNE = yaml.safe_load((REPO / "configs" / "finetune_tiny.yaml").read_text())
TINY_PRETRAIN = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
CPU_ONLY_TORCH = torch.version.cuda is None and torch.version.hip is None


def stefaland(*args: str, env: dict[str, str] | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    return cli_subprocess(*args, env=env, preexec_fn=preexec_fn)


def one_line(stderr: str, returncode: int, *expected: str) -> str:
    """The single ``error:`` line of a failed command; fails on a traceback, a second line, exit 0."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_cli_line(result: Result, *expected: str) -> str:
    """As :func:`one_line` for an in-process run: an unhandled exception is the traceback case."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    return one_line(result.stderr, result.exit_code, *expected)


def _config(tmp_path: Path, base: dict, name: str = "run.yaml", **sections: dict) -> Path:
    config = json.loads(json.dumps(base))
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


# -- a full disk during data build ----------------------------------------------------------------

def _file_size_limit(limit: int):
    """``ulimit -f``: writes past ``limit`` bytes fail with EFBIG, as a quota or full disk fails them."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the OSError, not the signal's core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_file_size_limit_during_data_build_is_one_line_and_the_build_resumes(virtual_world: Path,
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    args = ("data", "build", "--catalog", str(virtual_world), "--out", str(out), "--shard-size", "8", "--quiet")
    failed = stefaland(*args, preexec_fn=_file_size_limit(20_000))
    one_line(failed.stderr, failed.returncode, str(out), "file too large", "ulimit -f", "resumes")
    resumed = stefaland(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "3 of 3 shards written" in resumed.stdout + resumed.stderr


def test_a_full_disk_names_the_out_path_when_the_error_has_no_file() -> None:
    import errno

    from stefaland_cli.failures import describe

    for code, words in ((errno.ENOSPC, "no space left"), (errno.EDQUOT, "disk quota exceeded")):
        wrapped = RuntimeError("zarr write failed")
        wrapped.__cause__ = OSError(code, os.strerror(code))
        line = describe(wrapped, ["data", "build", "--out", "/scratch/s.zarr"])
        assert line and line.startswith(f"/scratch/s.zarr: {words}") and "resumes the build" in line


# -- a model too large to allocate ----------------------------------------------------------------

def test_an_impossible_hidden_size_is_refused_with_the_figure(virtual_store: Path, tmp_path: Path) -> None:
    for value, name in ((1_000_000_000, "int.yaml"), (1e9, "float.yaml")):  # 1e9 as a float: 1.0e+09 in YAML
        config = _config(tmp_path, TINY_FINETUNE, name, model={"hidden": value})
        line = one_cli_line(invoke("finetune", "--store", virtual_store, "--config", config, "--out",
                                   tmp_path / "run", "--split", "pub", "--fold", "1", "--quiet"),
                            str(config), "hidden = 1000000000", "EiB", "parameters")
        assert "1.0 TiB" in line
    assert not (tmp_path / "run").exists()


def test_a_hidden_size_beyond_this_machine_names_its_memory(virtual_store: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stefaland.model.config.machine_memory", lambda: 2**30)  # a 1 GiB machine
    hidden = 8192  # 8·hidden² float32 weights = 2 GiB
    config = _config(tmp_path, TINY_FINETUNE, model={"hidden": hidden})
    one_cli_line(invoke("finetune", "--store", virtual_store, "--config", config, "--out", tmp_path / "run",
                        "--split", "pub", "--fold", "1", "--quiet"),
                 f"model.hidden = {hidden}", "2.0 GiB", "this machine has 1.0 GiB of memory")


def test_an_impossible_encoder_is_refused_by_pretrain_and_by_submit(virtual_store: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, TINY_PRETRAIN, model={"d_model": 1_000_000, "n_heads": 2})
    one_cli_line(invoke("pretrain", "--store", virtual_store, "--config", config, "--out", tmp_path / "run",
                        "--quiet"), str(config), "d_model = 1000000", "TiB")
    finetune = _config(tmp_path, TINY_FINETUNE, "finetune.yaml", model={"hidden": 1_000_000_000})
    for kind, extra, path in (("pretrain", [], config),
                              ("finetune", ["--task", "camels", "--split", "pub", "--folds", "1"], finetune)):
        one_cli_line(invoke("submit", kind, *extra, "--config", path, "--store", "s3://b/s", "--out", "s3://b/r",
                            "--dry-run"), str(path), "parameters alone")


# -- Kubernetes names ------------------------------------------------------------------------------

@pytest.fixture()
def submit_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 1}\n")
    return path


@pytest.mark.parametrize("extra, expected", [
    (["--secret", "My_Secret"], ["--secret 'My_Secret'", "DNS-1123 subdomain"]),
    (["--service-account", "../x"], ["--service-account '../x'", "DNS-1123 subdomain"]),
    (["--pvc", "My PVC"], ["--pvc 'My PVC'", "DNS-1123 subdomain"]),
    (["--node-selector", "Bad Key!=gpu"], ["--node-selector", "'Bad Key!'", "label key"]),
    (["--node-selector", "pool=not ok"], ["--node-selector", "pool='not ok'", "label value"]),
    (["--toleration", "bad key:NoSchedule"], ["--toleration", "'bad key'", "label key"]),
    (["--pvc", "data", "--pvc-mount", "/dev/shm"], ["--pvc-mount '/dev/shm'", "collides with /dev/shm"]),
    (["--pvc", "data", "--pvc-mount", "/dev"], ["--pvc-mount '/dev'", "collides with /dev/shm"]),
    (["--pvc", "data", "--pvc-mount", "data"], ["--pvc-mount 'data'", "absolute"]),
    (["--pvc", "data", "--pvc-mount", "/data/../etc"], ["--pvc-mount '/data/../etc'", "absolute"]),
])
def test_names_kubernetes_would_reject_are_one_line(extra: list[str], expected: list[str],
                                                    submit_config: Path) -> None:
    result = invoke("submit", "pretrain", "--config", submit_config, "--store", "s3://b/s", "--out", "s3://b/r",
                    "--dry-run", *extra)
    one_cli_line(result, *expected)
    assert "kind: Job" not in result.stdout


def test_a_config_node_selector_key_is_checked_and_good_names_pass(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 1}\nkubernetes:\n  node_selector: {'Bad Key!': gpu}\n")
    one_cli_line(invoke("submit", "pretrain", "--config", bad, "--store", "s3://b/s", "--out", "s3://b/r",
                        "--dry-run"), str(bad), "kubernetes.node_selector", "'Bad Key!'")
    good = tmp_path / "good.yaml"
    good.write_text("train: {epochs: 1}\n")
    result = invoke("submit", "pretrain", "--config", good, "--store", "/mnt/data/store.zarr", "--out", "s3://b/r",
                    "--secret", "team.s3-creds", "--service-account", "trainer", "--pvc", "shared-data",
                    "--pvc-mount", "/mnt/data/", "--node-selector", "cloud.example.org/pool=gpu_a100",
                    "--toleration", "nvidia.com/gpu:NoSchedule", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "claimName: shared-data" in result.stdout and "serviceAccountName: trainer" in result.stdout


# -- credentials in AWS_ENDPOINT_URL -------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_credentials_in_the_endpoint_are_one_line_and_never_echoed(tmp_path: Path) -> None:
    endpoint = f"http://minio:Sup3rSecretPw@127.0.0.1:{_closed_port()}"
    env = clean_env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b",
                     AWS_DEFAULT_REGION="us-east-1")
    done = stefaland("data", "build", "--catalog", "s3://bucket/catalog.yaml", "--out", str(tmp_path / "s.zarr"),
                     "--quiet", env=env)
    one_line(done.stderr, done.returncode, "AWS_ENDPOINT_URL", "minio:***@127.0.0.1")
    assert "Sup3rSecretPw" not in done.stderr + done.stdout


def test_failure_lines_mask_endpoint_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    from stefaland_cli.failures import describe

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:Sup3rSecretPw@store.example:9000")
    error = EndpointConnectionError(endpoint_url="http://minio:Sup3rSecretPw@store.example:9000/bucket")
    line = describe(error, ["report", "camels", "--runs", "https://me:An0therPw@host/runs"])
    assert line and "minio:***@store.example:9000" in line and "me:***@host/runs" in line
    assert "Sup3rSecretPw" not in line and "An0therPw" not in line


# -- train.device --------------------------------------------------------------------------------

def _finetune_on(device: str, virtual_store: Path, tmp_path: Path) -> Result:
    config = _config(tmp_path, TINY_FINETUNE, train={"device": device})
    return invoke("finetune", "--store", virtual_store, "--config", config, "--out", tmp_path / "run",
                  "--split", "pub", "--fold", "1", "--quiet")


@pytest.mark.skipif(not CPU_ONLY_TORCH, reason="needs a CPU-only torch build")
def test_cuda_on_a_cpu_only_torch_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    one_cli_line(_finetune_on("cuda", virtual_store, tmp_path), "train.device is 'cuda'",
                 "this torch build has no CUDA", f"torch {torch.__version__}", "'auto' or 'cpu'")
    config = _config(tmp_path, TINY_PRETRAIN, "pretrain.yaml", train={"device": "cuda"})
    one_cli_line(invoke("pretrain", "--store", virtual_store, "--config", config, "--out", tmp_path / "pre",
                        "--quiet"), "train.device is 'cuda'", "this torch build has no CUDA")


def test_a_cuda_device_index_beyond_the_machine_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    index = (torch.cuda.device_count() if torch.cuda.is_available() else 0) + 1
    one_cli_line(_finetune_on(f"cuda:{index}", virtual_store, tmp_path), f"train.device is 'cuda:{index}'")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
def test_mps_without_mps_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    one_cli_line(_finetune_on("mps", virtual_store, tmp_path), "train.device is 'mps'", "MPS")


def test_a_device_string_torch_does_not_know_is_one_line(virtual_store: Path, tmp_path: Path) -> None:
    one_cli_line(_finetune_on("gpu0", virtual_store, tmp_path), "train.device is 'gpu0'", "not a torch device")


def test_machine_memory_is_a_sane_figure() -> None:
    from stefaland.model.config import human_bytes, machine_memory

    assert machine_memory() > 2**27 and math.isfinite(machine_memory())
    assert human_bytes(2**30) == "1.0 GiB" and human_bytes(1023) == "1023 B"


def test_device_checks_on_a_cuda_build_with_two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-build paths, on any machine: a machine with two GPUs as torch would report it."""
    from stefaland.errors import StefaLandError
    from stefaland.run.device import select_device

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda", local_rank=3) == torch.device("cuda", 1)
    with pytest.raises(StefaLandError, match=r"train.device is 'cuda:3' but this machine has 2 CUDA device\(s\)"):
        select_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StefaLandError, match=r"train.device is 'cuda' but no CUDA device is available .*CUDA 12.4"):
        select_device("cuda")
