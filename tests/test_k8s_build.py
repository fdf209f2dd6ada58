"""``stefaland submit build``: a Dask cluster on Kubernetes running ``data build`` as its client.

The plain mode's objects validate against the Kubernetes schema (strict); the operator mode's
DaskJob against the CRD the Dask Kubernetes operator installs (dask-kubernetes 2026.3.0's
``daskjobs.kubernetes.dask.org``, kept gzipped in tests/data), made strict the way the API server
is (a field the schema does not name is an error here, not silently pruned), and its pod specs
against the Kubernetes Pod schema too. Then submit, list, status, logs and cancel over real HTTP
against the API-server double, in both modes; credentials are checked absent from everything
printed or sent.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from stefaland.k8s.dask_manifests import SCHEDULER_PORT
from stefaland_cli.main import cli

from _k8s_api_server import FakeApiServer, fake_api_server

REPO = Path(__file__).resolve().parents[1]
CRD = Path(__file__).parent / "data" / "dask_operator" / "daskjob-crd-2026.3.0.yaml.gz"
SCHEMA_VERSION = kubernetes_validate.latest_version()
SECRET_VALUE = "build-secret-never-shown-4e1f"
KEY_VALUE = "AKIDBUILDNEVERSHOWN"
NAMESPACE = "stefaland"
CATALOG = "s3://data/catalogs/global.yaml"
OUT = "s3://data/stores/global.zarr"
ROOT = "s3://data/products/global"
ARGS = ["--catalog", CATALOG, "--out", OUT, "--env", f"STEFALAND_GLOBAL_ROOT={ROOT}", "--workers", "3",
        "--worker-cpu", "4", "--image", "registry.example.org/stefaland:0.1.0"]


def _strict(schema: Any) -> Any:
    """The CRD's structural schema with unknown fields refused (the API server would drop them)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def daskjob_validator() -> jsonschema.protocols.Validator:
    crd = yaml.load(gzip.open(CRD), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == "DaskJob"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # every object has these at its root; the API server checks metadata itself
    schema["properties"] |= {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    return jsonschema.Draft7Validator(schema)


def validate_daskjob(document: dict) -> None:
    assert document["apiVersion"] == "kubernetes.dask.org/v1" and document["kind"] == "DaskJob"
    errors = sorted(daskjob_validator().iter_errors(document), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    for spec in pod_specs(document):  # the Kubernetes schema is stricter on pods than the CRD's copy
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec},
                                     SCHEMA_VERSION, strict=True)


def pod_specs(daskjob: dict) -> list[dict]:
    cluster = daskjob["spec"]["cluster"]["spec"]
    return [daskjob["spec"]["job"]["spec"], cluster["scheduler"]["spec"], cluster["worker"]["spec"]]


def stefaland(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the submitting shell: they must reach nothing submit prints or sends."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_VALUE)


def dry_run(*extra: str) -> tuple[list[dict], str]:
    code, stdout, stderr = stefaland("submit", "build", *ARGS, *extra, "--dry-run", "-o", "json")
    assert code == 0, stderr
    assert SECRET_VALUE not in stdout + stderr and KEY_VALUE not in stdout + stderr
    return json.loads(stdout), stderr


def by_kind(documents: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for document in documents:
        found.setdefault(document["kind"], []).append(document)
    return found


def container(pod_spec: dict) -> dict:
    assert len(pod_spec["containers"]) == 1
    return pod_spec["containers"][0]


def env_names(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env") or []}


def assert_secret_by_reference(c: dict, secret: str = "stefaland-s3") -> None:
    env = env_names(c)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}


def test_plain_mode_is_schema_valid_and_wires_one_cluster(credentials):
    documents, stderr = dry_run()
    assert "mode: plain" in stderr  # --mode auto cannot ask a cluster during a dry run
    for document in documents:
        kubernetes_validate.validate(document, SCHEMA_VERSION, strict=True)
    kinds = by_kind(documents)
    assert sorted(kinds) == ["Deployment", "Job", "Service"] and len(kinds["Deployment"]) == 2
    job, service = kinds["Job"][0], kinds["Service"][0]
    run_id = job["metadata"]["name"]
    deployments = {d["metadata"]["labels"]["stefaland.io/role"]: d for d in kinds["Deployment"]}
    scheduler, workers = deployments["scheduler"], deployments["worker"]
    # every object and pod carries the run label, as training runs do
    for obj in documents:
        assert obj["metadata"]["labels"]["stefaland.io/run"] == run_id
        assert obj["metadata"]["labels"]["stefaland.io/kind"] == "build"
    # the client's command is data build against the scheduler's Service; the workers join it
    address = f"tcp://{service['metadata']['name']}:{SCHEDULER_PORT}"
    client = container(job["spec"]["template"]["spec"])
    assert client["command"] == ["stefaland", "data", "build", "--catalog", CATALOG, "--out", OUT,
                                 "--scheduler", address]
    worker = container(workers["spec"]["template"]["spec"])
    assert worker["command"][:3] == ["dask", "worker", address]
    assert worker["command"][worker["command"].index("--nworkers") + 1] == "4"  # one process per CPU
    assert workers["spec"]["replicas"] == 3
    # the Service selects exactly the scheduler's pods, and its ports are the scheduler's
    scheduler_labels = scheduler["spec"]["template"]["metadata"]["labels"]
    assert all(scheduler_labels[k] == v for k, v in service["spec"]["selector"].items())
    worker_labels = workers["spec"]["template"]["metadata"]["labels"]
    assert not all(worker_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    ports = {p["name"] for p in container(scheduler["spec"]["template"]["spec"])["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    # credentials: by reference on the client and the workers, none at all on the scheduler
    assert_secret_by_reference(client)
    assert_secret_by_reference(worker)
    assert not [n for n in env_names(container(scheduler["spec"]["template"]["spec"])) if n.startswith("AWS_")]
    assert env_names(client)["STEFALAND_GLOBAL_ROOT"]["value"] == ROOT
    # the client's window of extracted values is 40 % of its memory (default 12Gi): 40 years of
    # MSWX for 4,229 sites (3.7 GiB of float64) fit, so each day file is read once
    window = int(env_names(client)["STEFALAND_GRIDDED_WINDOW_BYTES"]["value"])
    assert window == 12 * 2**30 * 2 // 5 and window >= 2 * 8 * 4 * 14_610 * 4229
    assert job["metadata"]["annotations"]["stefaland.io/out"] == OUT


def test_operator_mode_is_valid_against_the_operators_crd(credentials):
    documents, _ = dry_run("--mode", "operator", "--secret", "my-s3", "--node-selector", "pool=cpu")
    assert len(documents) == 1
    daskjob = documents[0]
    validate_daskjob(daskjob)
    client, scheduler, worker = (container(spec) for spec in pod_specs(daskjob))
    # the operator sets DASK_SCHEDULER_ADDRESS in these containers; Kubernetes expands $(...) in commands
    assert client["command"][-2:] == ["--scheduler", "$(DASK_SCHEDULER_ADDRESS)"]
    assert worker["command"][:2] == ["dask", "worker"] and "tcp://" not in " ".join(worker["command"])
    assert daskjob["spec"]["cluster"]["spec"]["worker"]["replicas"] == 3
    assert_secret_by_reference(client, "my-s3")
    assert_secret_by_reference(worker, "my-s3")
    assert not [n for n in env_names(scheduler) if n.startswith("AWS_")]
    assert all(spec["nodeSelector"] == {"pool": "cpu"} for spec in pod_specs(daskjob))
    service = daskjob["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == daskjob["metadata"]["name"]
    # the strict CRD check can fail: a misspelt field and a wrong type are both refused
    broken = copy.deepcopy(daskjob)
    broken["spec"]["cluster"]["spec"]["worker"]["replica"] = 3
    assert list(daskjob_validator().iter_errors(broken))
    broken = copy.deepcopy(daskjob)
    broken["spec"]["cluster"]["spec"]["worker"]["replicas"] = "3"
    assert list(daskjob_validator().iter_errors(broken))


@pytest.mark.parametrize(("extra", "expected"), [
    (["--env", "AWS_SECRET_ACCESS_KEY=x"], "--env AWS_SECRET_ACCESS_KEY: credentials"),
    (["--env", "GITHUB_TOKEN=x"], "--env GITHUB_TOKEN: credentials"),
    (["--env", "AWS_ENDPOINT_URL=http://s3"], "--env AWS_ENDPOINT_URL: credentials"),
    (["--env", "=x"], "expected NAME=VALUE"),
    (["--catalog", "catalog/global.yaml"], "--catalog catalog/global.yaml: a local path is not visible to the pods; copy"),
    (["--out", "/tmp/global.zarr"], "--out /tmp/global.zarr: the store must be an object-storage URL"),
    (["--worker-cpu", "4 cores"], "--cpu '4 cores': not a Kubernetes quantity"),
])
def test_bad_options_are_one_line(extra, expected, credentials):
    code, _, stderr = stefaland("submit", "build", *ARGS, *extra, "--dry-run")
    assert code == 1 and stderr.count("\n") == 1, stderr
    assert expected in stderr
    assert SECRET_VALUE not in stderr


@pytest.fixture()
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    with fake_api_server() as server:
        server.cluster.follow_delay = 0.01
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(server.kubeconfig(context="fake", namespace=NAMESPACE))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield server


def submit(*extra: str) -> tuple[str, str]:
    code, stdout, stderr = stefaland("submit", "build", *ARGS, *extra)
    assert code == 0, stderr
    assert SECRET_VALUE not in stdout + stderr
    return stdout.strip(), stderr


def follow_run(run_id: str) -> tuple[list[str], str]:
    """jobs list (this run's row), jobs status (its lines) and jobs logs, as a user reads them."""
    code, stdout, _ = stefaland("jobs", "list")
    assert code == 0
    row = next(line.split() for line in stdout.splitlines() if line.startswith(run_id))
    code, status, _ = stefaland("jobs", "status", run_id)
    assert code == 0
    code, logs, _ = stefaland("jobs", "logs", run_id)
    assert code == 0
    return row, status + logs


def test_plain_build_submit_status_logs_cancel(kube, credentials):
    kube.cluster.dask_operator = False  # auto mode falls back to plain objects
    kube.cluster.immediate_gc = False  # cancel itself must remove the workers, not only the GC
    run_id, stderr = submit()
    assert "mode: plain" in stderr
    objects = kube.cluster.objects
    job = objects[("jobs", NAMESPACE, run_id)]
    owned = [objects[("deployments", NAMESPACE, f"{run_id}-scheduler")],
             objects[("deployments", NAMESPACE, f"{run_id}-workers")],
             objects[("services", NAMESPACE, f"{run_id}-scheduler")]]
    for body in [job, *owned]:
        kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
    # the Job owns its cluster: its TTL after the build takes the workers with it
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"] for o in owned)
    assert SECRET_VALUE not in json.dumps(list(objects.values()))

    row, text = follow_run(run_id)
    assert row[:4] == [run_id, "build", "Running", "1"] and row[-1] == OUT
    assert f"deployment/{run_id}-workers" in text and "ready=3/3" in text
    pods = [line.split()[0] for line in text.splitlines() if line.startswith("pod/")]
    assert len(pods) == 1 + 1 + 3  # client, scheduler, workers
    assert f"[{pods[0].removeprefix('pod/')}]" in text  # logs of every pod, prefixed

    code, stdout, _ = stefaland("jobs", "cancel", run_id)
    assert code == 0 and f"deployment/{run_id}-workers" in stdout and f"job/{run_id}" in stdout
    kube.cluster.collect_garbage()
    assert not [key for key in objects if key[0] in ("jobs", "deployments", "services", "pods")]


def test_operator_build_submit_status_logs_cancel(kube, credentials):
    run_id, stderr = submit("--workers", "2")
    assert "mode: operator" in stderr
    daskjob = kube.cluster.objects[("daskjobs", NAMESPACE, run_id)]
    validate_daskjob({k: v for k, v in daskjob.items() if k != "status"}
                     | {"metadata": {k: v for k, v in daskjob["metadata"].items()
                                     if k in ("name", "namespace", "labels", "annotations")}})
    assert not [key for key in kube.cluster.objects if key[0] in ("jobs", "deployments")]
    assert SECRET_VALUE not in json.dumps(list(kube.cluster.objects.values()))

    row, text = follow_run(run_id)
    assert row[:4] == [run_id, "build", "Running", "1"] and row[-1] == OUT
    assert f"daskjob/{run_id}" in text and "jobStatus=Running workers=2" in text
    assert f"pod/{run_id}-runner" in text and len([ln for ln in text.splitlines() if ln.startswith("pod/")]) == 4

    code, stdout, _ = stefaland("jobs", "cancel", run_id)
    assert code == 0 and f"daskjob/{run_id}" in stdout
    assert not [key for key in kube.cluster.objects if key[0] in ("daskjobs", "pods")]
