"""Temp files of the predictions writer: named after their writer, removed on SIGTERM, swept when abandoned.

A predictions file is written beside its target (or in the temp folder, before an upload) and
renamed into place, so a reader never sees half of one. So that a writer killed mid-write leaves no
temp file behind for good:

* the temp name says whose it is: ``.tmp-<pid>@<host>-<8 hex>.nc`` (or ``.zarr``);
* a SIGTERM (``kill``, a Kubernetes eviction) during the write becomes ``SystemExit(143)`` in the
  main thread, so the ``finally`` that removes the temp file runs (Python's default SIGTERM does not
  run it); a handler someone else installed is left alone;
* what a SIGKILL or a lost machine leaves is removed by the next write into the same folder:
  temp names of a process of this host that no longer runs, or of another host when untouched for
  longer than ``STEFALAND_LOCK_STALE_S`` (6 h). Nothing that does not match the pattern is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from stefaland.outputs import process_alive, stale_after_s

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_TEMP = re.compile(r"^\.tmp-(?P<pid>\d+)@(?P<host>[^/]+)-(?P<token>[0-9a-f]{8})(?:\.nc|\.zarr)$")
_IN_FLIGHT: set[str] = set()  # temp paths this process is writing now (never swept, whatever their pid)


def temp_path(parent: str, suffix: str) -> str:
    """A fresh temp path in ``parent`` named after this writer (see the module docstring)."""
    name = f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}-{uuid.uuid4().hex[:8]}{suffix}"
    return os.path.join(parent, name)


@contextlib.contextmanager
def writing(path: str) -> Iterator[str]:
    """Write to the temp ``path``: abandoned temps in its folder are swept first, and ``path`` is
    removed afterwards (renamed away on success, deleted on any error, Ctrl-C or SIGTERM)."""
    sweep_abandoned(os.path.dirname(path))
    _IN_FLIGHT.add(path)
    try:
        with _sigterm_exits():
            yield path
    finally:
        _IN_FLIGHT.discard(path)
        _remove(path)


def sweep_abandoned(folder: str) -> list[str]:
    """Remove the temp files of killed writers in ``folder``; returns their paths."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP.match(name)
        path = os.path.join(folder, name)
        if match is None or path in _IN_FLIGHT or not _abandoned(match, path):
            continue
        if _remove(path):
            log.warning("removed %s, left by a predictions write that was killed", path)
            removed.append(path)
    return removed


def _abandoned(match: re.Match[str], path: str) -> bool:
    """This host: its writer no longer runs (or is us, in a restarted container that reuses pids,
    and not among our writes in flight). Another host: untouched for longer than a lock may be."""
    if match["host"] == socket.gethostname():
        pid = int(match["pid"])
        return pid == os.getpid() or not process_alive(pid)
    try:
        return time.time() - os.lstat(path).st_mtime > stale_after_s()
    except OSError:
        return False


def _remove(path: str) -> bool:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        else:
            return False
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` while the block runs (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
