"""Checkpoints that are never half-written, on a local disk or on object storage.

A checkpoint file is written whole (local: temp file + rename; S3: a PUT is visible only once
complete) and only *then* is ``latest.json`` pointed at it. A run killed at any instant leaves
either the previous pointer or the new one, each naming a complete file.

Two more guards, because a checkpoint is what every later command trusts: a state holding a NaN
or inf tensor is never written (a diverged run must not replace the last good checkpoint), and a
latest checkpoint that cannot be read (truncated by a full disk, damaged on a copy, deleted) is
skipped with a warning in favour of the newest intact older one.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import torch

from ..divergence import nonfinite_tensor
from ..errors import StefaLandError
from ..fileio import exists, filesystem, join, read_bytes, remove, write_bytes_atomic

log = logging.getLogger("stefaland.run.checkpoint")

POINTER = "latest.json"


def checkpoint_dir(out: str) -> str:
    return join(out, "checkpoints")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:06d}.pt"


def save_checkpoint(out: str, step: int, state: dict[str, Any], keep: int = 3) -> str:
    """Write ``state`` as ``ckpt-<step>.pt``, then the pointer, then prune old checkpoints.

    Refuses (one line, nothing written) a state with a non-finite floating-point tensor.
    """
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise StefaLandError(f"{checkpoint_dir(out)}: not writing checkpoint {checkpoint_name(step)}: tensor {bad} "
                             "holds NaN or inf (the run diverged); the previous checkpoint is kept")
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


def _step_of(name: str) -> int | None:
    try:
        return int(name[len("ckpt-"):-len(".pt")])
    except ValueError:
        return None


def _checkpoint_files(out: str) -> list[tuple[int, str]]:
    """``[(step, name)]`` of the ``ckpt-<step>.pt`` files under ``out``, oldest first."""
    fs, path = filesystem(checkpoint_dir(out))
    if not fs.exists(path):
        return []
    names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(path, detail=False)]
    found = [(_step_of(n), n) for n in names if n.startswith("ckpt-") and n.endswith(".pt")]
    return sorted((s, n) for s, n in found if s is not None)


def _prune(out: str, keep: int, current: str) -> None:
    fs, path = filesystem(checkpoint_dir(out))
    names = sorted(n.rsplit("/", 1)[-1] for n in fs.ls(path, detail=False))
    current_step = _step_of(current)
    checkpoints = [n for _, n in _checkpoint_files(out)]
    # later steps than the one just written are from a run that was resumed from an earlier,
    # intact checkpoint after its newer one failed to load: superseded, and never resumed from
    stale = [n for n in checkpoints if current_step is not None and (_step_of(n) or 0) > current_step]
    kept = [n for n in checkpoints if n not in stale]
    # temp files of writes cut short by a kill: only one process writes, so none is in flight now
    leftovers = [n for n in names if n.startswith(".tmp-")]
    for old in kept[:-keep] + stale + leftovers:
        if old != current:
            remove(join(checkpoint_dir(out), old))


def latest_pointer(out: str) -> dict | None:
    url = join(checkpoint_dir(out), POINTER)
    if not exists(url):
        return None
    try:
        pointer = json.loads(read_bytes(url))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StefaLandError(f"{url}: corrupt checkpoint pointer ({exc})") from exc
    if not isinstance(pointer, dict) or not isinstance(pointer.get("file"), str):
        raise StefaLandError(f"{url}: corrupt checkpoint pointer (no 'file' entry)")
    return pointer


def _read_checkpoint(url: str) -> dict[str, Any]:
    """One checkpoint file, or StefaLandError saying why it cannot be used."""
    try:
        data = read_bytes(url)
    except StefaLandError:
        raise StefaLandError(f"{url}: missing") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, garbage bytes, a foreign pickle: all mean "unreadable"
        raise StefaLandError(f"{url}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict):
        raise StefaLandError(f"{url}: not a StefaLand checkpoint (holds a {type(state).__name__})")
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise StefaLandError(f"{url}: tensor {bad} holds NaN or inf")
    return state


def load_latest(out: str) -> dict[str, Any] | None:
    """The state of the newest intact checkpoint under ``out``, or None when there is none.

    The pointer's file is tried first; when it is missing, truncated or unreadable (or the pointer
    itself is corrupt) the older ``ckpt-*.pt`` files are tried newest first, with a warning naming
    what was skipped. One line when checkpoints exist but none can be read.
    """
    directory = checkpoint_dir(out)
    try:
        pointer = latest_pointer(out)
        pointer_problem = None
    except StefaLandError as exc:
        pointer, pointer_problem = None, str(exc)
    files = _checkpoint_files(out)
    if pointer is None and pointer_problem is None:
        return None
    candidates = [pointer["file"]] if pointer is not None else []
    candidates += [name for _, name in reversed(files) if name not in candidates
                   and (pointer is None or (_step_of(name) or 0) < (_step_of(pointer["file"]) or 0))]
    problems = [pointer_problem] if pointer_problem else []
    for name in candidates:
        url = join(directory, name)
        try:
            state = _read_checkpoint(url)
        except StefaLandError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s; resuming from the previous intact checkpoint %s instead", "; ".join(problems), url)
        return state
    raise StefaLandError(f"{directory}: no intact checkpoint ({'; '.join(problems) or 'none found'}); "
                         "start over with --no-resume or a new --out")
