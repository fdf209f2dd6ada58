"""The few Kubernetes API calls the CLI makes, with kubectl's way of finding the cluster.

Connection: ``$KUBECONFIG`` (or ``~/.kube/config``) and its current context, or ``--context``;
inside a pod without a kubeconfig, the service account (in-cluster config). The namespace
defaults to the context's namespace, as with kubectl.

Only these verbs are used (``k8s/rbac.yaml`` grants exactly them): jobs, services, deployments
and daskjobs create/list/delete, pods list, pods/log get. Objects are always found by the run
label, never by guessing names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from stefaland.errors import StefaLandError

from .runs import KIND_LABEL, MANAGED_SELECTOR, OUT_ANNOTATION, RUN_LABEL, run_selector

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Cluster:
    """A connected API client and the namespace every call uses."""

    api: k8s.ApiClient
    namespace: str
    where: str  # context name or "in-cluster", for messages

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)


def _kubeconfig_paths() -> str | None:
    """kubectl's lookup, read at call time (the client library reads ``$KUBECONFIG`` at import)."""
    value = os.environ.get("KUBECONFIG")
    if value:
        return value
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def connect(context: str | None = None, namespace: str | None = None) -> Cluster:
    """Connect like kubectl: kubeconfig (optionally another ``context``), else in-cluster."""
    paths = _kubeconfig_paths()
    if paths is None:
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)
            in_cluster_ns = (
                _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if _SERVICE_ACCOUNT_NAMESPACE.exists() else "default"
            )
            return Cluster(k8s.ApiClient(configuration), namespace or in_cluster_ns, "in-cluster")
        raise StefaLandError("no kubeconfig found (set KUBECONFIG or create ~/.kube/config) and not inside a pod")
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=paths)
        chosen = active if context is None else next((c for c in contexts if c["name"] == context), None)
        if chosen is None:
            names = ", ".join(c["name"] for c in contexts) or "none"
            raise StefaLandError(f"{paths}: no context named {context!r} (contexts: {names})")
        api = k8s_config.new_client_from_config(config_file=paths, context=chosen["name"], persist_config=False)
    except (ConfigException, OSError) as exc:
        raise StefaLandError(f"{paths}: cannot load kubeconfig ({exc})") from exc
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError, AttributeError, ValueError) as exc:
        # the client library indexes the parsed YAML without checking its shape: a list where a
        # mapping belongs, or a number where a list does, surfaces as any of these
        raise StefaLandError(f"{paths}: malformed kubeconfig ({type(exc).__name__}: {exc}); it must be a YAML "
                             "mapping with lists 'clusters', 'contexts' and 'users' (see `kubectl config view`)") from exc
    default_ns = (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(api, namespace or default_ns, chosen["name"])


def _api_error(exc: Exception, cluster: Cluster, action: str) -> StefaLandError:
    """One line that says what was attempted, where, and what the server said."""
    if isinstance(exc, ApiException):
        try:  # the API server explains itself in a Status object
            reason = json.loads(exc.body or "{}").get("message") or exc.reason or ""
        except (ValueError, AttributeError):
            reason = exc.reason or ""
        if exc.status == 403:
            reason += " (k8s/rbac.yaml lists the permissions the CLI needs)"
        elif exc.status == 401:
            reason = "unauthorized (check the credentials of the kubeconfig context)"
        return StefaLandError(f"{action} in namespace {cluster.namespace} ({cluster.where}): {exc.status} {reason}")
    return StefaLandError(f"{action}: cannot reach the Kubernetes API of {cluster.where} ({exc.__class__.__name__})")


REQUEST_TIMEOUT_S = 30  # an unreachable or hung API server must not hang the CLI


def _call(cluster: Cluster, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
    try:
        return function(*args, **kwargs)
    except ApiException as exc:
        raise _api_error(exc, cluster, action) from exc
    except OSError as exc:  # urllib3 connection errors derive from OSError
        raise _api_error(exc, cluster, action) from exc
    except Exception as exc:  # urllib3.exceptions.MaxRetryError etc. are not OSErrors
        if exc.__class__.__module__.startswith("urllib3"):
            raise _api_error(exc, cluster, action) from exc
        raise


def create_run(cluster: Cluster, objects: list[Any]) -> list[str]:
    """Create the Jobs, then the Services and Deployments owned by the first Job (deleted with it by
    the garbage collector); a DaskJob (``submit build`` on a cluster with the Dask operator) owns
    what the operator makes for it."""
    from .dask_manifests import DASK_GROUP, DASK_VERSION, DASKJOB_PLURAL

    created: list[str] = []
    first_job = None
    for job in [o for o in objects if o.kind == "Job"]:
        job.metadata.namespace = cluster.namespace
        result = _call(cluster, f"creating job {job.metadata.name}", cluster.batch.create_namespaced_job,
                       cluster.namespace, job)
        first_job = first_job or result
        created.append(f"job/{result.metadata.name}")
    owned = [("Service", "service", cluster.core.create_namespaced_service),
             ("Deployment", "deployment", cluster.apps.create_namespaced_deployment)]
    for kind, noun, create in owned:
        for obj in [o for o in objects if o.kind == kind]:
            obj.metadata.namespace = cluster.namespace
            if first_job is not None:
                obj.metadata.owner_references = [
                    k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=first_job.metadata.name,
                                         uid=first_job.metadata.uid)
                ]
            result = _call(cluster, f"creating {noun} {obj.metadata.name}", create, cluster.namespace, obj)
            created.append(f"{noun}/{result.metadata.name}")
    for daskjob in [o for o in objects if o.kind == "DaskJob"]:
        daskjob["metadata"]["namespace"] = cluster.namespace
        _call(cluster, f"creating daskjob {daskjob.name}", cluster.custom.create_namespaced_custom_object,
              DASK_GROUP, DASK_VERSION, cluster.namespace, DASKJOB_PLURAL, dict(daskjob))
        created.append(f"daskjob/{daskjob.name}")
    return created


def has_dask_operator(cluster: Cluster) -> bool:
    """Whether the cluster serves DaskJobs (the Dask Kubernetes operator's CRDs are installed)."""
    return _daskjobs(cluster, "") is not None


def _daskjobs(cluster: Cluster, selector: str) -> list[dict[str, Any]] | None:
    """DaskJobs matching ``selector``; None where the cluster has no DaskJob resource (404)."""
    from .dask_manifests import DASK_GROUP, DASK_VERSION, DASKJOB_PLURAL

    try:
        found = cluster.custom.list_namespaced_custom_object(
            DASK_GROUP, DASK_VERSION, cluster.namespace, DASKJOB_PLURAL, label_selector=selector,
            _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, cluster, "listing daskjobs") from exc
    except Exception as exc:
        if isinstance(exc, OSError) or exc.__class__.__module__.startswith("urllib3"):
            raise _api_error(exc, cluster, "listing daskjobs") from exc
        raise
    return list(cast(dict[str, Any], found).get("items") or [])


# a DaskJob's status.jobStatus (set by the operator) as the one-word state of a Job
_DASKJOB_STATES = {"Successful": "Complete", "Failed": "Failed", "Running": "Running"}


@dataclass
class RunPart:
    """One Job or DaskJob of a run, as ``jobs list`` and ``jobs status`` show it."""

    name: str  # job/<name> or daskjob/<name>
    state: str
    detail: str
    labels: dict[str, str]
    annotations: dict[str, str]
    created: datetime | None


def _job_part(job: k8s.V1Job) -> RunPart:
    status = job.status or k8s.V1JobStatus()
    detail = f"active={status.active or 0} succeeded={status.succeeded or 0} failed={status.failed or 0}"
    if status.completed_indexes:
        detail += f" completed-indexes={status.completed_indexes}"
    messages = [c.message for c in status.conditions or [] if c.status == "True" and c.message]
    if messages:
        detail += f" ({'; '.join(messages)})"
    meta = _metadata(job)
    return RunPart(f"job/{meta.name}", job_state(job), detail, dict(meta.labels or {}), dict(meta.annotations or {}),
                   meta.creation_timestamp)


def _daskjob_part(body: dict[str, Any]) -> RunPart:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = status.get("jobStatus") or "JobCreated"
    workers = ((body.get("spec") or {}).get("cluster") or {}).get("spec", {}).get("worker", {}).get("replicas", "?")
    created = meta.get("creationTimestamp")
    stamp = datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None
    return RunPart(f"daskjob/{meta.get('name')}", _DASKJOB_STATES.get(phase, "Pending"),
                   f"jobStatus={phase} workers={workers}", dict(meta.get("labels") or {}),
                   dict(meta.get("annotations") or {}), stamp)


def run_parts(cluster: Cluster, run_id: str) -> list[RunPart]:
    """The Jobs and DaskJobs of ``run_id``; a run with none is an error naming the namespace searched."""
    jobs = _call(cluster, f"listing jobs of {run_id}", cluster.batch.list_namespaced_job, cluster.namespace,
                 label_selector=run_selector(run_id)).items
    parts = [_job_part(j) for j in jobs]
    if run_id.startswith("build-"):  # only builds make DaskJobs: training needs no DaskJob permission
        parts += [_daskjob_part(d) for d in _daskjobs(cluster, run_selector(run_id)) or []]
    if not parts:
        raise StefaLandError(f"no jobs of run {run_id} in namespace {cluster.namespace} ({cluster.where})")
    return sorted(parts, key=lambda p: p.name)


def run_deployments(cluster: Cluster, run_id: str) -> list[k8s.V1Deployment]:
    """A plain-mode build's scheduler and workers (none for training runs)."""
    if not run_id.startswith("build-"):
        return []
    found = _call(cluster, f"listing deployments of {run_id}", cluster.apps.list_namespaced_deployment,
                  cluster.namespace, label_selector=run_selector(run_id)).items
    return sorted(found, key=lambda d: d.metadata.name)


def _metadata(obj: k8s.V1Job | k8s.V1Deployment) -> k8s.V1ObjectMeta:
    """A listed object's metadata, which the API server always sets."""
    assert obj.metadata is not None
    return obj.metadata


def run_pods(cluster: Cluster, run_id: str) -> list[k8s.V1Pod]:
    pods = _call(cluster, f"listing pods of {run_id}", cluster.core.list_namespaced_pod, cluster.namespace,
                 label_selector=run_selector(run_id)).items
    return sorted(pods, key=lambda p: p.metadata.name)


def job_state(job: k8s.V1Job) -> str:
    """kubectl-like one-word state: Complete, Failed, Suspended, Running or Pending."""
    status = job.status or k8s.V1JobStatus()
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed", "Suspended"):
            return condition.type
        if condition.status == "True" and condition.type == "FailureTarget":
            return "Failed"
    return "Running" if (status.active or 0) > 0 else "Pending"


@dataclass
class RunSummary:
    run_id: str
    kind: str
    state: str
    jobs: int
    created: datetime | None
    out: str


def list_runs(cluster: Cluster) -> list[RunSummary]:
    """Every StefaLand run in the namespace (Jobs, and the DaskJobs of builds), newest first."""
    jobs = _call(cluster, "listing jobs", cluster.batch.list_namespaced_job, cluster.namespace,
                 label_selector=MANAGED_SELECTOR).items
    parts = [_job_part(j) for j in jobs] + [_daskjob_part(d) for d in _daskjobs(cluster, MANAGED_SELECTOR) or []]
    by_run: dict[str, list[RunPart]] = {}
    for part in parts:
        run_id = part.labels.get(RUN_LABEL)
        if run_id:
            by_run.setdefault(run_id, []).append(part)
    summaries = []
    for run_id, run_parts_ in by_run.items():
        first = run_parts_[0]
        created = min((p.created for p in run_parts_ if p.created), default=None)
        summaries.append(RunSummary(
            run_id, first.labels.get(KIND_LABEL, "?"), parts_state(run_parts_), len(run_parts_), created,
            first.annotations.get(OUT_ANNOTATION, ""),
        ))
    return sorted(summaries, key=lambda s: s.run_id.split("-", 1)[-1], reverse=True)


def parts_state(parts: list[RunPart]) -> str:
    """A run is Failed if any part failed, Complete only if all did, else the busiest state."""
    states = [p.state for p in parts]
    for state in ("Failed", "Running", "Pending", "Suspended"):
        if state in states:
            return state
    return "Complete"


def run_out(cluster: Cluster, run_id: str) -> str:
    """The object-storage folder recorded on the run's Job by ``submit``."""
    for part in run_parts(cluster, run_id):
        out = part.annotations.get(OUT_ANNOTATION)
        if out:
            return out
    raise StefaLandError(f"run {run_id}: its jobs carry no {OUT_ANNOTATION} annotation; pass the run URL instead")


def pod_log_lines(cluster: Cluster, pod_name: str, follow: bool = False) -> Iterator[str]:
    """The log of the trainer container, line by line; with ``follow`` until the container exits."""
    from .manifests import CONTAINER_NAME

    response = _call(cluster, f"reading the log of pod {pod_name}", cluster.core.read_namespaced_pod_log,
                     pod_name, cluster.namespace, container=CONTAINER_NAME, follow=follow,
                     _preload_content=False,
                     # following waits on a quiet trainer for as long as it takes; connecting does not
                     _request_timeout=(REQUEST_TIMEOUT_S, 7 * 24 * 3600) if follow else REQUEST_TIMEOUT_S)
    pending = b""
    try:
        for chunk in response.stream(4096):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")
    finally:
        response.release_conn()


def cancel_run(cluster: Cluster, run_id: str) -> list[str]:
    """Delete the run's Jobs (with their pods) and DaskJobs, then its Deployments (a build's
    scheduler and workers) and Services; returns what was deleted."""
    from .dask_manifests import DASK_GROUP, DASK_VERSION, DASKJOB_PLURAL

    deleted = []
    body = k8s.V1DeleteOptions(propagation_policy="Background")  # pods go too, without waiting
    for part in run_parts(cluster, run_id):
        kind, name = part.name.split("/", 1)
        if kind == "job":
            _call(cluster, f"deleting job {name}", cluster.batch.delete_namespaced_job, name, cluster.namespace,
                  body=body)
        else:  # the operator's owner references take its cluster, scheduler and workers with it
            _call(cluster, f"deleting daskjob {name}", cluster.custom.delete_namespaced_custom_object,
                  DASK_GROUP, DASK_VERSION, cluster.namespace, DASKJOB_PLURAL, name, body=body)
        deleted.append(part.name)
    for deployment in run_deployments(cluster, run_id):
        name = str(_metadata(deployment).name)
        _delete_owned(cluster, "deployment", name, cluster.apps.delete_namespaced_deployment, body)
        deleted.append(f"deployment/{name}")
    services = _call(cluster, f"listing services of {run_id}", cluster.core.list_namespaced_service,
                     cluster.namespace, label_selector=run_selector(run_id)).items
    for service in services:
        _delete_owned(cluster, "service", service.metadata.name, cluster.core.delete_namespaced_service, None)
        deleted.append(f"service/{service.metadata.name}")
    return deleted


def _delete_owned(cluster: Cluster, noun: str, name: str, delete: Any, body: Any) -> None:
    """Delete an object the garbage collector may already have taken with its owner Job (404 is fine)."""
    try:
        delete(name, cluster.namespace, **({"body": body} if body is not None else {}))
    except ApiException as exc:
        if exc.status != 404:
            raise _api_error(exc, cluster, f"deleting {noun} {name}") from exc
