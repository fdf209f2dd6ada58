"""The CLI's cluster flows over real HTTP: real kubernetes client, real kubeconfig loading, real
CLI, against the small loopback API server of ``tests/_k8s_api_server.py``; configs go to SeaweedFS."""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
import s3fs
import yaml
from click.testing import CliRunner

from stefaland.k8s.runs import RUN_LABEL
from stefaland_cli.main import cli

from _k8s_api_server import FakeApiServer, fake_api_server

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "stefaland"  # the fake context's namespace: commands use it when -n is not given


@pytest.fixture()
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    """A fake API server and a kubeconfig whose *current* context is a dead cluster.

    Every command must therefore honour ``--context fake`` to reach it, like kubectl.
    """
    with fake_api_server() as server:
        server.cluster.follow_delay = 0.01
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(server.kubeconfig(context="fake", namespace=NAMESPACE, extra_dead_context=True))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield server


@pytest.fixture()
def run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 1}  # valid for both trainers\n")
    return path


def stefaland(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def submit_pretrain(run_config: Path, out: str, *extra: str) -> str:
    code, stdout, stderr = stefaland("submit", "pretrain", "--context", "fake", "--config", str(run_config),
                                     "--store", "s3://stores/global", "--out", out, *extra)
    assert code == 0, stderr
    return stdout.strip()


def test_submit_status_logs_cancel_round_trip(kube, s3_bucket, run_config):
    out = f"{s3_bucket}/runs/multi"
    run_id = submit_pretrain(run_config, out, "--nodes", "2", "--gpus", "2")
    objects = kube.cluster.objects
    job = objects[("jobs", NAMESPACE, run_id)]
    service = objects[("services", NAMESPACE, run_id)]
    for body in (job, service):  # what actually went over the wire is schema-valid too
        kubernetes_validate.validate(body, kubernetes_validate.latest_version(), strict=True)
    # the Service belongs to the Job, so deleting or TTL-collecting the Job removes it
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert job["metadata"]["annotations"]["stefaland.io/config"] == f"{out}/config.yaml"
    fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    assert fs.cat(f"{out}/config.yaml".removeprefix("s3://")) == run_config.read_bytes()

    code, stdout, _ = stefaland("jobs", "list", "--context", "fake")
    assert code == 0
    header, row = stdout.strip().splitlines()
    assert header.split()[:3] == ["RUN", "KIND", "STATE"]
    assert row.split()[:4] == [run_id, "pretrain", "Running", "1"] and row.split()[-1] == out

    code, stdout, _ = stefaland("jobs", "status", run_id, "--context", "fake")
    assert code == 0
    pods = [line.split()[0] for line in stdout.splitlines() if line.startswith("pod/")]
    assert len(pods) == 2 and all(p.startswith(f"pod/{run_id}-") for p in pods)
    assert f"out:   {out}" in stdout

    kube.cluster.set_job_condition(NAMESPACE, run_id, "Complete")
    code, stdout, _ = stefaland("jobs", "status", run_id, "--context", "fake")
    assert f"run:   {run_id}  Complete" in stdout and "succeeded=1" in stdout

    code, stdout, _ = stefaland("jobs", "logs", run_id, "--context", "fake")
    assert code == 0
    lines = stdout.strip().splitlines()
    assert len(lines) == 6  # 3 lines from each of the 2 pods, each prefixed with its pod
    for pod in pods:
        name = pod.removeprefix("pod/")
        assert [line for line in lines if line.startswith(f"[{name}] ")] == [
            f"[{name}] {text}" for text in kube.cluster.logs[name]]

    first = pods[0].removeprefix("pod/")
    code, stdout, _ = stefaland("jobs", "logs", run_id, "-f", "--pod", first, "--context", "fake")
    assert code == 0 and stdout.strip().splitlines() == kube.cluster.logs[first]
    log_queries = [q for q in kube.cluster.queries if q["_path"][0].endswith(f"/pods/{first}/log")]
    assert log_queries[-1].get("follow") == ["true"] and log_queries[-1].get("container") == ["stefaland"]

    code, stdout, _ = stefaland("jobs", "cancel", run_id, "--context", "fake")
    assert code == 0 and f"job/{run_id}" in stdout
    assert not [key for key in objects if key[0] in ("jobs", "pods", "services")]
    code, _, stderr = stefaland("jobs", "status", run_id, "--context", "fake")
    assert code == 1 and stderr.strip() == f"error: no jobs of run {run_id} in namespace {NAMESPACE} (fake)"


def test_finetune_per_fold_jobs_are_found_and_cancelled_together(kube, s3_bucket, run_config):
    import numpy as np
    import xarray as xr

    from stefaland.fileio import storage_options_for

    store = f"{s3_bucket}/stores/camels.zarr"  # --folds all reads the split's folds from the store
    sites = np.array(["01013500", "01022500", "01030500", "01031500", "01047000"])
    xr.Dataset(coords={"site": sites, "fold_pub": ("site", np.array([3, 1, 2, -1, 1], dtype="int16"))}).to_zarr(
        store, storage_options=storage_options_for(store), consolidated=False)
    code, stdout, stderr = stefaland(
        "submit", "finetune", "--context", "fake", "-n", "team-a", "--task", "camels", "--split", "pub",
        "--folds", "all", "--mode", "per-fold-jobs", "--gpus", "2", "--config", str(run_config),
        "--store", store, "--out", f"{s3_bucket}/runs/ft")
    assert code == 0, stderr
    run_id = stdout.strip()
    jobs = sorted(name for (res, ns, name) in kube.cluster.objects if res == "jobs" and ns == "team-a")
    assert jobs == [f"{run_id}-fold-{k}" for k in (1, 2, 3)]
    code, stdout, _ = stefaland("jobs", "status", run_id, "--context", "fake", "-n", "team-a")
    assert code == 0 and sum(line.startswith("job/") for line in stdout.splitlines()) == 3
    kube.cluster.set_job_condition("team-a", f"{run_id}-fold-2", "Failed")
    code, stdout, _ = stefaland("jobs", "list", "--context", "fake", "-n", "team-a")
    assert stdout.splitlines()[1].split()[:4] == [run_id, "finetune", "Failed", "3"]
    code, stdout, _ = stefaland("jobs", "cancel", run_id, "--context", "fake", "-n", "team-a")
    assert code == 0 and not [k for k in kube.cluster.objects if k[0] == "jobs"]


def test_resubmitting_resumes_but_a_different_config_is_refused(kube, s3_bucket, run_config, tmp_path):
    out = f"{s3_bucket}/runs/resume"
    first = submit_pretrain(run_config, out)
    second = submit_pretrain(run_config, out)  # same config: a new Job resuming the same folder
    assert first != second
    other = tmp_path / "other.yaml"
    other.write_text("train: {epochs: 2}\n")
    code, _, stderr = stefaland("submit", "pretrain", "--context", "fake", "--config", str(other),
                                "--store", "s3://stores/global", "--out", out)
    assert code == 1
    assert stderr.strip() == (f"error: {out}/config.yaml already holds a different config; use a new --out "
                              "(or the same config to resume)")
    assert len([k for k in kube.cluster.objects if k[0] == "jobs"]) == 2


def test_context_selection_and_connection_errors(kube, tmp_path, monkeypatch):
    code, _, stderr = stefaland("jobs", "list")  # current context: the dead cluster
    assert code == 1 and stderr.startswith("error: listing jobs: cannot reach the Kubernetes API of dead")
    code, _, stderr = stefaland("jobs", "list", "--context", "nope")
    assert code == 1 and stderr.strip().endswith("no context named 'nope' (contexts: fake, dead)")
    code, stdout, stderr = stefaland("jobs", "list", "--context", "fake")
    assert code == 0 and stderr.strip() == f"no StefaLand runs in namespace {NAMESPACE}"
    # a wrong token is reported as such, in one line
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(bad))
    code, _, stderr = stefaland("jobs", "status", "pretrain-20260101-120000-0a1b2c", "--context", "fake")
    assert code == 1 and stderr.count("\n") == 1 and "401 unauthorized" in stderr.lower()
    code, _, stderr = stefaland("jobs", "status", "not-a-run", "--context", "fake")
    assert code == 1 and stderr.startswith("error: 'not-a-run' is not a run id")


def role_permissions() -> set[tuple[str, str]]:
    role = next(d for d in yaml.safe_load_all((REPO / "k8s" / "rbac.yaml").read_text()) if d["kind"] == "Role")
    return {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_role_grants_exactly_what_the_cli_uses(kube, s3_bucket, run_config, tmp_path):
    kube.cluster.immediate_gc = False  # as on a real cluster, the Service outlives its Job briefly
    run_id = submit_pretrain(run_config, f"{s3_bucket}/runs/rbac", "--nodes", "2")
    for command in (["jobs", "list"], ["jobs", "status", run_id], ["jobs", "logs", run_id],
                    ["jobs", "logs", run_id, "-f"], ["pull", run_id, "--to", str(tmp_path / "p")],
                    ["jobs", "cancel", run_id]):
        code, _, stderr = stefaland(*command, "--context", "fake")
        # pull finds the run through the Job annotation; the folder only holds the config
        assert code == 0, (command, stderr)
    builds = []  # submit build in both modes: plain (Deployments), then operator (a DaskJob)
    for mode in ("plain", "operator"):
        code, stdout, stderr = stefaland("submit", "build", "--context", "fake", "--mode", mode, "--catalog",
                                         "s3://d/global.yaml", "--out", f"{s3_bucket}/stores/rbac-{mode}.zarr")
        assert code == 0, stderr
        builds.append(stdout.strip())
    for build in builds:
        for command in (["jobs", "list"], ["jobs", "status", build], ["jobs", "logs", build], ["jobs", "cancel", build]):
            code, _, stderr = stefaland(*command, "--context", "fake")
            assert code == 0, (command, stderr)
    assert set(kube.cluster.requests) == role_permissions()
    assert not [key for key in kube.cluster.objects if key[0] in ("jobs", "services", "deployments", "daskjobs")]


def test_jobs_are_listed_by_label_not_by_name(kube, s3_bucket, run_config):
    run_id = submit_pretrain(run_config, f"{s3_bucket}/runs/label")
    selectors = {q.get("labelSelector", [""])[0] for q in kube.cluster.queries if q["_path"][0].endswith("/jobs")}
    assert f"{RUN_LABEL}={run_id}" not in selectors  # submit does not look anything up
    stefaland("jobs", "status", run_id, "--context", "fake")
    selectors = {q.get("labelSelector", [""])[0] for q in kube.cluster.queries if q["_path"][0].endswith("/jobs")}
    assert f"{RUN_LABEL}={run_id}" in selectors


def test_a_missing_permission_is_one_line_naming_it(kube, s3_bucket, run_config):
    run_id = submit_pretrain(run_config, f"{s3_bucket}/runs/forbidden")
    kube.cluster.allowed = role_permissions() - {("pods/log", "get")}
    code, _, stderr = stefaland("jobs", "status", run_id, "--context", "fake")
    assert code == 0, stderr  # everything status needs is still granted
    code, _, stderr = stefaland("jobs", "logs", run_id, "--context", "fake")
    assert code == 1 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: reading the log of pod {run_id}-")
    assert 'cannot get resource "pods/log"' in stderr and "k8s/rbac.yaml" in stderr


def test_the_kubernetes_section_schedules_but_is_not_uploaded(kube, s3_bucket, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train: {epochs: 1}\nkubernetes:\n  node_selector: {pool: a100}\n")
    out = f"{s3_bucket}/runs/sched"
    run_id = submit_pretrain(config, out)
    pod_spec = kube.cluster.objects[("jobs", NAMESPACE, run_id)]["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "a100"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    # the trainers reject unknown keys, so the pods get the config without it
    assert yaml.safe_load(fs.cat(f"{out}/config.yaml".removeprefix("s3://"))) == {"train": {"epochs": 1}}
