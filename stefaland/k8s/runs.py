"""Run ids and the labels/annotations that tie Kubernetes objects to a run.

Every object StefaLand creates carries the same run label, so ``jobs status RUN`` and
``jobs cancel RUN`` find everything belonging to a run with one label selector, and the run's
object-storage folder is recorded as an annotation so ``pull RUN`` knows where to download from.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

from stefaland import __version__
from stefaland.errors import StefaLandError

KINDS = ("pretrain", "finetune", "build")

RUN_LABEL = "stefaland.io/run"
KIND_LABEL = "stefaland.io/kind"
FOLD_LABEL = "stefaland.io/fold"
ROLE_LABEL = "stefaland.io/role"  # a build's pods: client, scheduler or worker
MANAGED_BY = "stefaland-cli"
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"

OUT_ANNOTATION = "stefaland.io/out"
STORE_ANNOTATION = "stefaland.io/store"
CONFIG_ANNOTATION = "stefaland.io/config"

# <kind>-<YYYYMMDD>-<HHMMSS>-<6 hex>: sortable by time, unique without a central counter, and a
# valid DNS-1123 label (it doubles as the Job name, which Kubernetes limits to 63 characters).
_RUN_ID = re.compile(r"^(pretrain|finetune|build)-\d{8}-\d{6}-[0-9a-f]{6}$")


def new_run_id(kind: str, now: datetime | None = None) -> str:
    """A fresh run id for ``kind`` ("pretrain", "finetune" or "build")."""
    if kind not in KINDS:
        raise StefaLandError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
    now = now or datetime.now(timezone.utc)
    return f"{kind}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def check_run_id(text: str) -> str:
    """Return ``text`` if it is a run id, else fail with a line showing the expected shape."""
    if not is_run_id(text):
        raise StefaLandError(
            f"{text!r} is not a run id (expected e.g. pretrain-20260101-120000-1a2b3c)"
        )
    return text


def run_kind(run_id: str) -> str:
    return run_id.split("-", 1)[0]


def run_selector(run_id: str) -> str:
    """Label selector matching every object of ``run_id``."""
    return f"{RUN_LABEL}={run_id}"


def run_labels(run_id: str, fold: int | None = None, role: str | None = None) -> dict[str, str]:
    """The labels put on every Job, pod template, Service, Deployment and DaskJob of a run."""
    labels = {
        "app.kubernetes.io/name": "stefaland",
        "app.kubernetes.io/instance": run_id,
        "app.kubernetes.io/component": run_kind(run_id),
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        RUN_LABEL: run_id,
        KIND_LABEL: run_kind(run_id),
    }
    if fold is not None:
        labels[FOLD_LABEL] = str(fold)
    if role is not None:
        labels[ROLE_LABEL] = role
    return labels


def run_annotations(out: str, store: str, config: str) -> dict[str, str]:
    """Where the run reads and writes, so ``pull`` and humans can find it from the Job alone."""
    return {OUT_ANNOTATION: out, STORE_ANNOTATION: store, CONFIG_ANNOTATION: config}
