"""Build the Kubernetes objects of a pretraining or finetuning run from the client's typed models.

Why models and not YAML text: the models reject unknown fields at construction time and serialise
to exactly the JSON the API server expects, so what ``--dry-run`` prints is what gets created.
The readable templates in ``k8s/`` at the repository root are checked against these builders by
the tests, so the two cannot drift apart.

Design points that matter on a cluster:

* one pod per node running ``torchrun`` with ``--nproc-per-node`` = GPUs per node; several nodes
  use an Indexed Job (stable pod host names ``<job>-<index>``) plus a headless Service so pod 0 is
  reachable by DNS as the c10d rendezvous host;
* ``restartPolicy: Never`` with a pod failure policy that ignores disruptions (preemption,
  node drain), so a preempted pod is simply replaced and the trainer resumes from the last
  checkpoint under ``--out`` without using up ``backoffLimit``;
* S3 credentials are referenced from a Secret, never copied into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client as k8s

from .fold_entry import FOLD_PLACEHOLDER, FOLDS_ENV
from .runs import run_annotations, run_labels

CONTAINER_NAME = "stefaland"
RDZV_PORT = 29500

# Secret keys turned into the standard AWS variables the storage layer reads (DESIGN.md §4).
REQUIRED_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_SECRET_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


@dataclass
class PodOptions:
    """Everything about where and how the pods run, shared by pretrain and finetune."""

    image: str
    gpus: int = 1  # per pod (= per node)
    cpu: str | None = None  # default: 8 per GPU
    memory: str | None = None  # default: 32Gi per GPU
    shm: str = "16Gi"
    secret: str = "stefaland-s3"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[k8s.V1Toleration] = field(default_factory=list)
    pvc: str | None = None
    pvc_mount: str = "/data"
    service_account: str | None = None
    backoff_limit: int = 3
    active_deadline_seconds: int | None = 7 * 24 * 3600
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    image_pull_policy: str = "IfNotPresent"

    def cpu_quantity(self) -> str:
        return self.cpu or str(8 * max(self.gpus, 1))

    def memory_quantity(self) -> str:
        return self.memory or f"{32 * max(self.gpus, 1)}Gi"


def _secret_env(secret: str) -> list[k8s.V1EnvVar]:
    return [
        k8s.V1EnvVar(
            name=key,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(
                    name=secret, key=key, optional=True if key in OPTIONAL_SECRET_KEYS else None
                )
            ),
        )
        for key in REQUIRED_SECRET_KEYS + OPTIONAL_SECRET_KEYS
    ]


def _container(
    run_id: str, command: list[str], pod: PodOptions, extra_env: list[k8s.V1EnvVar]
) -> k8s.V1Container:
    resources = {"cpu": pod.cpu_quantity(), "memory": pod.memory_quantity()}
    limits = {"memory": pod.memory_quantity()}
    if pod.gpus > 0:  # GPUs are an extended resource: requests must equal limits
        resources["nvidia.com/gpu"] = str(pod.gpus)
        limits["nvidia.com/gpu"] = str(pod.gpus)
    mounts = [k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm")]
    if pod.pvc:
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=pod.pvc_mount))
    env = [
        k8s.V1EnvVar(name="STEFALAND_RUN_ID", value=run_id),
        k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
        *extra_env,
        *_secret_env(pod.secret),
    ]
    return k8s.V1Container(
        name=CONTAINER_NAME,
        image=pod.image,
        image_pull_policy=pod.image_pull_policy,
        command=command,
        env=env,
        resources=k8s.V1ResourceRequirements(requests=resources, limits=limits),
        volume_mounts=mounts,
    )


def _pod_template(
    run_id: str,
    labels: dict[str, str],
    command: list[str],
    pod: PodOptions,
    extra_env: list[k8s.V1EnvVar] | None = None,
    subdomain: str | None = None,
) -> k8s.V1PodTemplateSpec:
    volumes = [
        # Data-loader workers pass batches through shared memory; the container default (64 MiB)
        # makes PyTorch's DataLoader crash with "bus error".
        k8s.V1Volume(
            name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=pod.shm)
        )
    ]
    if pod.pvc:
        volumes.append(
            k8s.V1Volume(
                name="data",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=pod.pvc),
            )
        )
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=labels),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            subdomain=subdomain,
            service_account_name=pod.service_account,
            node_selector=pod.node_selector or None,
            tolerations=pod.tolerations or None,
            containers=[_container(run_id, command, pod, extra_env or [])],
            volumes=volumes,
        ),
    )


def _failure_policy() -> k8s.V1PodFailurePolicy:
    """Preempted or drained pods are replaced without counting as failures."""
    return k8s.V1PodFailurePolicy(
        rules=[
            k8s.V1PodFailurePolicyRule(
                action="Ignore",
                on_pod_conditions=[
                    k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                ],
            )
        ]
    )


def _job(
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    template: k8s.V1PodTemplateSpec,
    pod: PodOptions,
    namespace: str,
    indexed_completions: int | None = None,
    parallelism: int | None = None,
    per_index_backoff: bool = False,
) -> k8s.V1Job:
    spec = k8s.V1JobSpec(
        template=template,
        backoff_limit=None if per_index_backoff else pod.backoff_limit,
        backoff_limit_per_index=pod.backoff_limit if per_index_backoff else None,
        active_deadline_seconds=pod.active_deadline_seconds,
        ttl_seconds_after_finished=pod.ttl_seconds_after_finished,
        pod_failure_policy=_failure_policy(),
        pod_replacement_policy="Failed",  # never two pods with the same rank/hostname at once
    )
    if indexed_completions is not None:
        spec.completion_mode = "Indexed"
        spec.completions = indexed_completions
        spec.parallelism = parallelism or indexed_completions
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=namespace, labels=labels, annotations=annotations
        ),
        spec=spec,
    )


def _torchrun(gpus: int, nodes: int = 1, rendezvous: str | None = None, run_id: str = "") -> list[str]:
    """The launcher prefix; ``--no-python`` runs the installed ``stefaland`` entry point."""
    launcher = ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(max(gpus, 1))]
    if nodes == 1:
        launcher.insert(1, "--standalone")
    else:
        launcher += [
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{rendezvous}:{RDZV_PORT}",
            "--rdzv-id", run_id, "--max-restarts", "3",
        ]
    return launcher + ["--no-python", "stefaland"]


def headless_service(name: str, labels: dict[str, str], run_id: str, namespace: str) -> k8s.V1Service:
    """DNS for the pods of an Indexed Job: ``<job>-<index>.<service>`` resolves before readiness."""
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",
            publish_not_ready_addresses=True,
            selector={"stefaland.io/run": run_id},
            ports=[k8s.V1ServicePort(name="rdzv", port=RDZV_PORT, target_port=RDZV_PORT)],
        ),
    )


def pretrain_objects(
    run_id: str, store: str, config: str, out: str, pod: PodOptions, namespace: str, nodes: int = 1
) -> list[Any]:
    """The Job (and, for several nodes, the headless Service) of one pretraining run."""
    labels = run_labels(run_id)
    annotations = run_annotations(out=out, store=store, config=config)
    trainer = ["pretrain", "--store", store, "--config", config, "--out", out]
    if nodes == 1:
        template = _pod_template(run_id, labels, _torchrun(pod.gpus) + trainer, pod)
        return [_job(run_id, labels, annotations, template, pod, namespace)]
    rendezvous = f"{run_id}-0.{run_id}"  # pod 0's stable host name under the headless Service
    command = _torchrun(pod.gpus, nodes, rendezvous, run_id) + trainer
    template = _pod_template(run_id, labels, command, pod, subdomain=run_id)
    job = _job(run_id, labels, annotations, template, pod, namespace, indexed_completions=nodes)
    return [headless_service(run_id, labels, run_id, namespace), job]


def _finetune_args(
    store: str, config: str, out: str, task: str, split: str, fold: str, split_file: str | None
) -> list[str]:
    """``stefaland finetune`` writes fold k under ``<out>/fold-<k>/`` itself, so all folds share --out."""
    args = ["finetune", "--store", store, "--config", config, "--out", out, "--task", task, "--split", split]
    if split_file:
        args += ["--split-file", split_file]
    return args + ["--fold", fold]


def finetune_objects(
    run_id: str,
    store: str,
    config: str,
    out: str,
    task: str,
    split: str,
    folds: list[int],
    pod: PodOptions,
    namespace: str,
    mode: str = "indexed",
    parallelism: int | None = None,
    split_file: str | None = None,
) -> list[k8s.V1Job]:
    """Finetuning on every fold in ``folds``; fold k writes to ``<out>/fold-<k>/``.

    ``indexed``: one Indexed Job; ``stefaland.k8s.fold_entry`` maps the completion index to the
    fold id (fold ids need not start at 0 or be contiguous) and retries are per fold.
    ``per-fold-jobs``: one ordinary Job per fold, easier to inspect or re-run one at a time.
    """
    annotations = run_annotations(out=out, store=store, config=config)
    if mode == "per-fold-jobs":
        jobs = []
        for fold in folds:
            labels = run_labels(run_id, fold=fold)
            command = _torchrun(pod.gpus) + _finetune_args(store, config, out, task, split, str(fold), split_file)
            template = _pod_template(run_id, labels, command, pod)
            jobs.append(_job(f"{run_id}-fold-{fold}", labels, annotations, template, pod, namespace))
        return jobs
    labels = run_labels(run_id)
    command = ["python", "-m", "stefaland.k8s.fold_entry"] + _torchrun(pod.gpus) + _finetune_args(
        store, config, out, task, split, FOLD_PLACEHOLDER, split_file
    )
    folds_env = [k8s.V1EnvVar(name=FOLDS_ENV, value=",".join(str(f) for f in folds))]
    template = _pod_template(run_id, labels, command, pod, extra_env=folds_env)
    job = _job(
        run_id, labels, annotations, template, pod, namespace,
        indexed_completions=len(folds), parallelism=parallelism, per_index_backoff=True,
    )
    return [job]


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-ready dict of a model, camelCase keys and ``None`` fields dropped."""
    return k8s.ApiClient().sanitize_for_serialization(obj)


def to_yaml(objects: list[Any]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f -`` accepts it."""
    return yaml.safe_dump_all([to_dict(o) for o in objects], sort_keys=False)
