"""``submit build``'s client command on a real multi-process Dask cluster, reading from S3; faults.

The world: the session's miniature products (``data synth --products``), of which 12 sites and
five days of MSWX (4 variables) and MSWEP are put on the S3 test server, with catalog/global.yaml
beside them. The reference is the same build on dask's synchronous scheduler in this process.

* the client Job's exact command (from ``plan_build``), its scheduler address pointed at a local
  ``LocalCluster`` with worker *processes*, writes a store identical to the reference; the graph
  the scheduler receives, the manifests and the command's output hold no credential;
* a worker process killed (SIGKILL) while it runs a task: the build finishes, store identical;
* the client killed mid-build: running the command again resumes from the store's record, and the
  chunks of the shards it recorded are not written again (their objects keep their timestamps);
* S3 errors (503 SlowDown from a proxy in front of the server) are retried with backoff; an object
  that keeps failing stops the build with one line naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
from click.testing import CliRunner
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

from stefaland.assemble import build_store
from stefaland.assemble.state import BuildState
from stefaland.k8s.dask_manifests import BuildOptions
from stefaland.k8s.manifests import PodOptions, to_yaml
from stefaland.k8s.submit import plan_build
from stefaland.store import open_store
from stefaland_cli.main import cli

from _s3_faults import ALWAYS, faulty_s3
from _seaweed import S3Server

REPO = Path(__file__).resolve().parents[1]
START, END = "2017-01-01", "2017-01-05"
DAYS = [f"2017{d:03d}" for d in range(1, 6)]
N_SITES = 12  # of the miniature's sites: 6 shards of 2
SOURCES = ["mswx", "mswep"]
COMPARED = ("dynamic", "dynamic_mean", "dynamic_std")


def _fs(server: S3Server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(endpoint_url=server.endpoint, key=server.access_key, secret=server.secret_key,
                             skip_instance_cache=True)


@pytest.fixture(scope="module")
def s3_world(s3_server: S3Server, miniature_products: Path) -> dict[str, str]:
    """Sites, ten days of MSWX and MSWEP and the catalog on S3; returns the URLs."""
    fs = _fs(s3_server)
    bucket = f"dask-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    fs.mkdir(bucket)
    root = miniature_products
    sites = (root / "sites" / "pretraining_sites.csv").read_text().splitlines(keepends=True)
    fs.pipe(f"{bucket}/global/sites/pretraining_sites.csv", "".join(sites[: 1 + N_SITES]).encode())
    files = []
    for day in DAYS:
        files += [root / "MSWX_V100" / "Past" / v / "Daily" / f"{day}.nc" for v in ("Tmax", "Tmin", "SWd", "RelHum")]
        files.append(root / "MSWEP_V280" / "Past" / "Daily" / f"{day}.nc")
    fs.put([str(f) for f in files], [f"{bucket}/global/{f.relative_to(root)}" for f in files])
    fs.put_file(str(REPO / "catalog" / "global.yaml"), f"{bucket}/catalogs/global.yaml")
    return {"bucket": bucket, "root": f"s3://{bucket}/global", "catalog": f"s3://{bucket}/catalogs/global.yaml"}


@pytest.fixture(scope="module")
def aws_env(s3_server: S3Server) -> Iterator[None]:
    """The AWS variables in this process (module-wide): the cluster's worker processes inherit them."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.env().items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def reference(s3_world: dict[str, str], aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The synchronous build's arrays (shard size 2, as every build here)."""
    out = str(tmp_path_factory.mktemp("sync") / "global.zarr")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEFALAND_GLOBAL_ROOT", s3_world["root"])
        build_store(s3_world["catalog"], out, shard_size=2, sources=SOURCES, start=START, end=END, quiet=True,
                    scheduler="sync")
    store = open_store(out)
    arrays = {name: store[name].values for name in COMPARED}
    assert np.isfinite(arrays["dynamic"]).mean() > 0.9  # a real comparison, not NaN against NaN
    return arrays | {"site": store["site"].values}


class GraphRecorder(SchedulerPlugin):
    """A scheduler plugin (dask's own extension point) keeping every task's pickled run spec, and
    optionally killing the worker process that receives the first shard task."""

    def __init__(self, kill_pids: dict[str, int] | None = None) -> None:
        super().__init__()
        self.payloads: list[bytes] = []
        self.kill_pids = kill_pids
        self.killed: str | None = None
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def update_graph(self, scheduler: Any, *, keys: set, **kwargs: Any) -> None:
        for key in scheduler.tasks:
            task = scheduler.tasks[key]
            if task.run_spec is not None:
                self.payloads.append(dumps(task.run_spec))  # as distributed ships it (cloudpickle)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.kill_pids is None or self.killed or finish != "processing" or "_compute_here" not in str(key):
            return
        worker = self.scheduler.tasks[key].processing_on
        if worker is not None and worker.address in self.kill_pids:
            os.kill(self.kill_pids[worker.address], signal.SIGKILL)
            self.killed = worker.address


@pytest.fixture(scope="module")
def cluster(aws_env: None) -> Iterator[Any]:
    """Two single-threaded worker processes, as ``dask worker --nworkers 2 --nthreads 1`` runs them."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit="1GiB") as local:
        yield local


def _add_plugin(cluster: Any, plugin: GraphRecorder) -> None:
    """Replace the previous test's recorder: the cluster is shared by the module."""
    for name in [n for n in cluster.scheduler.plugins if n.startswith("recorder")]:
        cluster.scheduler.remove_plugin(name=name)
    cluster.scheduler.add_plugin(plugin, name="recorder")
    plugin.scheduler = cluster.scheduler


def _client_command(s3_world: dict[str, str], out: str, address: str) -> tuple[list[str], dict[str, str], str]:
    """The plain mode's client container: its command (the scheduler address replaced by the local
    cluster's), the plain values of its environment, and the manifests as YAML."""
    options = BuildOptions(catalog=s3_world["catalog"], out=out, sources=SOURCES, shard_size=2, start=START, end=END,
                           env={"STEFALAND_GLOBAL_ROOT": s3_world["root"]})
    submission = plan_build(options, PodOptions(image="stefaland:test", gpus=0), "default", "plain")
    job = next(o for o in submission.objects if o.kind == "Job")
    container = job.spec.template.spec.containers[0]
    command = list(container.command)
    at = command.index("--scheduler") + 1
    assert command[at].startswith("tcp://") and command[at].endswith(":8786")
    command[at] = address
    env = {e.name: e.value for e in container.env if e.value is not None}
    assert command[0] == "stefaland"
    command[0] = str(Path(sys.executable).with_name("stefaland"))
    return command, env, to_yaml(submission.objects)


def _run_in_process(command: list[str], env: dict[str, str]) -> Any:
    """``command`` (``stefaland …``) through the CLI in this process; stdout and stderr kept apart."""
    result = CliRunner().invoke(cli, command[1:], env=env)
    assert result.exit_code == 0, result.output[-2000:]
    return result


def _assert_same(store_url: str, reference: dict[str, np.ndarray]) -> None:
    store = open_store(store_url)
    assert list(store["site"].values) == list(reference["site"])
    for name in COMPARED:
        np.testing.assert_array_equal(store[name].values, reference[name], err_msg=name)


def test_client_command_on_a_process_cluster_equals_the_sync_build(s3_world, reference, cluster):
    recorder = GraphRecorder()
    _add_plugin(cluster, recorder)
    out = f"s3://{s3_world['bucket']}/stores/equal.zarr"
    command, env, manifests = _client_command(s3_world, out, cluster.scheduler_address)
    result = _run_in_process(command, env)  # the same argv the container runs, without another interpreter start
    _assert_same(out, reference)
    # credentials: nowhere in the graph the scheduler got (which did carry the shard tasks and the
    # objects' URLs), the manifests, the client's output or the store's metadata
    graph = b"".join(recorder.payloads)
    assert b"_compute_here" in graph and s3_world["bucket"].encode() in graph
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    metadata = b"".join(fs.cat(p) for p in fs.find(out.removeprefix("s3://")) if p.endswith(".json"))
    secret, key = os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]
    for text in (graph, manifests.encode(), result.output.encode(), metadata):
        assert secret.encode() not in text and key.encode() not in text


def test_a_worker_killed_mid_build_changes_nothing(s3_world, reference, cluster):
    from distributed import Client

    with Client(cluster) as client:
        pids = client.run(os.getpid)
    recorder = GraphRecorder(kill_pids=pids)
    _add_plugin(cluster, recorder)
    out = f"s3://{s3_world['bucket']}/stores/killed-worker.zarr"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEFALAND_GLOBAL_ROOT", s3_world["root"])
        summary = build_store(s3_world["catalog"], out, shard_size=2, sources=SOURCES, start=START, end=END,
                              quiet=True, scheduler=cluster.scheduler_address)
    assert recorder.killed is not None  # a worker did die holding a shard task
    assert summary.shards_written == summary.n_shards
    _assert_same(out, reference)


def _chunk_stamps(fs: s3fs.S3FileSystem, store: str, shards: set[int]) -> dict[str, Any]:
    """LastModified of the ``dynamic`` chunks of ``shards`` (chunk i along sites is shard i)."""
    found = fs.find(f"{store.removeprefix('s3://')}/dynamic/c", detail=True)
    return {path: info["LastModified"] for path, info in found.items()
            if int(path.split("/dynamic/c/")[1].split("/")[0]) in shards}


def test_a_killed_client_resumes_from_the_store_record(s3_world, reference, cluster):
    out = f"s3://{s3_world['bucket']}/stores/killed-client.zarr"
    command, env, _ = _client_command(s3_world, out, cluster.scheduler_address)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    state_key = BuildState.url(out).removeprefix("s3://")
    process = subprocess.Popen(command, env=os.environ | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done: set[int] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = set(map(int, json.loads(fs.cat(state_key))["done"]))
        except (FileNotFoundError, ValueError):
            done = set()
        if done:
            process.send_signal(signal.SIGKILL)  # the client pod's container killed: no clean-up runs
            break
        time.sleep(0.02)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the build ended before it could be killed mid-way"
    done = set(map(int, json.loads(fs.cat(state_key))["done"]))  # what the record says was finished
    n_shards = -(-len(reference["site"]) // 2)
    assert 0 < len(done) < n_shards
    stamps = _chunk_stamps(fs, out, done)
    assert len(stamps) == len(done)
    time.sleep(1.1)  # LastModified has a resolution of a second: a rewrite would show

    result = _run_in_process(command, env)  # resubmitted: the same command again
    assert f"({n_shards - len(done)} of {n_shards} shards written)" in result.stdout
    fs.invalidate_cache()
    assert _chunk_stamps(fs, out, done) == stamps  # the recorded shards were not written again
    _assert_same(out, reference)


@pytest.fixture()
def flaky_s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The S3 endpoint through the fault proxy, with the retries of StefaLand only: botocore and
    s3fs are told to try once (their own backoff, nested, takes tens of seconds per object)."""
    with faulty_s3(s3_server.endpoint) as (endpoint, faults):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs' retry count (a class setting)
        monkeypatch.setenv("STEFALAND_READ_BACKOFF_S", "0.05")
        yield faults


def _build_cli(s3_world: dict[str, str], out: str) -> Any:
    return CliRunner().invoke(cli, ["data", "build", "--catalog", s3_world["catalog"], "--out", out, "--sources",
                                    ",".join(SOURCES), "--shard-size", "2", "--start", START, "--end", END,
                                    "--quiet", "--scheduler", "sync"], env={"STEFALAND_GLOBAL_ROOT": s3_world["root"]})


def test_s3_errors_are_retried_with_backoff(s3_world, reference, aws_env, flaky_s3):
    flaky_s3.fail["MSWEP_V280/Past/Daily/2017004.nc"] = 2  # two 503 SlowDown, then the object
    out = f"s3://{s3_world['bucket']}/stores/flaky.zarr"
    result = _build_cli(s3_world, out)
    assert result.exit_code == 0, result.output
    assert flaky_s3.failed == {"MSWEP_V280/Past/Daily/2017004.nc": 2}
    assert flaky_s3.passed["MSWEP_V280/Past/Daily/2017004.nc"] == 1  # read once it came through
    assert "2017004.nc: OSError; retrying in" in result.stderr  # --quiet still shows warnings
    _assert_same(out, reference)


def test_an_object_that_keeps_failing_is_one_line_naming_it(s3_world, aws_env, flaky_s3):
    flaky_s3.fail["MSWX_V100/Past/SWd/Daily/2017003.nc"] = ALWAYS
    started = time.monotonic()
    result = _build_cli(s3_world, f"s3://{s3_world['bucket']}/stores/failing.zarr")
    assert result.exit_code == 1
    # each retry is announced (a warning), then one error line. (Other tests' s3fs clients, garbage
    # collected on this process's event loops, may add asyncio's own noise to stderr: not ours.)
    lines = result.stderr.splitlines()
    retries = [line for line in lines if "retrying in" in line]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(retries) == 3 and all("2017003.nc: OSError; retrying in" in line for line in retries), retries
    assert len(errors) == 1, lines
    last = errors[0]
    assert last.startswith(f"error: {s3_world['root']}/MSWX_V100/Past/SWd/Daily/2017003.nc: cannot be read "
                           "after 4 attempts with backoff")
    assert flaky_s3.failed["MSWX_V100/Past/SWd/Daily/2017003.nc"] == 4  # one GET per attempt
    assert time.monotonic() - started < 30
