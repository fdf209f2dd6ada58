"""Which runs of a plan are finished, and which failed last time.

Finished is read from what the runs themselves leave, never from a note of ours: a pretraining
or finetuning fold is finished when its folder holds its run record (``run.json``) and its
manifest (``manifest.json``, written last) and every file the manifest lists is there at the
size it records; a store when its build marked it complete; a split file, a catalog or a report
summary when the file exists (each is written whole, by temp file and rename). So a run killed
half-way is never taken as finished, and a run finished by hand or on another machine is.
Failures are kept beside the plan (``<plan>.state/failures.json``) so ``paper status`` can show
the last lines of a failed run's log after the command that ran it has gone.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.run.manifest import read_manifest
from stefaland.run.record import RECORD_FILE

from .plan import Plan, Run

FINISHED, FAILED, READY, WAITING, BLOCKED, UNAVAILABLE = "finished", "failed", "ready", "waiting", "blocked", "n/a"
TAIL_LINES = 12


def finished(plan: Plan, run: Run) -> bool:
    """Whether ``run``'s output proves it finished (see the module docstring)."""
    output = plan.resolve(run.output)
    try:
        if run.kind in ("pretrain", "finetune"):
            return _record_complete(output)
        if run.kind == "build":
            return _store_complete(output)
        return fileio.exists(output)
    except StefaLandError:
        return False


def _record_complete(folder: str) -> bool:
    if not fileio.exists(fileio.join(folder, RECORD_FILE)):
        return False
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    fs, root = fileio.filesystem(folder)
    for relative, entry in manifest.items():
        path = f"{root.rstrip('/')}/{relative}"
        if not fs.exists(path) or int(fs.size(path) or 0) != int(entry.get("size", -1)):
            return False
    return True


def _store_complete(url: str) -> bool:
    if not fileio.exists(url):
        return False
    from stefaland.store import open_store

    open_store(url)  # refuses an incomplete or damaged store
    return True


def failures_path(plan: Plan) -> Path:
    return plan.state_dir / "failures.json"


def read_failures(plan: Plan) -> dict[str, dict[str, Any]]:
    path = failures_path(plan)
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError):
        return {}


def write_failures(plan: Plan, failures: dict[str, dict[str, Any]]) -> None:
    path = failures_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes_atomic(str(path), json.dumps(failures, indent=1).encode())


def failure(reason: str, tail: list[str], log: str) -> dict[str, Any]:
    return {"reason": reason, "tail": tail[-TAIL_LINES:], "log": log,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(size - 64 * 1024, 0))
        text = handle.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def statuses(plan: Plan) -> dict[str, str]:
    """Each run's state: finished, failed (last try), n/a (cannot run here), blocked (needs a run
    that cannot run or failed), ready (every need finished) or waiting."""
    failures = read_failures(plan)
    state: dict[str, str] = {}
    from .plan import order

    for run_id in order(plan.runs):
        run = plan.runs[run_id]
        needs = [state[n] for n in run.needs]
        if run.unavailable:
            state[run_id] = UNAVAILABLE
        elif finished(plan, run):
            state[run_id] = FINISHED
        elif run_id in failures:
            state[run_id] = FAILED
        elif any(s in (UNAVAILABLE, FAILED, BLOCKED) for s in needs):
            state[run_id] = BLOCKED
        elif all(s == FINISHED for s in needs):
            state[run_id] = READY
        else:
            state[run_id] = WAITING
    return state
