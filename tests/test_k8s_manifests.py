"""Generated Kubernetes manifests: schema-valid (strict, newest schema shipped) and doing what the
issue asks (torchrun per node, GPUs, /dev/shm, Secret by reference, labels, indexed folds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from stefaland import __version__
from stefaland.k8s.manifests import PodOptions, finetune_objects, pretrain_objects, to_dict
from stefaland.k8s.runs import RUN_LABEL, is_run_id
from stefaland.k8s.submit import parse_toleration
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = kubernetes_validate.latest_version()
SECRET_VALUE = "do-not-leak-this-secret"


def validate_strict(document: dict) -> None:
    kubernetes_validate.validate(document, SCHEMA_VERSION, strict=True)


@pytest.fixture()
def run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        "train: {epochs: 1}\n"
        "kubernetes:\n"
        "  node_selector: {cloud.example.org/pool: gpu}\n"
        "  tolerations:\n"
        "  - {key: preemptible, operator: Exists, effect: NoSchedule}\n"
    )
    return path


def dry_run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Run the real CLI with --dry-run and return the documents it printed."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)  # must never reach a manifest
    result = CliRunner().invoke(cli, args + ["--dry-run", "-o", "yaml"])
    assert result.exit_code == 0, result.output
    assert SECRET_VALUE not in result.output
    return list(yaml.safe_load_all(result.output))


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def torchrun_args(command: list[str]):
    """Parse the launcher part with torchrun's own parser, so a misspelt flag fails here."""
    from torch.distributed.run import get_args_parser

    assert command[0] == "torchrun"
    return get_args_parser().parse_args(command[1:])


def check_common(job: dict, gpus: int, run_id: str) -> None:
    validate_strict(job)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    spec = job["spec"]
    pod = spec["template"]["spec"]
    main = container(job)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert main["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]
    aws = {e["name"]: e for e in main["env"] if e["name"].startswith("AWS_")}
    assert set(aws) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "stefaland-s3" for e in aws.values())
    for labels in (job["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
        assert labels[RUN_LABEL] == run_id
        assert labels["app.kubernetes.io/name"] == "stefaland"
        assert labels["app.kubernetes.io/managed-by"] == "stefaland-cli"
    assert pod["restartPolicy"] == "Never"
    assert spec["backoffLimit" if "backoffLimitPerIndex" not in spec else "backoffLimitPerIndex"] == 3
    assert spec["activeDeadlineSeconds"] == 3600 and spec["ttlSecondsAfterFinished"] == 600
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onPodConditions"][0]["type"] == "DisruptionTarget"
    # options and the config's kubernetes section both apply
    assert pod["nodeSelector"] == {"cloud.example.org/pool": "gpu", "gpu": "v100"}
    assert {"key": "preemptible", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


COMMON = ["--store", "s3://bucket/stores/global", "--out", "s3://bucket/runs/r1", "--image", "reg.example/stefaland:1",
          "-n", "ml", "--deadline", "3600", "--ttl", "600", "--node-selector", "gpu=v100",
          "--toleration", "nvidia.com/gpu:NoSchedule"]


@pytest.mark.parametrize("gpus", [1, 6])
def test_single_node_pretrain_is_one_torchrun_job(gpus, run_config, monkeypatch):
    docs = dry_run(["submit", "pretrain", "--gpus", str(gpus), "--config", str(run_config)] + COMMON, monkeypatch)
    assert [d["kind"] for d in docs] == ["Job"]
    job = docs[0]
    run_id = job["metadata"]["name"]
    assert is_run_id(run_id) and run_id.startswith("pretrain-")
    check_common(job, gpus, run_id)
    assert "completionMode" not in job["spec"]
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["annotations"]["stefaland.io/out"] == "s3://bucket/runs/r1"
    launcher = torchrun_args(container(job)["command"])
    assert launcher.standalone and launcher.nproc_per_node == str(gpus) and launcher.no_python
    assert launcher.training_script == "stefaland"
    assert launcher.training_script_args == [
        "pretrain", "--store", "s3://bucket/stores/global", "--config", "s3://bucket/runs/r1/config.yaml",
        "--out", "s3://bucket/runs/r1",
    ]


def test_multi_node_pretrain_is_indexed_job_with_headless_service(run_config, monkeypatch):
    docs = dry_run(["submit", "pretrain", "--gpus", "4", "--nodes", "3", "--config", str(run_config)] + COMMON,
                   monkeypatch)
    service, job = docs
    run_id = job["metadata"]["name"]
    check_common(job, 4, run_id)
    validate_strict(service)
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {RUN_LABEL: run_id}
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    launcher = torchrun_args(container(job)["command"])
    assert launcher.nnodes == "3" and launcher.nproc_per_node == "4" and launcher.rdzv_backend == "c10d"
    # pod 0's stable DNS name under the headless Service
    assert launcher.rdzv_endpoint == f"{run_id}-0.{service['metadata']['name']}:29500"
    assert launcher.rdzv_id == run_id


@pytest.fixture()
def fold_store(tmp_path: Path) -> str:
    """A minimal zarr store with a PUB-like fold coordinate (ids 1..3, -1 = not in the scheme)."""
    import numpy as np
    import xarray as xr

    dataset = xr.Dataset(
        {"static": (("site", "svar"), np.zeros((5, 1), dtype="float32"))},
        coords={"site": np.array(["01013500", "01022500", "01030500", "01031500", "01047000"]),
                "fold_pub": ("site", np.array([2, 1, 3, 2, -1], dtype="int16"))},
    )
    path = tmp_path / "store.zarr"
    dataset.to_zarr(path, consolidated=False)
    return str(path)


def test_finetune_indexed_maps_completion_index_to_folds_from_the_store(run_config, fold_store, monkeypatch):
    args = ["submit", "finetune", "--task", "camels", "--split", "pub", "--gpus", "2", "--config", str(run_config),
            "--pvc", "stores", "--pvc-mount", str(Path(fold_store).parent)]
    common = COMMON.copy()
    common[1] = fold_store  # the store is read through the PVC mount
    (job,) = dry_run(args + common, monkeypatch)
    check_common(job, 2, job["metadata"]["name"])
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["STEFALAND_FOLDS"] == "1,2,3"
    command = container(job)["command"]
    assert command[:3] == ["python", "-m", "stefaland.k8s.fold_entry"]
    launcher = torchrun_args(command[3:])
    assert launcher.training_script_args[-2:] == ["--fold", "{fold}"]
    args = launcher.training_script_args
    assert args[args.index("--out") + 1] == "s3://bucket/runs/r1"  # finetune adds fold-<k>/ itself
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "stores"}} in volumes


def test_finetune_per_fold_jobs_one_job_per_fold(run_config, monkeypatch):
    docs = dry_run(["submit", "finetune", "--task", "camels", "--split", "pub", "--folds", "0-1,4", "--gpus", "2",
                    "--mode", "per-fold-jobs", "--config", str(run_config)] + COMMON, monkeypatch)
    run_id = docs[0]["metadata"]["labels"][RUN_LABEL]
    assert [d["metadata"]["name"] for d in docs] == [f"{run_id}-fold-{k}" for k in (0, 1, 4)]
    for fold, job in zip((0, 1, 4), docs):
        check_common(job, 2, run_id)
        assert job["metadata"]["labels"]["stefaland.io/fold"] == str(fold)
        args = torchrun_args(container(job)["command"]).training_script_args
        assert args[:1] == ["finetune"] and args[-2:] == ["--fold", str(fold)]
        assert args[args.index("--out") + 1] == "s3://bucket/runs/r1"


def test_fold_entry_runs_the_fold_of_its_completion_index():
    probe = [sys.executable, "-c", "import sys; print(sys.argv[1:])", "--out", "s3://b/r/fold-{fold}", "--fold", "{fold}"]
    env = {"JOB_COMPLETION_INDEX": "1", "STEFALAND_FOLDS": "3,7,9", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "stefaland.k8s.fold_entry", *probe], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["--out", "s3://b/r/fold-7", "--fold", "7"])
    env["JOB_COMPLETION_INDEX"] = "3"
    done = subprocess.run([sys.executable, "-m", "stefaland.k8s.fold_entry", *probe], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "JOB_COMPLETION_INDEX='3'" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--out", "/tmp/run"], "--out /tmp/run: the run folder must be an object-storage URL"),
    (["--store", "/home/me/store.zarr"], "--store /home/me/store.zarr: a local path is not visible to the pods"),
    (["--toleration", "gpu"], "--toleration 'gpu': expected KEY[=VALUE]:EFFECT"),
    (["--node-selector", "gpu"], "--node-selector 'gpu': expected KEY=VALUE"),
    (["--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml: config file not found"),
])
def test_bad_submit_input_is_one_error_line(args, message, run_config):
    base = {"--store": "s3://b/store", "--out": "s3://b/run", "--config": str(run_config)}
    extra = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    argv = ["submit", "pretrain", "--dry-run"] + [x for kv in base.items() for x in kv] + extra
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: {message}")


def test_bad_folds_and_missing_split_are_one_line(run_config, fold_store):
    base = ["submit", "finetune", "--task", "camels", "--config", str(run_config), "--out", "s3://b/r", "--dry-run",
            "--pvc", "s", "--pvc-mount", str(Path(fold_store).parent), "--store", fold_store]
    result = CliRunner().invoke(cli, base + ["--split", "pub", "--folds", "one"])
    assert result.exit_code == 1 and result.output.startswith("error: --folds 'one'")
    result = CliRunner().invoke(cli, base + ["--split", "pur"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {fold_store}: store has no coordinate 'fold_pur' for split 'pur' "
                                     "(known splits: pub); pass --split-file")


# The readable templates in k8s/ are the builders' output for these example inputs.
_IMAGE = "registry.example.org/stefaland:0.1.0"
_STORE = "s3://stefaland/stores/global"


def _example_pod(gpus: int, **extra) -> PodOptions:
    return PodOptions(image=_IMAGE, gpus=gpus, node_selector={"nvidia.com/gpu.product": "Tesla-V100-SXM2-32GB"},
                      tolerations=[parse_toleration("nvidia.com/gpu:NoSchedule")], **extra)


def _run(run_id: str) -> tuple[str, str]:
    return f"s3://stefaland/runs/{run_id}/config.yaml", f"s3://stefaland/runs/{run_id}"


def _examples() -> dict[str, list]:
    single, multi, fine = ("pretrain-20260101-120000-0a1b2c", "pretrain-20260101-120000-3d4e5f",
                           "finetune-20260102-090000-6a7b8c")
    return {
        "pretrain-job.yaml": pretrain_objects(single, _STORE, *_run(single), _example_pod(6), "stefaland"),
        "pretrain-multinode.yaml": pretrain_objects(multi, _STORE, *_run(multi), _example_pod(4), "stefaland", nodes=2),
        "finetune-indexed-job.yaml": finetune_objects(
            fine, "/data/stores/camels", *_run(fine), "camels", "pub", list(range(1, 11)),
            _example_pod(2, pvc="stefaland-stores", pvc_mount="/data"), "stefaland", parallelism=5),
    }


def _without_version(document: dict) -> str:
    """Templates keep the version they were written for; the builder stamps the installed one."""
    text = json.dumps(document, sort_keys=True)
    return text.replace(f'"app.kubernetes.io/version": "{__version__}"', '"app.kubernetes.io/version": "X"') \
        .replace('"app.kubernetes.io/version": "0.1.0"', '"app.kubernetes.io/version": "X"')


@pytest.mark.parametrize("name", ["pretrain-job.yaml", "pretrain-multinode.yaml", "finetune-indexed-job.yaml"])
def test_templates_are_what_the_builders_make(name):
    template = list(yaml.safe_load_all((REPO / "k8s" / name).read_text()))
    built = [to_dict(o) for o in _examples()[name]]
    assert [_without_version(d) for d in template] == [_without_version(d) for d in built]


@pytest.mark.parametrize("path", sorted((REPO / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_every_template_validates_strictly(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        validate_strict(document)


def test_dry_run_json_is_the_same_objects(run_config, monkeypatch):
    monkeypatch.setenv("STEFALAND_IMAGE", "reg.example/stefaland:from-env")
    args = ["submit", "pretrain", "--nodes", "2", "--config", str(run_config), "--store", "s3://b/s", "--out",
            "s3://b/r", "--dry-run"]
    result = CliRunner().invoke(cli, args + ["-o", "json"])
    assert result.exit_code == 0, result.output
    documents = json.loads(result.output)
    assert [d["kind"] for d in documents] == ["Service", "Job"]
    for document in documents:
        validate_strict(document)
    assert container(documents[1])["image"] == "reg.example/stefaland:from-env"
    assert documents[1]["metadata"]["namespace"] == "default"  # dry run without -n or a cluster


def _dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    from fnmatch import fnmatch

    allowed = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch(path, pattern) or fnmatch(path, pattern.removeprefix("**/")):
            allowed = negate
    return allowed


def test_dockerfile_installs_torch_then_the_package_from_a_cuda_base():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    base = next(line for line in lines if line.startswith("ARG CUDA_IMAGE="))
    assert base.split("=", 1)[1].startswith("nvidia/cuda:")
    torch_step = next(i for i, line in enumerate(lines) if 'pip install "torch==' in line)
    package_step = next(i for i, line in enumerate(lines) if line.startswith(("RUN pip install .", "RUN pip install \".[")))
    assert torch_step < package_step
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
                assert _dockerignore_allows(source), f".dockerignore excludes {source}"
    assert not _dockerignore_allows(".venv") and not _dockerignore_allows(".git")


def test_config_is_checked_by_the_trainers_schema_before_submitting(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("train: {epochs: 1, lr_rate: 0.1}\n")
    for kind, extra in (("pretrain", []), ("finetune", ["--task", "camels", "--split", "pub", "--folds", "1"])):
        result = CliRunner().invoke(cli, ["submit", kind, *extra, "--config", str(bad), "--store", "s3://b/s",
                                          "--out", "s3://b/r", "--dry-run"])
        assert result.exit_code == 1, kind
        assert result.output.count("\n") == 1 and result.output.startswith(f"error: {bad}: ")
        assert "lr_rate" in result.output


def test_submit_finetune_refuses_an_unknown_model_before_building_a_job(tmp_path, monkeypatch):
    """model.name is checked against the registry on the client, not in a pod after GPU scheduling."""
    from stefaland.finetune.models import MODELS

    args = ["submit", "finetune", "--task", "camels", "--split", "pub", "--folds", "1", "--store", "s3://b/s",
            "--out", "s3://b/r"]
    bad = tmp_path / "typo.yaml"
    bad.write_text("model: {name: stefaland_resconnn}\n")
    result = CliRunner().invoke(cli, [*args, "--config", str(bad), "--dry-run"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {bad}: model.name: unknown model 'stefaland_resconnn'; known: ")
    assert all(name in result.output for name in MODELS) and "kind: Job" not in result.output
    good = tmp_path / "good.yaml"
    good.write_text("model: {name: stefaland_resconn, pretrained: s3://b/pre}\n")
    assert any(doc["kind"] == "Job" for doc in dry_run([*args, "--config", str(good)], monkeypatch))
