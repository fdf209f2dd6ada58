"""``manifest.json``: the sizes and sha256 of every file of a run, written when a run finishes.

Why: object storage can hold a truncated upload or a half-copied checkpoint without a sign; the
manifest written by the trainer (from the bytes read back) lets ``stefaland pull`` check each file
it downloads (:mod:`stefaland.pull`) and ``stefaland report`` each predictions file it scores
(:mod:`stefaland.run.predictions_verify`). Finetuning folds write their own ``fold-<k>/manifest.json``, as
their last file: a fold folder without one did not finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from datetime import datetime, timezone
from typing import Any

from .. import fileio
from ..errors import StefaLandError
from ..progress import progress

MANIFEST = "manifest.json"
CHUNK = 8 * 1024 * 1024  # bytes read at a time when hashing


def list_run_files(run_url: str) -> dict[str, int]:
    """Relative path -> size of every file under ``run_url``."""
    fs, root = fileio.filesystem(run_url)
    root = root.rstrip("/")
    fs.invalidate_cache()  # a run still training changes under us (and under fsspec's listing cache)
    if not fs.exists(root):
        raise StefaLandError(f"{run_url}: run folder not found")
    found = fs.find(root, detail=True)
    files = {}
    for path, info in found.items():
        if info.get("type") == "directory":
            continue
        relative = posixpath.relpath(path.replace(os.sep, "/"), root.replace(os.sep, "/"))
        files[relative] = int(info.get("size") or 0)
    return files


def _sha256(run_url: str, relative: str) -> str:
    return file_sha256(fileio.join(run_url, relative))


def file_sha256(url: str) -> str:
    """The sha256 of the bytes at ``url`` (local or object storage), read in chunks."""
    fs, path = fileio.filesystem(url)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_run_manifest(run_url: str, quiet: bool = True) -> dict[str, Any]:
    """List every file of the run with its size and sha256 in ``<run_url>/manifest.json``.

    Call it after the last file of a run (or of a checkpoint) is written; it reads each file
    back, so the hashes describe what object storage really holds.
    """
    files = {path: size for path, size in list_run_files(run_url).items() if path != MANIFEST}
    entries = [
        {"path": path, "size": files[path], "sha256": _sha256(run_url, path)}
        for path in progress(sorted(files), "hashing run files", quiet=quiet)
    ]
    manifest = {
        "version": 1,
        "run": posixpath.basename(run_url.rstrip("/")),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": entries,
    }
    fileio.write_bytes_atomic(fileio.join(run_url, MANIFEST), json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(folder_url: str) -> dict[str, dict[str, Any]] | None:
    """``{relative path: entry}`` of ``<folder_url>/manifest.json``; None when there is none.

    An unreadable manifest is one line naming it: a run whose record of its own files is damaged
    cannot vouch for them.
    """
    url = fileio.join(folder_url, MANIFEST)
    if not fileio.exists(url):
        return None
    try:
        document = json.loads(fileio.read_bytes(url))
        return {str(entry["path"]): entry for entry in document["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise StefaLandError(f"{url}: not a readable manifest ({type(exc).__name__}: {exc})") from exc
