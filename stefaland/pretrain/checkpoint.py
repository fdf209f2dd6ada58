"""Checkpoints that are never half-written, on a local disk or on object storage.

A checkpoint file is written whole (local: temp file + rename; S3: a PUT is visible only once
complete) and only *then* is ``latest.json`` pointed at it. A run killed at any instant leaves
either the previous pointer or the new one, each naming a complete file.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import torch

from ..errors import StefaLandError
from ..storage import exists, filesystem, join, read_bytes, remove, write_bytes_atomic

log = logging.getLogger("stefaland.pretrain.checkpoint")

POINTER = "latest.json"


def checkpoint_dir(out: str) -> str:
    return join(out, "checkpoints")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:06d}.pt"


def save_checkpoint(out: str, step: int, state: dict[str, Any], keep: int = 3) -> str:
    """Write ``state`` as ``ckpt-<step>.pt``, then the pointer, then prune old checkpoints."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    name = checkpoint_name(step)
    url = join(checkpoint_dir(out), name)
    write_bytes_atomic(url, buffer.getvalue())
    pointer = {"step": step, "file": name, "epoch": state.get("epoch"), "step_in_epoch": state.get("step_in_epoch")}
    write_bytes_atomic(join(checkpoint_dir(out), POINTER), json.dumps(pointer).encode())
    _prune(out, keep, current=name)
    log.debug("checkpoint %s written", url)
    return url


def _prune(out: str, keep: int, current: str) -> None:
    fs, path = filesystem(checkpoint_dir(out))
    names = sorted(n.rsplit("/", 1)[-1] for n in fs.ls(path, detail=False))
    checkpoints = [n for n in names if n.startswith("ckpt-") and n.endswith(".pt")]
    # temp files of writes cut short by a kill: only one process writes, so none is in flight now
    leftovers = [n for n in names if n.startswith(".tmp-")]
    for old in checkpoints[:-keep] + leftovers:
        if old != current:
            remove(join(checkpoint_dir(out), old))


def latest_pointer(out: str) -> dict | None:
    url = join(checkpoint_dir(out), POINTER)
    if not exists(url):
        return None
    try:
        return json.loads(read_bytes(url))
    except json.JSONDecodeError as exc:
        raise StefaLandError(f"{url}: corrupt checkpoint pointer ({exc})") from exc


def load_latest(out: str) -> dict[str, Any] | None:
    """The state of the newest complete checkpoint under ``out``, or None when there is none."""
    pointer = latest_pointer(out)
    if pointer is None:
        return None
    url = join(checkpoint_dir(out), pointer["file"])
    try:
        return torch.load(io.BytesIO(read_bytes(url)), map_location="cpu", weights_only=False)
    except StefaLandError:
        raise StefaLandError(f"{url}: named by {POINTER} but missing; the run folder was altered") from None
