"""The pretraining pod's entrypoint, run here exactly as the manifest says.

The Job comes from the real CLI (``stefaland submit pretrain --gpus 2 --dry-run -o json``); its
container's command line is started as-is with the environment the pod would get (plain values
from the manifest, Secret references resolved to the SeaweedFS test credentials, ``.venv/bin``
standing in for the image's PATH). ``--gpus 2`` means 2 torchrun processes; the tiny config says
``device: cpu``, so they meet over gloo. The "pod" is SIGKILLed after its first checkpoint lands
on S3, started again, must resume and finish, and ``stefaland pull`` then fetches and verifies
the run. Submit conflicts and refused requests go through the real client to
``tests/_k8s_api_server.py``; and the S3 secret must appear in none of the outputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import s3fs
import yaml
from click.testing import CliRunner

from stefaland_cli.main import cli

from _k8s_api_server import FakeApiServer, fake_api_server
from _seaweed import SECRET_KEY, S3Server

REPO = Path(__file__).resolve().parents[1]
CONTEXT = "lab-gpu-east"  # a name no server message contains, so finding it proves the CLI put it there
NAMESPACE = "stefaland"
# the tiny config cut to 1 epoch: 12 steps on the 24-site virtual store, checkpoints after steps 5, 10 and 12
TOTAL_STEPS = 12


def stefaland(*args: str) -> tuple[int, str, str]:
    """The real CLI in-process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def pod_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet gives the container: values as written, Secret keys by reference.

    Anything else (configMapKeyRef, fieldRef, …) raises, so a manifest change cannot slip past.
    """
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        data = secrets[ref["name"]]
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
        elif not ref.get("optional"):
            raise AssertionError(f"secret {ref['name']} lacks required key {ref['key']}")
    return env


def kill_pod(process: subprocess.Popen) -> int:
    """SIGKILL everything in the "pod", as the kubelet does on preemption.

    torchrun starts each worker in a session of its own, so killing torchrun's process group
    alone would orphan the workers; the whole tree is collected first, then killed at once.
    Returns how many processes were killed.
    """
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for proc in tree:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"processes survived SIGKILL: {alive}"
    return len(tree)


@dataclass
class PodRun:
    """Everything the pod tests look at, produced once per module."""

    out: str
    container: dict  # from the dry-run: what is run here
    sent_container: dict  # from the Job the real submit created on the (fake) API server
    manifests: dict[str, str] = field(default_factory=dict)  # name -> text (dry-run yaml/json, submitted job)
    outputs: dict[str, str] = field(default_factory=dict)  # name -> stdout/stderr of a CLI or pod run
    env_keys: list[str] = field(default_factory=list)  # the variables the pod started with
    kill_pointer: dict = field(default_factory=dict)
    killed_processes: int = 0
    kill_time: float = 0.0
    restart_time: float = 0.0
    second_rc: int | None = None
    final_pointer: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    run_json: dict = field(default_factory=dict)
    pulled: Path | None = None
    pull_code: int | None = None
    resubmit_code: int | None = None


@pytest.fixture(scope="module")
def pod_run(s3_server: S3Server, virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> PodRun:
    tmp = tmp_path_factory.mktemp("entrypoint")
    with pytest.MonkeyPatch.context() as mp, fake_api_server() as api:
        for key, value in s3_server.env().items():  # the submitting user's own credentials
            mp.setenv(key, value)
        (tmp / "kubeconfig").write_text(api.kubeconfig(context=CONTEXT, namespace=NAMESPACE))
        mp.setenv("KUBECONFIG", str(tmp / "kubeconfig"))
        fs = s3fs.S3FileSystem(endpoint_url=s3_server.endpoint, key=s3_server.access_key,
                               secret=s3_server.secret_key, skip_instance_cache=True)
        bucket = f"t-entry-{os.getpid()}"
        fs.mkdir(bucket)
        store, out = f"s3://{bucket}/stores/world.zarr", f"s3://{bucket}/runs/pod"
        fs.put(str(virtual_store), store.removeprefix("s3://"), recursive=True)
        raw = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
        raw["train"].update(epochs=1, eval_batches=1)
        config = tmp / "run.yaml"
        config.write_text(yaml.safe_dump(raw))
        args = ["submit", "pretrain", "--gpus", "2", "--context", CONTEXT, "--config", str(config),
                "--store", store, "--out", out]

        manifests, outputs = {}, {}
        for fmt in ("json", "yaml"):
            code, stdout, stderr = stefaland(*args, "--dry-run", "-o", fmt)
            assert code == 0, stderr
            manifests[f"dry-run.{fmt}"], outputs[f"dry-run {fmt} stderr"] = stdout, stderr
        (job,) = json.loads(manifests["dry-run.json"])
        container = job["spec"]["template"]["spec"]["containers"][0]
        # submitting for real uploads the config to <out>/config.yaml, where the pod reads it
        code, stdout, stderr = stefaland(*args)
        assert code == 0, stderr
        outputs["submit stdout"], outputs["submit stderr"] = stdout, stderr
        sent = api.cluster.objects[("jobs", NAMESPACE, stdout.strip())]
        manifests["submitted job"] = json.dumps(sent)
        run = PodRun(out, container, sent["spec"]["template"]["spec"]["containers"][0], manifests, outputs)

        command = container["command"] + container.get("args", [])
        home = tmp / "home"
        home.mkdir()
        env = {"PATH": f"{REPO / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               **pod_env(container, {"stefaland-s3": s3_server.env()})}
        run.env_keys = sorted(env)
        latest = f"{out}/checkpoints/latest.json".removeprefix("s3://")

        def launch(name: str) -> tuple[subprocess.Popen, Path]:
            log = tmp / f"{name}.log"
            with open(log, "wb") as handle:
                process = subprocess.Popen(command, env=env, cwd=home, stdout=handle, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            return process, log

        first, first_log = launch("first")
        try:
            deadline = time.monotonic() + 120
            while True:
                fs.invalidate_cache()
                if fs.exists(latest):
                    break
                if first.poll() is not None:
                    pytest.fail(f"pod exited ({first.returncode}) before its first checkpoint: "
                                f"{first_log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("no checkpoint on S3 within 120 s")
                time.sleep(0.05)
            run.killed_processes = kill_pod(first)
        finally:
            if first.poll() is None:
                kill_pod(first)
        run.kill_time = time.time()
        run.kill_pointer = json.loads(fs.cat(latest))
        run.outputs["pod 1 (killed)"] = first_log.read_text()

        run.restart_time = time.time()
        second, second_log = launch("second")
        try:
            run.second_rc = second.wait(timeout=180)
        finally:
            if second.poll() is None:
                kill_pod(second)
        run.outputs["pod 2"] = second_log.read_text()
        fs.invalidate_cache()
        run.final_pointer = json.loads(fs.cat(latest))
        run.metrics = list(csv.DictReader(io.StringIO(fs.cat(f"{out}/metrics.csv".removeprefix("s3://")).decode())))
        run.run_json = json.loads(fs.cat(f"{out}/run.json".removeprefix("s3://")))

        run.pulled = tmp / "pulled"
        code, stdout, stderr = stefaland("pull", out, "--to", str(run.pulled), "-q")
        run.pull_code = code
        run.outputs["pull stdout"], run.outputs["pull stderr"] = stdout, stderr

        # the documented way to continue a run: submit again with the same --out and the same config
        run.resubmit_code, stdout, stderr = stefaland(*args)
        run.outputs["resubmit stdout"], run.outputs["resubmit stderr"] = stdout, stderr
        yield run


def test_the_pod_command_resumes_after_kill_9_and_completes(pod_run: PodRun) -> None:
    command = pod_run.container["command"]
    assert command[:1] == ["torchrun"] and command[command.index("--nproc-per-node") + 1] == "2"
    assert command[command.index("--config") + 1] == f"{pod_run.out}/config.yaml"
    # the dry run shows what submit really creates (only the run id differs)
    strip = [var for var in pod_run.container["env"] if var["name"] != "STEFALAND_RUN_ID"]
    assert {**pod_run.container, "env": strip} == {
        **pod_run.sent_container, "env": [v for v in pod_run.sent_container["env"] if v["name"] != "STEFALAND_RUN_ID"]}
    # the pod's S3 access came only from resolving the Secret references (the manifest holds no value)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(pod_run.env_keys)
    first, second = pod_run.outputs["pod 1 (killed)"], pod_run.outputs["pod 2"]
    assert first.count("joined the gloo process group") == 2, first[-3000:]  # 2 ranks, gloo on CPU
    assert pod_run.killed_processes == 3  # torchrun and its 2 workers
    killed_at = pod_run.kill_pointer["step"]
    assert 0 < killed_at < TOTAL_STEPS, pod_run.kill_pointer  # killed mid-run, not after the end
    assert pod_run.second_rc == 0, second[-3000:]
    flat = " ".join(second.split())  # rich wraps log lines at 80 columns
    assert f"resuming {pod_run.out} at epoch" in flat and f"(global step {killed_at})" in flat, second[-3000:]
    assert pod_run.final_pointer["step"] == TOTAL_STEPS and pod_run.run_json["world_size"] == 2
    # the rows up to the checkpoint were written by the killed pod, the rest by the resumed one
    train = [row for row in pod_run.metrics if row["kind"] == "train"]
    steps = [int(row["step"]) for row in train]
    assert steps == sorted(set(steps)) and steps[-1] == TOTAL_STEPS
    before = [float(row["time"]) for row in train if int(row["step"]) <= killed_at]
    after = [float(row["time"]) for row in train if int(row["step"]) > killed_at]
    assert before and after
    assert max(before) < pod_run.kill_time < pod_run.restart_time <= min(after) + 1e-3


def test_pull_fetches_the_run_and_verifies_it_by_sha256(pod_run: PodRun) -> None:
    assert pod_run.pull_code == 0, pod_run.outputs["pull stderr"]
    assert pod_run.outputs["pull stdout"].strip() == str(pod_run.pulled.resolve())
    manifest = json.loads((pod_run.pulled / "manifest.json").read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert {"config.yaml", "run.json", "metrics.csv", "loss.png", "checkpoints/latest.json",
            f"checkpoints/{pod_run.final_pointer['file']}"} <= set(listed)
    for path, entry in listed.items():  # the local copies are what the pod wrote
        assert hashlib.sha256((pod_run.pulled / path).read_bytes()).hexdigest() == entry["sha256"], path
    summary = pod_run.outputs["pull stderr"].strip()
    assert f"verified {len(listed) + 1} by sha256 (manifest.json)" in summary and "size only" not in summary


def test_resubmitting_the_same_config_resumes_the_finished_run(pod_run: PodRun) -> None:
    """docs/KUBERNETES.md: same --out and same config -> a new Job that resumes (here: is done)."""
    assert pod_run.resubmit_code == 0, pod_run.outputs["resubmit stderr"]
    assert pod_run.outputs["resubmit stdout"].startswith("pretrain-")
    assert "already holds this config" in pod_run.outputs["resubmit stderr"]


def test_no_secret_in_manifests_outputs_or_pulled_files(pod_run: PodRun) -> None:
    secret = SECRET_KEY.encode()
    texts = {**pod_run.manifests, **pod_run.outputs}
    assert len(texts) >= 12 and pod_run.outputs["pod 2"]  # the grep really covers the runs
    leaks = [name for name, text in texts.items() if secret in text.encode()]
    pulled = sorted(p for p in pod_run.pulled.rglob("*") if p.is_file())
    assert len(pulled) >= 7
    leaks += [str(p) for p in pulled if secret in p.read_bytes()]
    assert not leaks, leaks


# -- the API server's refusals ------------------------------------------------------------------

@pytest.fixture()
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    with fake_api_server() as server:
        (tmp_path / "kubeconfig").write_text(server.kubeconfig(context=CONTEXT, namespace=NAMESPACE))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        yield server


@pytest.fixture()
def run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 1}\n")
    return path


def submit(run_config: Path, out: str) -> tuple[int, str, str]:
    return stefaland("submit", "pretrain", "--context", CONTEXT, "--config", str(run_config),
                     "--store", "s3://stores/global", "--out", out)


def assert_one_error_line(code: int, stderr: str, *parts: str) -> str:
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr and SECRET_KEY not in stderr
    for part in parts:
        assert part in stderr, (part, stderr)
    return stderr.strip()


def test_a_run_id_that_already_exists_is_one_error_line(kube, s3_bucket, run_config, monkeypatch) -> None:
    # run ids are time + 6 random hex digits; pin one to provoke the collision the API server answers with 409
    run_id = "pretrain-20260101-120000-0a1b2c"
    monkeypatch.setattr("stefaland.k8s.submit.new_run_id", lambda kind: run_id)
    monkeypatch.setattr("stefaland_cli.submit.new_run_id", lambda kind: run_id)  # the CLI names the run itself
    code, stdout, stderr = submit(run_config, f"{s3_bucket}/runs/first")
    assert code == 0 and stdout.strip() == run_id, stderr
    existing = dict(kube.cluster.objects[("jobs", NAMESPACE, run_id)]["metadata"])
    code, stdout, stderr = submit(run_config, f"{s3_bucket}/runs/second")
    assert stdout == ""
    assert_one_error_line(code, stderr, f"creating job {run_id} in namespace {NAMESPACE} ({CONTEXT}): 409",
                          "already exists")
    kept = kube.cluster.objects[("jobs", NAMESPACE, run_id)]["metadata"]  # the existing Job is untouched
    assert kept["uid"] == existing["uid"] and kept["annotations"]["stefaland.io/out"].endswith("/runs/first")
    assert len([key for key in kube.cluster.objects if key[0] == "jobs"]) == 1


def test_401_and_403_name_the_kubeconfig_context(kube, s3_bucket, run_config, tmp_path, monkeypatch) -> None:
    kube.cluster.allowed = {("jobs", "list")}  # may look, may not create
    code, _, stderr = submit(run_config, f"{s3_bucket}/runs/forbidden")
    assert_one_error_line(code, stderr, f"in namespace {NAMESPACE} ({CONTEXT}): 403",
                          'cannot create resource "jobs"', "k8s/rbac.yaml")
    assert not [key for key in kube.cluster.objects if key[0] == "jobs"]

    kube.cluster.allowed = None
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"][0]["user"]["token"] = "revoked"
    (tmp_path / "stale").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "stale"))
    for command in (["jobs", "list"], ["jobs", "status", "pretrain-20260101-120000-0a1b2c"]):
        code, _, stderr = stefaland(*command, "--context", CONTEXT)
        assert_one_error_line(code, stderr, f"({CONTEXT}): 401", "kubeconfig context")
    code, _, stderr = submit(run_config, f"{s3_bucket}/runs/unauthorized")
    assert_one_error_line(code, stderr, f"({CONTEXT}): 401")
