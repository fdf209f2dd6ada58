"""Turn ``stefaland submit`` options and a run config into Kubernetes objects, and send them.

The run config travels through object storage, not a ConfigMap: ``submit`` copies it to
``<out>/config.yaml`` and the pods read it from there. That keeps the run folder self-contained
(``pull`` downloads the config with the checkpoints) and keeps configs out of the cluster's
etcd size limits. Resubmitting with the same ``--out`` and the same config resumes the run; a
different config under an existing ``--out`` is refused, so two runs never mix checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import yaml
from kubernetes import client as k8s

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.yaml_mapping import load_mapping

from .checks import check_label_key, check_node_selector, check_pod
from .dask_manifests import BuildOptions
from .manifests import PodOptions, finetune_objects, pretrain_objects
from .runs import new_run_id, run_kind

log = logging.getLogger("stefaland.k8s.submit")

FINETUNE_MODES = ("indexed", "per-fold-jobs")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass
class Submission:
    """What ``submit`` will create, before anything touches the cluster or object storage."""

    run_id: str
    namespace: str
    out: str
    config_url: str
    config_bytes: bytes
    objects: list[Any]


def read_run_config(config: str) -> tuple[bytes, dict[str, Any]]:
    """The config's bytes (uploaded unchanged) and its parsed mapping."""
    if not fileio.exists(config):
        raise StefaLandError(f"{config}: config file not found")
    data = fileio.read_bytes(config)
    return data, load_mapping(data, config, "expected a YAML mapping at the top level")


def parse_node_selector(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs, as ``kubectl``'s ``--selector`` writes them."""
    selector = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StefaLandError(f"--node-selector {item!r}: expected KEY=VALUE")
        selector[key] = value
    return selector


def parse_toleration(text: str) -> k8s.V1Toleration:
    """``KEY[=VALUE]:EFFECT``, the syntax of ``kubectl taint`` (tolerates exactly that taint)."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in TAINT_EFFECTS or not spec:
        raise StefaLandError(
            f"--toleration {text!r}: expected KEY[=VALUE]:EFFECT with EFFECT one of {', '.join(TAINT_EFFECTS)}"
        )
    key, has_value, value = spec.partition("=")
    if has_value:
        return k8s.V1Toleration(key=key, operator="Equal", value=value, effect=effect)
    return k8s.V1Toleration(key=key, operator="Exists", effect=effect)


def toleration_from_config(entry: Any, config: str) -> k8s.V1Toleration:
    """One toleration written as in a pod spec (camelCase or snake_case keys)."""
    known = set(k8s.V1Toleration.attribute_map) | set(k8s.V1Toleration.attribute_map.values())
    if not isinstance(entry, dict) or not set(entry) <= known:
        raise StefaLandError(
            f"{config}: kubernetes.tolerations entry {entry!r} is not a toleration "
            f"(keys: key, operator, value, effect, tolerationSeconds)"
        )
    snake = {name: entry.get(name, entry.get(alias)) for name, alias in k8s.V1Toleration.attribute_map.items()}
    if snake["key"]:
        check_label_key(str(snake["key"]), f"{config}: kubernetes.tolerations")
    return k8s.V1Toleration(**{k: v for k, v in snake.items() if v is not None})


def scheduling(
    parsed_config: dict[str, Any], config: str, node_selector: dict[str, str], tolerations: list[k8s.V1Toleration]
) -> tuple[dict[str, str], list[k8s.V1Toleration]]:
    """Merge the config's optional ``kubernetes:`` section with the command-line options.

    Command-line node selectors win key by key; tolerations from both places apply.
    """
    section = parsed_config.get("kubernetes") or {}
    if not isinstance(section, dict):
        raise StefaLandError(f"{config}: 'kubernetes' must be a mapping")
    from_config = section.get("node_selector") or {}
    if not isinstance(from_config, dict):
        raise StefaLandError(f"{config}: kubernetes.node_selector must be a mapping of labels")
    from_config = {str(k): str(v) for k, v in from_config.items()}
    check_node_selector(from_config, f"{config}: kubernetes.node_selector")
    merged = from_config | node_selector
    config_tolerations = section.get("tolerations") or []
    if not isinstance(config_tolerations, list):
        raise StefaLandError(f"{config}: kubernetes.tolerations must be a list")
    return merged, [toleration_from_config(t, config) for t in config_tolerations] + list(tolerations)


def check_out_url(out: str) -> None:
    """The run folder must be object storage: submit uploads the config there and pull reads it."""
    if not fileio.is_remote(out):
        raise StefaLandError(f"--out {out}: the run folder must be an object-storage URL (s3://…), not a local path")


def check_visible_to_pods(url: str, option: str, pod: PodOptions) -> None:
    """Pods cannot see the submitting machine's disk: only object storage or the mounted PVC."""
    if fileio.is_remote(url):
        return
    if pod.pvc and (url == pod.pvc_mount or url.startswith(pod.pvc_mount.rstrip("/") + "/")):
        return
    hint = f" or a path under the PVC mount {pod.pvc_mount}" if pod.pvc else " (or mount a PVC with --pvc)"
    raise StefaLandError(f"{option} {url}: a local path is not visible to the pods; use an s3:// URL{hint}")


def folds_in_store(store: str, task: str, split: str, split_file: str | None = None) -> list[int]:
    """Fold ids of ``split``, read exactly as ``stefaland finetune --fold all`` will read them.

    Only the coordinates are opened (not the whole store), so this is quick even on S3.
    """
    import xarray as xr

    from stefaland.run.folds import fold_ids
    from stefaland.splits import holdout_for

    options = fileio.storage_options_for(store) if fileio.is_remote(store) else None
    try:
        dataset = xr.open_zarr(store, storage_options=options)
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise StefaLandError(f"{store}: cannot open the store to list the folds of '{split}' ({exc})") from exc
    try:
        folds = fold_ids(holdout_for(task, split).assignment(dataset, split_file))
    except StefaLandError as exc:
        raise StefaLandError(f"{store}: {exc}") from exc
    if not folds:
        raise StefaLandError(f"{store}: split '{split}' assigns no site to any fold")
    return folds


def finetune_folds(spec: str, store: str, task: str, split: str, split_file: str | None = None) -> list[int]:
    """The fold ids ``--folds`` names; the store is read only for ``all``.

    One Job runs one fold, so a holdout that does not hold sites out (the temporal holdout, one
    model of every site) is refused here: ``stefaland finetune --split temporal`` runs it.
    """
    from stefaland.splits import ALL, holdout_for, parse_fold_spec

    holdout = holdout_for(task, split)
    if not holdout.holds_out_sites:
        raise StefaLandError(f"--split {split}: submit finetune runs the folds of a spatial holdout; the {split} "
                             f"holdout is one run (stefaland finetune --split {split})")
    known = folds_in_store(store, task, split, split_file) if spec.strip() == ALL else None
    return parse_fold_spec(spec, known, split, "--folds")


def check_split_header(split_file: str, split: str) -> None:
    """A split file the client can read must record the scheme named by ``--split`` (a file only on
    the PVC cannot be read from here; ``apply_split(..., scheme=)`` checks it where it is read)."""
    from stefaland.splits import read_split

    if fileio.is_remote(split_file) or os.path.isfile(split_file):
        read_split(split_file, scheme=split)


def trainer_config(kind: str, data: bytes, parsed: dict[str, Any], config: str) -> bytes:
    """The bytes the pods get: validated by the trainer's own schema now, not after GPU scheduling.

    The ``kubernetes:`` section is for ``submit`` only and the trainers reject unknown keys, so it
    is removed (the rest is re-serialised); a config without one is uploaded byte for byte.
    """
    if "kubernetes" in parsed:
        parsed = {key: value for key, value in parsed.items() if key != "kubernetes"}
        data = yaml.safe_dump(parsed, sort_keys=False).encode()
    if kind == "pretrain":
        from stefaland.pretrain.config import parse_config

        parse_config(data.decode("utf-8"), source=config)
    else:
        from stefaland.finetune.config import config_from_dict

        config_from_dict(parsed, config)
    return data


def _with_scheduling(pod: PodOptions, parsed_config: dict[str, Any], config: str) -> PodOptions:
    node_selector, tolerations = scheduling(parsed_config, config, pod.node_selector, pod.tolerations)
    return replace(pod, node_selector=node_selector, tolerations=tolerations)


def _config_target(out: str) -> str:
    return fileio.join(out, "config.yaml")


def plan_pretrain(
    config: str, store: str, out: str, pod: PodOptions, namespace: str, nodes: int = 1,
    run_id: str | None = None,
) -> Submission:
    """Everything ``submit pretrain`` will create; nothing is written yet."""
    if nodes < 1 or pod.gpus < 0:
        raise StefaLandError("--nodes must be >= 1 and --gpus >= 0")
    check_pod(pod, namespace)
    check_visible_to_pods(store, "--store", pod)
    check_out_url(out)
    data, parsed = read_run_config(config)
    pod = _with_scheduling(pod, parsed, config)
    data = trainer_config("pretrain", data, parsed, config)
    run_id = run_id or new_run_id("pretrain")
    target = _config_target(out)
    objects = pretrain_objects(run_id, store, target, out, pod, namespace, nodes=nodes)
    return Submission(run_id, namespace, out, target, data, objects)


def plan_finetune(
    config: str, store: str, out: str, task: str, split: str, folds_spec: str, pod: PodOptions,
    namespace: str, mode: str = "indexed", parallelism: int | None = None, run_id: str | None = None,
    split_file: str | None = None,
) -> Submission:
    """Everything ``submit finetune`` will create; reads the store only for ``--folds all``."""
    if mode not in FINETUNE_MODES:
        raise StefaLandError(f"--mode {mode!r}: expected one of {', '.join(FINETUNE_MODES)}")
    check_pod(pod, namespace)
    check_visible_to_pods(store, "--store", pod)
    if split_file is not None:
        check_visible_to_pods(split_file, "--split-file", pod)
        check_split_header(split_file, split)
    check_out_url(out)
    data, parsed = read_run_config(config)
    pod = _with_scheduling(pod, parsed, config)
    data = trainer_config("finetune", data, parsed, config)
    folds = finetune_folds(folds_spec, store, task, split, split_file)
    run_id = run_id or new_run_id("finetune")
    target = _config_target(out)
    objects = finetune_objects(
        run_id, store, target, out, task, split, folds, pod, namespace, mode=mode, parallelism=parallelism,
        split_file=split_file,
    )
    return Submission(run_id, namespace, out, target, data, objects)


def _same_config(kind: str, saved: bytes, ours: bytes) -> bool:
    """Equal bytes, or equal settings: ``stefaland pretrain`` rewrites ``<out>/config.yaml`` in its
    own serialisation (defaults spelled out) once it starts, and compares parsed configs itself."""
    if saved == ours:
        return True
    if kind != "pretrain":
        return False
    from stefaland.pretrain.config import parse_config

    try:
        return parse_config(saved.decode("utf-8")) == parse_config(ours.decode("utf-8"))
    except (StefaLandError, UnicodeDecodeError):
        return False


def upload_config(submission: Submission) -> None:
    """Put the config where the pods read it; refuse to mix two configs in one run folder.

    ``--out`` must be new (or empty) or a StefaLand run of the same kind: a prefix holding other
    things is refused in one line, and a new one gets the run marker before the config. A
    pretraining run that another writer still holds (a live lock) is refused here, not in the pod.
    """
    from stefaland.outputs import adopt_output, check_unlocked

    kind = run_kind(submission.run_id)
    adopt_output(submission.out, kind)
    if kind == "pretrain":
        check_unlocked(submission.out)
    target = submission.config_url
    if fileio.exists(target):
        if not _same_config(run_kind(submission.run_id), fileio.read_bytes(target), submission.config_bytes):
            raise StefaLandError(
                f"{target} already holds a different config; use a new --out (or the same config to resume)"
            )
        log.info("%s already holds this config: the run resumes from its last checkpoint", target)
        return
    fileio.write_bytes_atomic(target, submission.config_bytes)


def default_image() -> str:
    """``$STEFALAND_IMAGE`` or the tag the repository's Dockerfile is documented to build."""
    from stefaland import __version__

    return os.environ.get("STEFALAND_IMAGE") or f"stefaland:{__version__}"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` for the build's pods (a catalog parameter such as STEFALAND_GLOBAL_ROOT).

    Credentials are refused here: they reach the pods only from the Secret (``--secret``), by
    reference, so they never stand in a manifest, ``--dry-run``'s output or the cluster's etcd."""
    from stefaland.catalog.template import names_credential

    from .manifests import OPTIONAL_SECRET_KEYS, REQUIRED_SECRET_KEYS

    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise StefaLandError(f"--env {name or item!r}: expected NAME=VALUE with NAME a variable name")
        if name in REQUIRED_SECRET_KEYS + OPTIONAL_SECRET_KEYS or names_credential(name):
            raise StefaLandError(f"--env {name}: credentials and the S3 endpoint reach the pods from the Secret "
                                 "(--secret), never as a value in the manifest")
        env[name] = value
    return env


def plan_build(options: BuildOptions, pod: PodOptions, namespace: str, mode: str,
               run_id: str | None = None) -> Submission:
    """Everything ``submit build`` will create (``mode``: operator or plain); nothing is touched yet.

    The catalog and the store must be object storage: the pods read the one and write the other."""
    from .dask_manifests import operator_build_objects, plain_build_objects

    if mode not in ("operator", "plain"):
        raise StefaLandError(f"--mode {mode!r}: expected operator or plain")
    if options.workers < 1:
        raise StefaLandError("--workers must be at least 1")
    check_pod(replace(pod, gpus=0, cpu=options.worker_cpu, memory=options.worker_memory), namespace)
    for cpu, memory in ((options.client_cpu, options.client_memory), (options.scheduler_cpu, options.scheduler_memory)):
        check_pod(replace(pod, gpus=0, cpu=cpu, memory=memory), namespace)
    options.worker_processes()
    if not fileio.is_remote(options.catalog):
        raise StefaLandError(f"--catalog {options.catalog}: a local path is not visible to the pods; copy the "
                             "catalog to object storage and give its s3:// URL")
    if not fileio.is_remote(options.out):
        raise StefaLandError(f"--out {options.out}: the store must be an object-storage URL (s3://…): "
                             "the client pod writes it and every later run reads it from there")
    run_id = run_id or new_run_id("build")
    build = operator_build_objects if mode == "operator" else plain_build_objects
    return Submission(run_id, namespace, options.out, options.catalog, b"", build(run_id, options, pod, namespace))
