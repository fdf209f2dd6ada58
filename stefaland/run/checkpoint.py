"""Checkpoints that are never half-written, on a local disk or on object storage.

A checkpoint file is written whole (local: temp file + rename; S3: a PUT is visible only once
complete) and only *then* is ``latest.json`` pointed at it. A run killed at any instant leaves
either the previous pointer or the new one, each naming a complete file.

Two more guards, because a checkpoint is what every later command trusts: a state holding a NaN
or inf tensor is never written (a diverged run must not replace the last good checkpoint), and a
latest checkpoint that cannot be read (truncated by a full disk, damaged on a copy, deleted) is
skipped with a warning in favour of the newest intact older one.

Every checkpoint is read with ``torch.load(weights_only=True)``: unpickling a file may otherwise
call any Python function it names, and checkpoints travel (shared buckets, colleagues, ``pull``).
What StefaLand writes is tensors, plain containers and numbers, plus the numpy arrays of the
pretraining RNG state; a file naming anything else is refused, never skipped (see
:func:`load_torch_file`).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import warnings
from typing import Any

import numpy as np
import torch

from ..divergence import nonfinite_tensor
from ..errors import StefaLandError
from ..fileio import exists, filesystem, join, read_bytes, remove, write_bytes_atomic

log = logging.getLogger("stefaland.run.checkpoint")

POINTER = "latest.json"


class RefusedFile(StefaLandError):
    """A file that would have to run code to load: refused, never skipped or retried with less safety."""


def _numpy_array_globals() -> list:
    """The one allow-list beyond torch's default: numpy arrays of numbers and booleans.

    Pretraining checkpoints hold ``np.random.get_state()``, whose key is a uint32 array. Rebuilding
    such an array calls only numpy's array constructor and sets its dtype and bytes; object arrays
    (whose elements could be anything) stay out. Both spellings of the constructor are listed, so
    files written under numpy 1 (``numpy.core``) load under numpy 2 (``numpy._core``) too.
    """
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same function, numpy 1's path
    dtypes = [type(np.dtype(kind)) for kind in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                 "f2", "f4", "f8", "c8", "c16")]
    return [(_reconstruct, "numpy._core.multiarray._reconstruct"), (_reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, *dtypes]


def _named_global(message: str) -> str:
    """What a refused pickle tried to reach (``posix.system``), from torch's message, for the error line."""
    match = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", message)
    return f" (it names {match.group(1) or match.group(2)})" if match else ""


def load_torch_file(url: str, data: bytes) -> Any:
    """``torch.load`` that can only rebuild tensors, plain containers, numbers, strings and numpy arrays.

    A file that names any other class or function raises :class:`RefusedFile` (one line naming the
    file); other failures (a truncated zip, garbage bytes) propagate for the caller to call unreadable.
    """
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_array_globals()):
            warnings.simplefilter("ignore", UserWarning)  # "protocol 4 ..." notes about a foreign pickle: noise
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RefusedFile(f"{url}: refused: it holds objects other than tensors and plain metadata"
                          f"{_named_global(str(exc))}, which could run code if loaded; StefaLand never writes such a file") from None


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
        state = load_torch_file(url, data)
    except RefusedFile:
        raise
    except Exception as exc:  # truncated zip, garbage bytes: "unreadable" (a foreign pickle is RefusedFile)
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
        except RefusedFile:
            raise  # a planted file is news, not damage: stop rather than quietly resume from an older one
        except StefaLandError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s; resuming from the previous intact checkpoint %s instead", "; ".join(problems), url)
        return state
    raise StefaLandError(f"{directory}: no intact checkpoint ({'; '.join(problems) or 'none found'}); "
                         "start over with --no-resume or a new --out")
