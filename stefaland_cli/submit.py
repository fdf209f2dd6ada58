"""``stefaland submit pretrain|finetune|build``: training as Kubernetes Jobs, a store build on a Dask cluster
(see docs/KUBERNETES.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from stefaland import fileio, settings
from stefaland.errors import StefaLandError
from stefaland.k8s import client as kube
from stefaland.k8s.manifests import PodOptions, to_dict, to_yaml
from stefaland.k8s.runs import new_run_id
from stefaland.k8s.submit import (
    FINETUNE_MODES,
    Submission,
    default_image,
    parse_node_selector,
    parse_toleration,
    plan_finetune,
    plan_pretrain,
    upload_config,
)


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--namespace and --context, shared by every command that talks to the cluster."""
    for option in reversed([
        click.option("-n", "--namespace", default=None, help="Namespace (default: the context's, like kubectl)."),
        click.option("--context", default=None, help="kubeconfig context to use instead of the current one."),
    ]):
        command = option(command)
    return command


def _pod_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--config", "config", default=None,
                     help="Run config YAML (local file or URL) [default: the paper's, shipped in the package: "
                          "pretrain_default.yaml, finetune_camels_<split>.yaml]."),
        click.option("--store", default=None,
                     help="Attribute store URL (s3://…), as the pods will read it [default: $STEFALAND_STORE, "
                          "else store: in stefaland.yaml]."),
        click.option("--runs", default=None,
                     help="Run root (s3://…): the run folder is a fresh <runs>/<run id> [default: $STEFALAND_RUNS, "
                          "else runs: in stefaland.yaml]."),
        click.option("--out", default=None,
                     help="Run folder URL (s3://…) instead of a fresh one under the run root (the same --out and "
                          "config resumes a run); the config is copied to <out>/config.yaml."),
        click.option("--gpus", type=click.IntRange(min=0), default=1, show_default=True, help="GPUs per pod (= per node)."),
        click.option("--image", default=None,
                     help="Container image [default: $STEFALAND_IMAGE, else image: in stefaland.yaml, else "
                          "stefaland:<version>]."),
        click.option("--cpu", default=None, help="CPU request per pod (default: 8 per GPU)."),
        click.option("--memory", default=None, help="Memory per pod (default: 32Gi per GPU)."),
        click.option("--shm", default="16Gi", show_default=True, help="Size of /dev/shm for data-loader workers."),
        click.option("--secret", default="stefaland-s3", show_default=True,
                     help="Secret holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_ENDPOINT_URL]."),
        click.option("--node-selector", multiple=True, metavar="KEY=VALUE", help="Node label to require (repeatable)."),
        click.option("--toleration", multiple=True, metavar="KEY[=VALUE]:EFFECT", help="Taint to tolerate (repeatable)."),
        click.option("--pvc", default=None, help="PersistentVolumeClaim to mount (e.g. a local copy of the store)."),
        click.option("--pvc-mount", default="/data", show_default=True, help="Where the PVC is mounted."),
        click.option("--service-account", default=None, help="Service account of the pods."),
        click.option("--backoff-limit", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Failed pods tolerated (preemptions do not count)."),
        click.option("--deadline", "active_deadline", type=click.IntRange(min=1), default=7 * 24 * 3600,
                     show_default=True, help="activeDeadlineSeconds of each Job."),
        click.option("--ttl", type=click.IntRange(min=0), default=7 * 24 * 3600, show_default=True,
                     help="ttlSecondsAfterFinished: finished Jobs are removed after this many seconds."),
        click.option("--dry-run", is_flag=True, help="Print the manifests instead of creating anything."),
        click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True,
                     help="Format of --dry-run's manifests."),
    ]
    for option in reversed(options):
        command = option(command)
    return cluster_options(command)


def _pod(kwargs: dict[str, Any]) -> PodOptions:
    image = settings.resolve("image", kwargs["image"]).value
    return PodOptions(
        image=image or default_image(),
        gpus=kwargs["gpus"],
        cpu=kwargs["cpu"],
        memory=kwargs["memory"],
        shm=kwargs["shm"],
        secret=kwargs["secret"],
        node_selector=parse_node_selector(kwargs["node_selector"]),
        tolerations=[parse_toleration(t) for t in kwargs["toleration"]],
        pvc=kwargs["pvc"],
        pvc_mount=kwargs["pvc_mount"],
        service_account=kwargs["service_account"],
        backoff_limit=kwargs["backoff_limit"],
        active_deadline_seconds=kwargs["active_deadline"],
        ttl_seconds_after_finished=kwargs["ttl"],
    )


def _defaults(kind: str, kwargs: dict[str, Any], split: str | None = None) -> str:
    """Fill in the store, the run folder and the config (flag, else environment, else the settings
    file; the paper's packaged config) and return the run id whose name a fresh run folder takes.

    Every missing setting is named in one line. What was taken from elsewhere than a flag is said
    on stderr, so stdout stays the manifests (--dry-run) or the run id."""
    wanted = {"store": kwargs["store"]}
    if not kwargs["out"]:
        wanted["runs"] = kwargs["runs"]
    resolved = settings.require(**wanted)
    notes = [f"{name}: {r.describe()}" for name, r in resolved.items() if r.origin != settings.FLAGS[name]]
    kwargs["store"] = resolved["store"].value
    run_id = new_run_id(kind)
    if not kwargs["out"]:
        root = resolved["runs"].value
        kwargs["out"] = fileio.join(root.rstrip("/"), run_id)
        while not kwargs["dry_run"] and fileio.exists(kwargs["out"]):  # never an existing folder
            run_id = new_run_id(kind)
            kwargs["out"] = fileio.join(root.rstrip("/"), run_id)
        notes.append(f"run folder: {kwargs['out']} (fresh, under the run root)")
    if not kwargs["config"]:
        name = "pretrain_default.yaml" if kind == "pretrain" else f"finetune_camels_{split}.yaml"
        try:
            kwargs["config"] = settings.packaged_config(name)
        except StefaLandError as exc:
            raise StefaLandError(f"--config: {exc}; pass --config for split {split!r}") from None
        notes.append(f"config: {kwargs['config']} (the paper's, packaged)")
    for note in notes:
        click.echo(note, err=True)
    return run_id


def _print(submission: Submission, output: str) -> None:
    if output == "json":
        click.echo(json.dumps([to_dict(o) for o in submission.objects], indent=2))
    else:
        click.echo(to_yaml(submission.objects), nl=False)


def _finish(plan: Callable[[str], Submission], kwargs: dict[str, Any]) -> None:
    """Dry run: print. Otherwise connect first (fail before uploading), upload, create."""
    if kwargs["dry_run"]:
        _print(plan(kwargs["namespace"] or "default"), kwargs["output"])
        return
    cluster = kube.connect(kwargs["context"], kwargs["namespace"])
    submission = plan(cluster.namespace)
    upload_config(submission)
    created = kube.create_run(cluster, submission.objects)
    click.echo(submission.run_id)
    click.echo(f"created {', '.join(created)} in namespace {cluster.namespace} ({cluster.where})", err=True)
    click.echo(f"config: {submission.config_url}", err=True)
    click.echo(f"watch:  stefaland jobs status {submission.run_id}; stefaland jobs logs {submission.run_id} -f",
               err=True)


@click.group("submit")
def submit() -> None:
    """Run pretraining or finetuning on Kubernetes as batch/v1 Jobs, or a store build on a Dask cluster."""


@submit.command("pretrain")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pods (nodes); more than one makes an Indexed Job with a headless Service.")
@_pod_options
def pretrain(nodes: int, **kwargs: Any) -> None:
    """Pretrain with torchrun: one pod per node, --gpus processes per pod.

    With $STEFALAND_STORE and $STEFALAND_RUNS set (or a stefaland.yaml), ``stefaland submit pretrain
    --gpus 6`` pretrains the paper's configuration into a fresh run folder under the run root."""
    run_id = _defaults("pretrain", kwargs)
    pod = _pod(kwargs)
    _finish(lambda namespace: plan_pretrain(kwargs["config"], kwargs["store"], kwargs["out"], pod, namespace,
                                            nodes=nodes, run_id=run_id), kwargs)


@submit.command("finetune")
@click.option("--task", required=True, help="Finetuning task (e.g. camels).")
@click.option("--split", required=True, help="Holdout scheme; the store's fold_<split> holds the folds.")
@click.option("--folds", default="all", show_default=True, help="'all' (from the store), 1,3,5 or 0-9.")
@click.option("--mode", type=click.Choice(FINETUNE_MODES), default="indexed", show_default=True,
              help="One Indexed Job (completion index -> fold) or one Job per fold.")
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="Folds running at once in indexed mode (default: all).")
@click.option("--split-file", default=None, help="Split file (s3:// or on the PVC) instead of fold_<split>.")
@_pod_options
def finetune(task: str, split: str, folds: str, mode: str, parallel: int | None, split_file: str | None,
             **kwargs: Any) -> None:
    """Finetune every fold of a split; fold k writes to <out>/fold-k/ (default --config: the paper's
    finetune_camels_<split>.yaml, packaged)."""
    if parallel is not None and mode != "indexed":
        raise StefaLandError("--parallel applies to --mode indexed only")
    run_id = _defaults("finetune", kwargs, split)
    pod = _pod(kwargs)
    _finish(lambda namespace: plan_finetune(kwargs["config"], kwargs["store"], kwargs["out"], task, split, folds,
                                            pod, namespace, mode=mode, parallelism=parallel,
                                            split_file=split_file, run_id=run_id), kwargs)


@submit.command("build")
@click.option("--catalog", required=True, help="Intake catalog URL (s3://…), as the pods will read it.")
@click.option("--out", default=None,
              help="Store URL (s3://…) the build writes [default: $STEFALAND_STORE, else store: in stefaland.yaml]; "
                   "the same --out resumes an interrupted build.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True, help="Dask worker pods.")
@click.option("--worker-cpu", default="2", show_default=True,
              help="CPUs per worker pod: one single-threaded dask worker process per whole CPU.")
@click.option("--worker-memory", default="8Gi", show_default=True, help="Memory per worker pod.")
@click.option("--client-memory", default="12Gi", show_default=True,
              help="Memory of the client pod: 40 % of it bounds a window of extracted values (12Gi: 40 years of "
                   "4,229 sites in one window, each day file read once).")
@click.option("--mode", type=click.Choice(["auto", "operator", "plain"]), default="auto", show_default=True,
              help="operator: a DaskJob for the Dask Kubernetes operator; plain: a Job, two Deployments and a "
                   "Service; auto: operator where the cluster serves DaskJobs (with --dry-run: plain).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment of the client and workers, e.g. a catalog parameter STEFALAND_GLOBAL_ROOT=s3://… "
                   "(repeatable; never credentials: those come from --secret).")
@click.option("--sources", default=None, help="Comma-separated source names (default: the catalog's).")
@click.option("--shard-size", type=click.IntRange(1, 100_000), default=None, help="Sites per shard (data build's default).")
@click.option("--start", default=None, help="First day (YYYY-MM-DD), overrides the catalog.")
@click.option("--end", default=None, help="Last day (YYYY-MM-DD), overrides the catalog.")
@click.option("--image", default=None,
              help="Container image [default: $STEFALAND_IMAGE, else image: in stefaland.yaml, else stefaland:<version>].")
@click.option("--secret", default="stefaland-s3", show_default=True,
              help="Secret holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_ENDPOINT_URL].")
@click.option("--node-selector", multiple=True, metavar="KEY=VALUE", help="Node label to require (repeatable).")
@click.option("--toleration", multiple=True, metavar="KEY[=VALUE]:EFFECT", help="Taint to tolerate (repeatable).")
@click.option("--service-account", default=None, help="Service account of the pods.")
@click.option("--backoff-limit", type=click.IntRange(min=0), default=6, show_default=True,
              help="Client pod failures tolerated (plain mode; each retry resumes the store).")
@click.option("--deadline", "active_deadline", type=click.IntRange(min=1), default=2 * 24 * 3600, show_default=True,
              help="activeDeadlineSeconds of the client.")
@click.option("--ttl", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Plain mode: seconds after the client finished before it is removed, with the workers.")
@click.option("--dry-run", is_flag=True, help="Print the manifests instead of creating anything.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True,
              help="Format of --dry-run's manifests.")
@cluster_options
def build(**kwargs: Any) -> None:
    """Build a store on a Dask cluster on Kubernetes: `stefaland data build --scheduler <the cluster>`,
    writing to object storage (docs/KUBERNETES.md, "Building the global store")."""
    from stefaland.k8s.dask_manifests import BuildOptions
    from stefaland.k8s.submit import parse_env, plan_build

    out = kwargs["out"]
    if not out:  # the store the training commands read by default is the one to build
        resolved = settings.resolve("store", None)
        if not resolved.value:
            raise StefaLandError("--out: no store given and none set ($STEFALAND_STORE or store: in stefaland.yaml)")
        click.echo(f"out: {resolved.describe()}", err=True)
        out = resolved.value
    options = BuildOptions(
        catalog=kwargs["catalog"], out=out.rstrip("/"), workers=kwargs["workers"],
        worker_cpu=kwargs["worker_cpu"], worker_memory=kwargs["worker_memory"], client_memory=kwargs["client_memory"],
        sources=[s.strip() for s in kwargs["sources"].split(",") if s.strip()] if kwargs["sources"] else None,
        shard_size=kwargs["shard_size"], start=kwargs["start"], end=kwargs["end"], env=parse_env(kwargs["env"]),
    )
    pod = PodOptions(
        image=settings.resolve("image", kwargs["image"]).value or default_image(), gpus=0, secret=kwargs["secret"],
        node_selector=parse_node_selector(kwargs["node_selector"]),
        tolerations=[parse_toleration(t) for t in kwargs["toleration"]],
        service_account=kwargs["service_account"], backoff_limit=kwargs["backoff_limit"],
        active_deadline_seconds=kwargs["active_deadline"], ttl_seconds_after_finished=kwargs["ttl"],
    )
    run_id = new_run_id("build")
    mode = kwargs["mode"]
    if kwargs["dry_run"]:
        planned = plan_build(options, pod, kwargs["namespace"] or "default",
                             "operator" if mode == "operator" else "plain", run_id=run_id)
        if mode == "auto":
            click.echo("mode: plain (--mode auto prints plain with --dry-run; --mode operator for the DaskJob)",
                       err=True)
        _print(planned, kwargs["output"])
        return
    cluster = kube.connect(kwargs["context"], kwargs["namespace"])
    if mode == "auto":
        mode = "operator" if kube.has_dask_operator(cluster) else "plain"
        click.echo(f"mode: {mode} ({'the cluster serves DaskJobs' if mode == 'operator' else 'no Dask operator'})",
                   err=True)
    submission = plan_build(options, pod, cluster.namespace, mode, run_id=run_id)
    created = kube.create_run(cluster, submission.objects)
    click.echo(submission.run_id)
    click.echo(f"created {', '.join(created)} in namespace {cluster.namespace} ({cluster.where})", err=True)
    click.echo(f"store: {options.out}", err=True)
    click.echo(f"watch:  stefaland jobs status {submission.run_id}; stefaland jobs logs {submission.run_id} "
               f"--pod <client pod> -f", err=True)
