"""A plan's pretraining and finetuning runs as Kubernetes Jobs, through the ``submit`` path.

Each such run becomes one submission (:func:`stefaland.k8s.submit.plan_pretrain` /
:func:`~stefaland.k8s.submit.plan_finetune` with its one fold, ``upload_config``, ``create_run``)
and is followed as ``stefaland jobs status`` follows it (its Jobs' state), every
``kubernetes.poll_seconds``. The Kubernetes run id of each plan run is written beside the plan
(``<plan>.state/k8s.json``) before its Jobs are created, so a resumed ``paper run`` attaches to a
run still in flight, creates the Jobs of one whose creation never happened under the same id, and
submits nothing twice. A Job that fails has had its retries (``backoffLimit``) from Kubernetes;
it is reported and not submitted again unless asked (``--retry-failed``). The other runs (split
files, reports, store builds of the small scale) run here, as with ``--local``; they read and
write the same object storage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.k8s import client as kube
from stefaland.k8s.manifests import PodOptions
from stefaland.k8s.runs import new_run_id
from stefaland.k8s.submit import default_image, plan_finetune, plan_pretrain, upload_config

from .execute import Echo, Handle, LocalExecutor
from .plan import Plan, Run
from .state import finished

JOB_KINDS = ("pretrain", "finetune")
LOG_LINES = 12


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


class KubeExecutor(LocalExecutor):
    """Pretraining and finetuning as Jobs; the rest as local commands."""

    def __init__(self, plan: Plan, echo: Echo, namespace: str | None = None, context: str | None = None,
                 retry_failed: bool = False) -> None:
        super().__init__(plan, echo)
        self.retry_failed = retry_failed
        settings = plan.kubernetes
        self.cluster = kube.connect(context, namespace or settings.get("namespace"))
        self.poll_seconds = float(settings.get("poll_seconds", 30))
        self.poll_interval = min(self.poll_interval, self.poll_seconds)
        self.jobs_file = plan.state_dir / "k8s.json"

    # -- the record of what was submitted --------------------------------------------------------
    def _submitted(self) -> dict[str, str]:
        if not self.jobs_file.is_file():
            return {}
        return dict(json.loads(self.jobs_file.read_text()))

    def _remember(self, run: Run, k8s_id: str) -> None:
        submitted = self._submitted()
        submitted[run.id] = k8s_id
        self.jobs_file.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_bytes_atomic(str(self.jobs_file), json.dumps(submitted, indent=1).encode())

    def _pod(self, kind: str) -> PodOptions:
        settings = self.plan.kubernetes
        gpus = settings.get("gpus") or {}
        return PodOptions(image=settings.get("image") or default_image(),
                          gpus=int(gpus.get(kind, 1) if isinstance(gpus, dict) else gpus),
                          secret=str(settings.get("secret", "stefaland-s3")),
                          backoff_limit=int(settings.get("backoff_limit", 3)))

    def _jobs(self, k8s_id: str) -> list[kube.RunPart]:
        """The run's Jobs as ``stefaland jobs status`` reads them; none when it has no Jobs (yet)."""
        try:
            return kube.run_parts(self.cluster, k8s_id)
        except StefaLandError as exc:
            if str(exc).startswith("no jobs of run"):
                return []
            raise

    # -- the executor ----------------------------------------------------------------------------
    def start(self, run: Run) -> Handle:
        if run.kind not in JOB_KINDS:
            return super().start(run)
        self.prepare(run)
        k8s_id = self._submitted().get(run.id)
        if k8s_id is not None:
            jobs = self._jobs(k8s_id)
            if jobs and not (self.retry_failed and kube.parts_state(jobs) == "Failed"):
                self.echo(f"        {run.id}: attached to {k8s_id} ({kube.parts_state(jobs)})")
                return Handle(run, time.monotonic(), extra={"k8s": k8s_id, "next": 0.0})
            if jobs:  # failed, and asked to try again: a new run id, new Jobs
                k8s_id = None
        k8s_id = k8s_id or new_run_id(run.kind)
        self._remember(run, k8s_id)  # first: a crash after creating the Jobs must not lead to a second set
        self._submit(run, k8s_id)
        self.echo(f"        {run.id}: submitted {k8s_id}")
        return Handle(run, time.monotonic(), extra={"k8s": k8s_id, "next": 0.0})

    def _submit(self, run: Run, k8s_id: str) -> None:
        argv = self.plan.argv(run)
        store, config, out = (_option(argv, o) for o in ("--store", "--config", "--out"))
        if not (store and config and out):
            raise StefaLandError(f"run {run.id}: its args need --store, --config and --out to be submitted")
        namespace = self.cluster.namespace
        if run.kind == "pretrain":
            submission = plan_pretrain(config, store, out, self._pod("pretrain"), namespace, run_id=k8s_id)
        else:
            task, split, fold = (_option(argv, o) for o in ("--task", "--split", "--fold"))
            if not (task and split and fold):
                raise StefaLandError(f"run {run.id}: its args need --task, --split and --fold to be submitted")
            submission = plan_finetune(config, store, out, task, split, fold, self._pod("finetune"), namespace,
                                       mode="per-fold-jobs", run_id=k8s_id, split_file=_option(argv, "--split-file"))
        upload_config(submission)
        kube.create_run(self.cluster, submission.objects)

    def poll(self, handle: Handle) -> tuple[bool, str | None]:
        if handle.process is not None:
            return super().poll(handle)
        now = time.monotonic()
        if now < handle.extra["next"]:
            return False, None
        handle.extra["next"] = now + self.poll_seconds
        jobs = self._jobs(handle.extra["k8s"])
        if not jobs:
            return True, f"Kubernetes run {handle.extra['k8s']} has no Jobs any more (deleted?)"
        state = kube.parts_state(jobs)
        if state == "Complete":
            if finished(self.plan, handle.run):
                return True, None
            return True, (f"Kubernetes run {handle.extra['k8s']} completed but left no finished output at "
                          f"{self.plan.resolve(handle.run.output)}")
        if state == "Failed":
            limit = self._pod(handle.run.kind).backoff_limit
            return True, f"Kubernetes run {handle.extra['k8s']} failed (its Job's backoffLimit {limit} used up)"
        return False, None

    def poll_ready(self, handle: Handle) -> bool:
        if handle.process is not None:
            return super().poll_ready(handle)
        return time.monotonic() >= handle.extra["next"]

    def tail(self, handle: Handle) -> list[str]:
        if handle.process is not None:
            return super().tail(handle)
        pods = kube.run_pods(self.cluster, handle.extra["k8s"])
        if not pods:
            return ["(no pod left to read a log from)"]
        name = pods[-1].metadata.name if pods[-1].metadata else None
        lines = list(kube.pod_log_lines(self.cluster, name)) if name else []
        log = self.plan.log_path(handle.run)
        log.parent.mkdir(parents=True, exist_ok=True)
        with Path(log).open("a") as handle_log:
            handle_log.write("\n".join(lines) + "\n")
        return lines[-LOG_LINES:]

    def stop(self, handles: list[Handle]) -> None:
        jobs = [h for h in handles if h.process is None]
        super().stop([h for h in handles if h.process is not None])
        if jobs:
            self.echo(f"{len(jobs)} Kubernetes run(s) keep running on the cluster "
                      f"({', '.join(h.extra['k8s'] for h in jobs)}); `stefaland paper run --k8s` again attaches to "
                      "them, `stefaland jobs cancel RUN` stops one")
