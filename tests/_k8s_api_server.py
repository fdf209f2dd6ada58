"""A tiny stand-in for the Kubernetes API server, over real HTTP on loopback, for the tests.

No Kubernetes API server can run on the machines StefaLand is developed on, so this serves the
handful of REST endpoints the CLI calls (see ``stefaland/k8s/client.py``) with the same paths, JSON shapes,
``Status`` errors, bearer-token check and label selectors as the real one. It also plays the Job
controller's smallest part: creating a Job creates its pods (one per completion index) with the
labels Kubernetes adds, and deleting a Job with a propagation policy deletes them. Every request
is recorded as a (resource, verb) pair so tests can check the RBAC Role against what was used.
It lives beside the tests, not in the package: it is a test double, not something a user runs.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from _loopback_http import serve

_ROUTES = [  # (path pattern with namespace and optional name, resource, subresource)
    (re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$"), "jobs", None),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$"), "services", None),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$"), "pods", None),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$"), "pods", "log"),
    (re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$"), "deployments", None),
    (re.compile(r"^/apis/kubernetes.dask.org/v1/namespaces/([^/]+)/daskjobs(?:/([^/]+))?$"), "daskjobs", None),
]
_LIST_KINDS = {"jobs": ("batch/v1", "JobList"), "services": ("v1", "ServiceList"), "pods": ("v1", "PodList"),
               "deployments": ("apps/v1", "DeploymentList"), "daskjobs": ("kubernetes.dask.org/v1", "DaskJobList")}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality (``a=b``, ``a==b``, ``a!=b``) and existence (``a``, ``!a``) label selectors."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class FakeCluster:
    """The objects the fake server holds, keyed by (resource, namespace, name)."""

    token: str
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (resource[/sub], verb)
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    follow_delay: float = 0.05
    # The real garbage collector removes a deleted Job's dependents asynchronously; False keeps
    # them (until collect_garbage()) so the CLI's own clean-up of leftovers can be exercised.
    immediate_gc: bool = True
    # None: everything allowed; else the (resource, verb) pairs an RBAC Role grants.
    allowed: set[tuple[str, str]] | None = None
    # False: the cluster has no Dask operator, so the DaskJob resource does not exist (404)
    dask_operator: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def items(self, resource: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        return [
            obj for (res, ns, _), obj in sorted(self.objects.items())
            if res == resource and ns == namespace and matches(selector, obj["metadata"].get("labels") or {})
        ]

    def set_job_condition(self, namespace: str, name: str, condition: str) -> None:
        """Play the Job controller finishing a Job (``Complete`` or ``Failed``)."""
        with self.lock:
            job = self.objects[("jobs", namespace, name)]
            job["status"] = {
                "conditions": [{"type": condition, "status": "True", "lastTransitionTime": _now()}],
                "succeeded" if condition == "Complete" else "failed": 1,
            }
            for pod in self.items("pods", namespace, f"job-name={name}"):
                pod["status"]["phase"] = "Succeeded" if condition == "Complete" else "Failed"

    def _spawn_pods(self, namespace: str, job: dict[str, Any]) -> None:
        spec = job["spec"]
        template = spec["template"]
        name = job["metadata"]["name"]
        indexed = spec.get("completionMode") == "Indexed"
        for index in range((spec.get("completions") or 1) if indexed else 1):
            pod_name = f"{name}-{index}-{secrets.token_hex(3)}" if indexed else f"{name}-{secrets.token_hex(3)}"
            labels = dict(template["metadata"].get("labels") or {})
            labels.update({"job-name": name, "batch.kubernetes.io/job-name": name})
            if indexed:
                labels["batch.kubernetes.io/job-completion-index"] = str(index)
            self.objects[("pods", namespace, pod_name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace, "labels": labels, "uid": str(uuid.uuid4()),
                             "creationTimestamp": _now()},
                "spec": template["spec"] | {"nodeName": "gpu-node-1"},
                "status": {"phase": "Running", "startTime": _now(),
                           "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "",
                                                  "ready": True, "restartCount": 0}
                                                 for c in template["spec"]["containers"]]},
            }
            self.logs[pod_name] = [f"{pod_name} step {step} loss {1.0 / step:.3f}" for step in (1, 2, 3)]
        job["status"] = {"active": len(self.items("pods", namespace, f"job-name={name}")), "startTime": _now()}

    def _pod(self, namespace: str, name: str, labels: dict[str, Any], spec: dict[str, Any], owner: dict[str, Any],
             kind: str) -> None:
        """A running pod owned by ``owner`` (a Deployment's replica, the operator's pods of a DaskJob)."""
        ref = {"apiVersion": owner["apiVersion"], "kind": kind, "name": owner["metadata"]["name"],
               "uid": owner["metadata"]["uid"]}
        self.objects[("pods", namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "uid": str(uuid.uuid4()),
                         "creationTimestamp": _now(), "ownerReferences": [ref]},
            "spec": spec | {"nodeName": "cpu-node-1"},
            "status": {"phase": "Running", "startTime": _now(),
                       "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                                              "restartCount": 0} for c in spec["containers"]]},
        }
        self.logs[name] = [f"{name} started"]

    def _spawn_replicas(self, namespace: str, deployment: dict[str, Any]) -> None:
        """The Deployment controller's part (ReplicaSets skipped): ``replicas`` pods of its template."""
        template = deployment["spec"]["template"]
        for _ in range(deployment["spec"].get("replicas", 1)):
            name = f"{deployment['metadata']['name']}-{secrets.token_hex(5)}"
            self._pod(namespace, name, template["metadata"].get("labels") or {}, template["spec"], deployment,
                      "Deployment")
        deployment["status"] = {"replicas": deployment["spec"].get("replicas", 1),
                                "readyReplicas": deployment["spec"].get("replicas", 1)}

    def _play_dask_operator(self, namespace: str, daskjob: dict[str, Any]) -> None:
        """The Dask operator's part: the runner pod, the scheduler and the workers, labelled as the
        operator labels them (the DaskJob's labels, then each part's own), and jobStatus Running."""
        name = daskjob["metadata"]["name"]
        base = dict(daskjob["metadata"].get("labels") or {}) | {"dask.org/cluster-name": name}
        spec = daskjob["spec"]
        cluster = spec["cluster"]["spec"]
        parts = [(f"{name}-runner", spec["job"], "job-runner")]
        parts.append((f"{name}-scheduler", cluster["scheduler"], "scheduler"))
        parts += [(f"{name}-default-worker-{secrets.token_hex(5)}", cluster["worker"], "worker")
                  for _ in range(cluster["worker"].get("replicas", 1))]
        for pod_name, part, component in parts:
            labels = base | ((part.get("metadata") or {}).get("labels") or {}) | {"dask.org/component": component}
            self._pod(namespace, pod_name, labels, part["spec"], daskjob, "DaskJob")
        daskjob["status"] = {"jobStatus": "Running", "clusterName": name, "jobRunnerPodName": f"{name}-runner"}

    def _collect(self, uid: str) -> None:
        """Remove the dependents of ``uid``, and theirs (a Job's Deployments' pods)."""
        for key, other in list(self.objects.items()):
            if key in self.objects and any(ref.get("uid") == uid
                                           for ref in other["metadata"].get("ownerReferences") or []):
                self.objects.pop(key)
                self._collect(other["metadata"]["uid"])

    def collect_garbage(self) -> None:
        """Remove every object whose owner no longer exists (the garbage collector's part)."""
        with self.lock:
            removed = True
            while removed:  # a Job's Deployments go first, then their pods
                removed = False
                alive = {obj["metadata"]["uid"] for obj in self.objects.values()}
                for key, obj in list(self.objects.items()):
                    owners = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
                    if owners and not owners & alive:
                        self.objects.pop(key)
                        removed = True

    def create(self, resource: str, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("metadata", {}).get("name")
        if not name:
            return 422, _status(422, "Invalid", f"{resource}: metadata.name: Required value")
        with self.lock:
            if (resource, namespace, name) in self.objects:
                return 409, _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            body["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                                    resourceVersion="1")
            self.objects[(resource, namespace, name)] = body
            if resource == "jobs":
                self._spawn_pods(namespace, body)
            elif resource == "deployments":
                self._spawn_replicas(namespace, body)
            elif resource == "daskjobs":
                self._play_dask_operator(namespace, body)
        return 201, body

    def delete(self, resource: str, namespace: str, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
            if resource == "jobs" and body.get("propagationPolicy") in ("Background", "Foreground"):
                for pod in self.items("pods", namespace, f"job-name={name}"):
                    self.objects.pop(("pods", namespace, pod["metadata"]["name"]))
            uid = obj["metadata"]["uid"]
            if self.immediate_gc:
                self._collect(uid)
        if resource == "services":  # the real Service storage returns the deleted object
            return 200, obj
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "kind": resource, "uid": uid}}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, verb_for_item: str, verb_for_collection: str) -> tuple[str, str, str | None, str | None] | None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.cluster.queries.append(query | {"_path": [url.path]})
        if self.headers.get("Authorization") != f"Bearer {self.cluster.token}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return None
        for pattern, resource, sub in _ROUTES:
            found = pattern.match(url.path)
            if found and resource == "daskjobs" and not self.cluster.dask_operator:
                break  # no such resource on a cluster without the operator's CRDs
            if found:
                namespace, name = found.group(1), found.group(2)
                verb = verb_for_item if name else verb_for_collection
                if verb == "list" and query.get("watch") == ["true"]:
                    verb = "watch"
                permission = (f"{resource}/{sub}" if sub else resource, verb)
                self.cluster.requests.append(permission)
                if self.cluster.allowed is not None and permission not in self.cluster.allowed:
                    message = (f'{resource} is forbidden: User "fake" cannot {verb} resource "{permission[0]}" '
                               f'in the namespace "{namespace}"')
                    self._send(403, _status(403, "Forbidden", message))
                    return None
                return resource, namespace, name, sub
        self._send(404, _status(404, "NotFound", f"the server could not find the requested resource {url.path}"))
        return None

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        route = self._route("create", "create")
        if route:
            resource, namespace, name, _ = route
            self._send(*self.cluster.create(resource, namespace, self._body()))

    def do_DELETE(self) -> None:  # noqa: N802
        route = self._route("delete", "deletecollection")
        if route:
            resource, namespace, name, _ = route
            if name is None:
                self._send(405, _status(405, "MethodNotAllowed", "deletecollection is not served here"))
                return
            self._send(*self.cluster.delete(resource, namespace, name, self._body()))

    def do_GET(self) -> None:  # noqa: N802
        route = self._route("get", "list")
        if not route:
            return
        resource, namespace, name, sub = route
        query = parse_qs(urlparse(self.path).query)
        if sub == "log":
            self._send_log(namespace, name, follow=query.get("follow") == ["true"])
            return
        if name is None:
            api_version, kind = _LIST_KINDS[resource]
            with self.cluster.lock:
                items = self.cluster.items(resource, namespace, query.get("labelSelector", [""])[0])
                self._send(200, {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"},
                                 "items": items})
            return
        obj = self.cluster.objects.get((resource, namespace, name))
        if obj is None:
            self._send(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
        else:
            self._send(200, obj)

    def _send_log(self, namespace: str, name: str, follow: bool) -> None:
        if ("pods", namespace, name) not in self.cluster.objects:
            self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
            return
        lines = self.cluster.logs.get(name, [])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if not follow:
            data = "".join(line + "\n" for line in lines).encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.end_headers()  # no length: HTTP/1.0, the stream ends when the container "exits"
        for line in lines:
            self.wfile.write(line.encode() + b"\n")
            self.wfile.flush()
            time.sleep(self.cluster.follow_delay)


@dataclass
class FakeApiServer:
    url: str
    cluster: FakeCluster

    def kubeconfig(self, context: str = "fake", namespace: str = "stefaland", extra_dead_context: bool = False) -> str:
        """A kubeconfig YAML pointing at this server (optionally also at a dead one, made current)."""
        clusters = [{"name": "fake", "cluster": {"server": self.url}}]
        contexts = [{"name": context, "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]
        current = context
        if extra_dead_context:
            clusters.append({"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}})
            contexts.append({"name": "dead", "context": {"cluster": "dead", "user": "fake"}})
            current = "dead"
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": clusters, "contexts": contexts,
            "current-context": current, "users": [{"name": "fake", "user": {"token": self.cluster.token}}],
        })


@contextmanager
def fake_api_server() -> Iterator[FakeApiServer]:
    """Serve a fresh fake cluster on a free loopback port for the duration of the block."""
    cluster = FakeCluster(token=secrets.token_hex(8))
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    with serve(handler, "fake-kube-api") as port:
        yield FakeApiServer(f"http://127.0.0.1:{port}", cluster)
