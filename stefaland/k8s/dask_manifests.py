"""The Kubernetes objects of ``stefaland submit build``: a Dask cluster and ``data build`` as its client.

Two shapes of the same thing, both from the client library's typed models (so ``--dry-run`` prints
exactly what is created, and unknown fields are refused when the objects are built):

* ``operator``: one ``DaskJob`` (``kubernetes.dask.org/v1``, the Dask Kubernetes operator of the
  ``dask-kubernetes`` package). The operator creates the scheduler, its Service and the workers,
  runs the client pod with ``DASK_SCHEDULER_ADDRESS`` set, and deletes the cluster when the client
  pod ends;
* ``plain``: what a cluster without the operator runs: the client as a batch/v1 Job, a scheduler
  Deployment and its Service, and a workers Deployment. The Deployments and the Service are owned
  by the Job (``client.create_run``), so deleting the Job (``jobs cancel``, or its TTL after it
  finished) removes the workers with it.

Only the client and the workers read and write object storage, so only they get the S3 Secret,
by reference (``manifests._secret_env``), as the training Jobs do; the scheduler gets none. The
build itself resumes from the store's own record (``assemble/state.py``), so a restarted client
pod, a Job retry or a resubmission with the same ``--out`` continues where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s

from .manifests import CONTAINER_NAME, PodOptions, _job, _secret_env, to_dict
from .runs import run_annotations, run_labels

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
# the operator's API group and the kind submit creates in operator mode
DASK_GROUP = "kubernetes.dask.org"
DASK_VERSION = "v1"
DASKJOB_PLURAL = "daskjobs"
BUILD_MODES = ("auto", "operator", "plain")
#: How long the client waits for the scheduler before its pod fails (the scheduler's image may
#: still be pulling when the client starts): read by ``gridded.scheduler.dask_client``.
SCHEDULER_TIMEOUT_ENV = "STEFALAND_SCHEDULER_TIMEOUT"
SCHEDULER_TIMEOUT_S = 600


@dataclass
class BuildOptions:
    """What ``submit build`` sizes: the workers, and what ``data build`` is asked to do."""

    catalog: str
    out: str
    workers: int = 4  # worker pods
    worker_cpu: str = "2"  # per worker pod; one single-threaded dask worker process per CPU
    worker_memory: str = "8Gi"  # per worker pod, shared by its processes
    client_cpu: str = "1"
    client_memory: str = "12Gi"  # one window of extracted values lives here (catalog/readers.py)
    scheduler_cpu: str = "1"
    scheduler_memory: str = "2Gi"
    sources: list[str] | None = None
    shard_size: int | None = None
    start: str | None = None
    end: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # catalog parameters such as STEFALAND_GLOBAL_ROOT

    def worker_processes(self) -> int:
        """One single-threaded process per whole CPU (HDF5 reads hold the GIL: processes scale)."""
        from .checks import quantity

        return max(1, int(quantity(self.worker_cpu, "--worker-cpu")))


def build_command(options: BuildOptions, scheduler: str) -> list[str]:
    """``stefaland data build`` as the client pod runs it (``scheduler``: an address or ``$(VAR)``)."""
    command = ["stefaland", "data", "build", "--catalog", options.catalog, "--out", options.out,
               "--scheduler", scheduler]
    if options.sources:
        command += ["--sources", ",".join(options.sources)]
    if options.shard_size is not None:
        command += ["--shard-size", str(options.shard_size)]
    if options.start:
        command += ["--start", options.start]
    if options.end:
        command += ["--end", options.end]
    return command


def worker_command(options: BuildOptions, scheduler: str | None) -> list[str]:
    """``dask worker``: without an address it reads ``DASK_SCHEDULER_ADDRESS`` (set by the operator)."""
    command = ["dask", "worker", *([scheduler] if scheduler else []), "--nworkers", str(options.worker_processes()),
               "--nthreads", "1", "--memory-limit", "auto"]
    if scheduler is None:
        command += ["--name", "$(DASK_WORKER_NAME)"]
    return command


SCHEDULER_COMMAND = ["dask", "scheduler", "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"]


def _env(run_id: str, extra: dict[str, str]) -> list[k8s.V1EnvVar]:
    return [k8s.V1EnvVar(name="STEFALAND_RUN_ID", value=run_id), k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
            *(k8s.V1EnvVar(name=name, value=value) for name, value in sorted(extra.items()))]


def _container(run_id: str, pod: PodOptions, command: list[str], cpu: str, memory: str, env: dict[str, str],
               secret: bool, ports: list[k8s.V1ContainerPort] | None = None,
               probe: k8s.V1Probe | None = None) -> k8s.V1Container:
    """One container named like the training ones, so ``jobs logs`` reads every pod of a build alike."""
    return k8s.V1Container(
        name=CONTAINER_NAME,
        image=pod.image,
        image_pull_policy=pod.image_pull_policy,
        command=command,
        env=_env(run_id, env) + (_secret_env(pod.secret) if secret else []),
        resources=k8s.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}),
        ports=ports,
        readiness_probe=probe,
    )


def _scheduler_ports() -> list[k8s.V1ContainerPort]:
    return [k8s.V1ContainerPort(name="tcp-comm", container_port=SCHEDULER_PORT, protocol="TCP"),
            k8s.V1ContainerPort(name="http-dashboard", container_port=DASHBOARD_PORT, protocol="TCP")]


def _scheduler_probe() -> k8s.V1Probe:
    return k8s.V1Probe(tcp_socket=k8s.V1TCPSocketAction(port="tcp-comm"), initial_delay_seconds=2, period_seconds=5)


def _pod_spec(pod: PodOptions, container: k8s.V1Container, restart: str,
              deadline: int | None = None) -> k8s.V1PodSpec:
    return k8s.V1PodSpec(
        restart_policy=restart,
        service_account_name=pod.service_account,
        node_selector=pod.node_selector or None,
        tolerations=pod.tolerations or None,
        active_deadline_seconds=deadline,
        containers=[container],
    )


def window_bytes(client_memory: str) -> int:
    """The client's bound on a window of extracted values: 40 % of its memory. The window is held
    twice while it is put back in store order, and the shard being written comes on top. 12Gi
    holds 4,229 sites x 40 years of MSWX's four variables (3.7 GiB), so each file is read once."""
    from .checks import quantity

    return int(quantity(client_memory, "--client-memory") * 2 // 5)


def _client_container(run_id: str, pod: PodOptions, options: BuildOptions, scheduler: str) -> k8s.V1Container:
    from stefaland.catalog.readers import WINDOW_BYTES_ENV

    env = {**options.env, SCHEDULER_TIMEOUT_ENV: str(SCHEDULER_TIMEOUT_S),
           WINDOW_BYTES_ENV: str(window_bytes(options.client_memory))}
    return _container(run_id, pod, build_command(options, scheduler), options.client_cpu, options.client_memory,
                      env, secret=True)


def _worker_container(run_id: str, pod: PodOptions, options: BuildOptions, scheduler: str | None) -> k8s.V1Container:
    return _container(run_id, pod, worker_command(options, scheduler), options.worker_cpu, options.worker_memory,
                      options.env, secret=True)


def _scheduler_container(run_id: str, pod: PodOptions, options: BuildOptions) -> k8s.V1Container:
    return _container(run_id, pod, SCHEDULER_COMMAND, options.scheduler_cpu, options.scheduler_memory, {},
                      secret=False, ports=_scheduler_ports(), probe=_scheduler_probe())


def scheduler_name(run_id: str) -> str:
    return f"{run_id}-scheduler"


def _deployment(name: str, run_id: str, role: str, replicas: int, spec: k8s.V1PodSpec,
                namespace: str) -> k8s.V1Deployment:
    labels = run_labels(run_id, role=role)
    selector = {key: labels[key] for key in ("stefaland.io/run", "stefaland.io/role")}
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=selector),
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=spec),
        ),
    )


def plain_build_objects(run_id: str, options: BuildOptions, pod: PodOptions, namespace: str) -> list[Any]:
    """The client Job, then the scheduler Service and Deployment and the workers Deployment."""
    address = f"tcp://{scheduler_name(run_id)}:{SCHEDULER_PORT}"
    client_labels = run_labels(run_id, role="client")
    annotations = run_annotations(out=options.out, store=options.out, config=options.catalog)
    template = k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=client_labels),
        spec=_pod_spec(pod, _client_container(run_id, pod, options, address), "Never"),
    )
    job = _job(run_id, client_labels, annotations, template, pod, namespace)
    scheduler_labels = run_labels(run_id, role="scheduler")
    service = k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=scheduler_name(run_id), namespace=namespace, labels=scheduler_labels),
        spec=k8s.V1ServiceSpec(
            selector={key: scheduler_labels[key] for key in ("stefaland.io/run", "stefaland.io/role")},
            ports=[k8s.V1ServicePort(name="tcp-comm", port=SCHEDULER_PORT, target_port="tcp-comm"),
                   k8s.V1ServicePort(name="http-dashboard", port=DASHBOARD_PORT, target_port="http-dashboard")],
        ),
    )
    scheduler = _deployment(scheduler_name(run_id), run_id, "scheduler", 1,
                            _pod_spec(pod, _scheduler_container(run_id, pod, options), "Always"), namespace)
    workers = _deployment(f"{run_id}-workers", run_id, "worker", options.workers,
                          _pod_spec(pod, _worker_container(run_id, pod, options, address), "Always"), namespace)
    return [job, service, scheduler, workers]


def operator_build_objects(run_id: str, options: BuildOptions, pod: PodOptions, namespace: str) -> list[Any]:
    """One DaskJob: the operator adds ``DASK_SCHEDULER_ADDRESS`` to the client's and the workers'
    environment, which Kubernetes substitutes for ``$(DASK_SCHEDULER_ADDRESS)`` in the command.

    The client pod restarts in place on failure (and resumes); ``--deadline`` bounds it, after
    which the operator marks the DaskJob failed and removes the cluster."""
    labels = run_labels(run_id)
    annotations = run_annotations(out=options.out, store=options.out, config=options.catalog)
    client = _pod_spec(pod, _client_container(run_id, pod, options, "$(DASK_SCHEDULER_ADDRESS)"), "OnFailure",
                       deadline=pod.active_deadline_seconds)
    worker = _pod_spec(pod, _worker_container(run_id, pod, options, None), "Always")
    scheduler = _pod_spec(pod, _scheduler_container(run_id, pod, options), "Always")
    service = k8s.V1ServiceSpec(
        type="ClusterIP",
        selector={"dask.org/cluster-name": run_id, "dask.org/component": "scheduler"},
        ports=[k8s.V1ServicePort(name="tcp-comm", protocol="TCP", port=SCHEDULER_PORT, target_port="tcp-comm"),
               k8s.V1ServicePort(name="http-dashboard", protocol="TCP", port=DASHBOARD_PORT,
                                 target_port="http-dashboard")],
    )
    role = "stefaland.io/role"
    body = {
        "apiVersion": f"{DASK_GROUP}/{DASK_VERSION}",
        "kind": "DaskJob",
        "metadata": {"name": run_id, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "job": {"metadata": {"labels": {role: "client"}}, "spec": to_dict(client)},
            "cluster": {"spec": {
                "worker": {"replicas": options.workers, "metadata": {"labels": {role: "worker"}},
                           "spec": to_dict(worker)},
                "scheduler": {"metadata": {"labels": {role: "scheduler"}}, "spec": to_dict(scheduler),
                              "service": to_dict(service)},
            }},
        },
    }
    return [DaskJob(body)]


class DaskJob(dict):
    """A DaskJob's JSON body (the kubernetes client has no model for custom resources).

    A dict, so ``manifests.to_dict``/``to_yaml`` serialise it unchanged; ``kind`` and ``name`` for
    ``client.create_run``. Its pod specs come from the client's models, as checked as the plain mode's."""

    @property
    def kind(self) -> str:
        return str(self["kind"])

    @property
    def name(self) -> str:
        return str(self["metadata"]["name"])
