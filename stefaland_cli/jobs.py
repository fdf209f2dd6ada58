"""``stefaland jobs list|status|logs|cancel``: follow and stop runs submitted to Kubernetes."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import click

from stefaland.errors import StefaLandError
from stefaland.k8s import client as kube
from stefaland.k8s.runs import check_run_id
from stefaland_cli.submit import cluster_options


def _age(created: datetime | None) -> str:
    if created is None:
        return "?"
    seconds = int((datetime.now(timezone.utc) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@click.group("jobs")
def jobs() -> None:
    """List, inspect, read the logs of, and cancel StefaLand runs on Kubernetes."""


@jobs.command("list")
@cluster_options
def list_command(namespace: str | None, context: str | None) -> None:
    """Every StefaLand run in the namespace, newest first."""
    cluster = kube.connect(context, namespace)
    runs = kube.list_runs(cluster)
    if not runs:
        click.echo(f"no StefaLand runs in namespace {cluster.namespace}", err=True)
        return
    rows = [["RUN", "KIND", "STATE", "JOBS", "AGE", "OUT"]]
    rows += [[r.run_id, r.kind, r.state, str(r.jobs), _age(r.created), r.out] for r in runs]
    _table(rows)


@jobs.command("status")
@click.argument("run")
@cluster_options
def status_command(run: str, namespace: str | None, context: str | None) -> None:
    """State of a run: its Jobs or DaskJob (counts, conditions), a build's Deployments, and its pods
    (phase, node, restarts)."""
    cluster = kube.connect(context, namespace)
    parts = kube.run_parts(cluster, check_run_id(run))
    annotations = next((p.annotations for p in parts if p.annotations), {})
    click.echo(f"run:   {run}  {kube.parts_state(parts)}")
    click.echo(f"out:   {annotations.get('stefaland.io/out', '?')}")
    click.echo(f"store: {annotations.get('stefaland.io/store', '?')}")
    rows = [["OBJECT", "STATE", "DETAIL"]]
    rows += [[part.name, part.state, part.detail] for part in parts]
    for deployment in kube.run_deployments(cluster, run):  # a plain-mode build's scheduler and workers
        status = deployment.status
        ready, wanted = (status.ready_replicas if status else 0) or 0, deployment.spec.replicas or 0
        rows.append([f"deployment/{deployment.metadata.name}", "Ready" if ready >= wanted else "Pending",
                     f"ready={ready}/{wanted}"])
    for pod in kube.run_pods(cluster, run):
        restarts = sum(c.restart_count for c in pod.status.container_statuses or [])
        detail = f"node={pod.spec.node_name or '-'} restarts={restarts}"
        waiting = [c.state.waiting.reason for c in pod.status.container_statuses or []
                   if c.state and c.state.waiting and c.state.waiting.reason]  # e.g. ImagePullBackOff
        for reason in ([pod.status.reason] if pod.status.reason else []) + waiting:
            detail += f" reason={reason}"
        rows.append([f"pod/{pod.metadata.name}", pod.status.phase or "?", detail])
    _table(rows)


def _print_log(cluster: kube.Cluster, pod_name: str, follow: bool, prefix: str, lock: threading.Lock) -> None:
    for line in kube.pod_log_lines(cluster, pod_name, follow=follow):
        with lock:
            click.echo(f"{prefix}{line}")


@jobs.command("logs")
@click.argument("run")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the containers exit.")
@click.option("--pod", "pod_name", default=None, help="Only this pod (default: every pod of the run).")
@cluster_options
def logs_command(run: str, follow: bool, pod_name: str | None, namespace: str | None, context: str | None) -> None:
    """Logs of a run's trainer containers; lines carry a [pod] prefix when there are several pods."""
    cluster = kube.connect(context, namespace)
    pods = [p.metadata.name for p in kube.run_pods(cluster, check_run_id(run))]
    if pod_name is not None:
        if pod_name not in pods:
            raise StefaLandError(f"run {run} has no pod {pod_name} (pods: {', '.join(pods) or 'none'})")
        pods = [pod_name]
    if not pods:
        raise StefaLandError(f"run {run} has no pods yet in namespace {cluster.namespace}; see: stefaland jobs status {run}")
    lock = threading.Lock()
    prefixes = {name: (f"[{name}] " if len(pods) > 1 else "") for name in pods}
    if not follow or len(pods) == 1:
        for name in pods:
            _print_log(cluster, name, follow, prefixes[name], lock)
        return
    errors: list[BaseException] = []

    def follow_one(name: str) -> None:
        try:
            _print_log(cluster, name, True, prefixes[name], lock)
        except BaseException as exc:  # noqa: BLE001 - reported after the other streams end
            errors.append(exc)

    threads = [threading.Thread(target=follow_one, args=(name,), daemon=True) for name in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@jobs.command("cancel")
@click.argument("run")
@cluster_options
def cancel_command(run: str, namespace: str | None, context: str | None) -> None:
    """Delete a run's Jobs (or DaskJob), pods, Services and a build's workers; its files on object
    storage are kept (a build resumes from them when submitted again with the same --out)."""
    cluster = kube.connect(context, namespace)
    deleted = kube.cancel_run(cluster, check_run_id(run))
    click.echo(f"deleted {', '.join(deleted)}")

