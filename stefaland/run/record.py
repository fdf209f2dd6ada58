"""``run.json``: the record a run leaves beside its weights, read back by every later command.

Why a record: weights alone cannot be used — a later command must also know the variables, their
units and scaling, the store and the package version the run was trained with, and the store may
be gone by then. Each stage writes its own keys (pretraining: the store schema; finetuning: see
:mod:`stefaland.finetune.record`); the file itself is written and read here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import StefaLandError
from ..fileio import exists, join, read_bytes, write_bytes_atomic

RECORD_FILE = "run.json"


def write_run_record(directory: str, record: dict[str, Any]) -> str:
    """``<directory>/run.json``, written whole (values JSON cannot hold are written as strings)."""
    url = join(directory, RECORD_FILE)
    write_bytes_atomic(url, json.dumps(record, indent=2, default=str).encode())
    return url


def read_run_record(directory: str, required: Sequence[str] = ()) -> dict[str, Any] | None:
    """The record of ``directory`` (None when it has none); one line when it is corrupt or lacks a
    ``required`` key."""
    url = join(directory, RECORD_FILE)
    if not exists(url):
        return None
    try:
        record = json.loads(read_bytes(url))
    except json.JSONDecodeError as exc:
        raise StefaLandError(f"{url}: corrupt run record ({exc})") from exc
    missing = [key for key in required if key not in record]
    if missing:
        raise StefaLandError(f"{url}: run record lacks {missing[0]!r}")
    return record
