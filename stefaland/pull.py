"""A run's files on object storage: the ``manifest.json`` that vouches for them, and ``pull``.

A run folder holds ``config.yaml``, ``checkpoints/``, ``predictions/*.nc``, ``metrics.csv`` and
``manifest.json`` (``{"files": [{"path", "size", "sha256"}]}``, paths relative to the folder).
Trainers call :func:`~stefaland.run.manifest.write_run_manifest` when they finish (or after each
checkpoint; it is also importable from here, as docs/KUBERNETES.md shows it); ``pull``
downloads everything and checks each file against the nearest manifest above it, so a truncated
upload or a half-copied checkpoint is caught on the user's machine rather than in a later
analysis. Finetuning folds may write their own ``fold-<k>/manifest.json``; those count too.
Files no manifest lists (a checkpoint written after the manifest, or a run without one) are
checked by size against the object-storage listing, and the result says so.

The local folder is claimed first: it must be absent (or empty) or an earlier pull of the same
run, recorded in ``<to>/.stefaland/pulled.json``; anything else (a folder of other files, a
plain file, a StefaLand output pulled from elsewhere or trained here) is refused in one line and
left untouched. ``<to>.lock`` keeps two pulls from writing the same folder at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.progress import progress
from stefaland.run.manifest import CHUNK, MANIFEST, list_run_files, write_run_manifest

__all__ = ["MANIFEST", "PullResult", "expected_files", "list_run_files", "pull_run", "write_run_manifest"]

log = logging.getLogger("stefaland.pull")

PULLED = ".stefaland/pulled.json"  # {"from": run URL}: what a pulled folder is a copy of


@dataclass
class Expected:
    size: int
    sha256: str | None  # None: only the size is known (no manifest lists the file)


def _read_manifest(run_url: str, relative: str) -> tuple[list[dict[str, Any]], str]:
    """The manifest's entries and the sha256 of the manifest itself (so its copy is checked too)."""
    url = fileio.join(run_url, relative)
    data = fileio.read_bytes(url)
    try:
        parsed = json.loads(data)
        entries = parsed["files"]
        for entry in entries:
            int(entry["size"]), str(entry["path"]), str(entry["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StefaLandError(f"{url}: not a run manifest (expected files: [{{path, size, sha256}}])") from exc
    return entries, hashlib.sha256(data).hexdigest()


def expected_files(run_url: str, listing: dict[str, int]) -> tuple[dict[str, Expected], list[str]]:
    """What each file must be, from the nearest manifest above it or else the listing.

    Returns the expectations and the relative paths of the manifests used.
    """
    manifests = sorted((p for p in listing if posixpath.basename(p) == MANIFEST), key=len)
    expected = {path: Expected(size, None) for path, size in listing.items()}
    for manifest in manifests:  # shallow first, so a deeper manifest overrides its parent
        folder = posixpath.dirname(manifest)
        entries, own_sha256 = _read_manifest(run_url, manifest)
        if expected[manifest].sha256 is None:
            expected[manifest] = Expected(listing[manifest], own_sha256)
        for entry in entries:
            relative = posixpath.normpath(posixpath.join(folder, entry["path"]))
            if relative not in listing:
                raise StefaLandError(
                    f"{fileio.join(run_url, relative)}: listed in {manifest} but missing from object storage"
                )
            expected[relative] = Expected(int(entry["size"]), str(entry["sha256"]))
    return expected, manifests


@dataclass
class PullResult:
    directory: Path
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    checksum_verified: int = 0
    size_only: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    total_bytes: int = 0


def _local_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(run_url: str, relative: str, target: Path, expected: Expected) -> None:
    """Copy one file to a temporary name, check it, then rename it into place."""
    source = fileio.join(run_url, relative)
    fs, path = fileio.filesystem(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    digest, size = hashlib.sha256(), 0
    try:
        try:
            with fs.open(path, "rb") as reader, open(partial, "wb") as writer:
                while chunk := reader.read(CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
        except OSError as exc:  # includes s3fs's FileExpired: the object was replaced mid-download
            raise StefaLandError(
                f"{source}: cannot download ({exc.__class__.__name__}); if the run is still writing, pull again"
            ) from exc
        if size != expected.size:
            raise StefaLandError(f"{source}: size {size} bytes, expected {expected.size}")
        if expected.sha256 is not None and digest.hexdigest() != expected.sha256:
            raise StefaLandError(
                f"{source}: sha256 {digest.hexdigest()[:12]}… does not match the manifest's {expected.sha256[:12]}…"
            )
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()


def _pulled_from(directory: Path) -> str | None:
    try:
        source = json.loads((directory / PULLED).read_text()).get("from")
    except (OSError, ValueError, AttributeError):
        return None
    return str(source).rstrip("/") if source else None


def _check_destination(run_url: str, directory: Path) -> None:
    """``directory`` may receive ``run_url``'s files: absent, empty, or an earlier pull of it."""
    from stefaland.outputs import output_kind

    state, kind = output_kind(str(directory))
    if state == "absent" or (state == "folder" and _pulled_from(directory) == run_url.rstrip("/")):
        return
    if state == "file":
        raise StefaLandError(f"{directory}: exists and is a file; choose another --to")
    what = f"a StefaLand {kind} output" if kind else "a folder of other files"
    raise StefaLandError(f"{directory}: exists and is not a pull of {run_url} ({what}); choose another --to "
                         "or remove it yourself")


def pull_run(run_url: str, to: str | Path, quiet: bool = False) -> PullResult:
    """Download and verify every file of the run; files already present and verified are kept."""
    from stefaland.outputs import lock_output

    listing = list_run_files(run_url)
    if not listing:
        raise StefaLandError(f"{run_url}: the run folder is empty")
    directory = Path(to).resolve()
    with lock_output(str(directory), "pull"):
        _check_destination(run_url, directory)
        expected, manifests = expected_files(run_url, listing)
        (directory / PULLED).parent.mkdir(parents=True, exist_ok=True)
        if _pulled_from(directory) is None:
            fileio.write_bytes_atomic(str(directory / PULLED), json.dumps({"from": run_url.rstrip("/")}).encode())
        return _pull(run_url, directory, expected, manifests, quiet)


def _pull(run_url: str, directory: Path, expected: dict[str, Expected], manifests: list[str],
          quiet: bool) -> PullResult:
    result = PullResult(directory, manifests=manifests)
    if not manifests:
        log.warning("%s has no %s: files are checked by size only", run_url, MANIFEST)
    for relative in progress(sorted(expected), f"pulling {posixpath.basename(run_url.rstrip('/'))}", quiet=quiet):
        want = expected[relative]
        target = result.directory.joinpath(*relative.split("/"))
        if want.sha256 is not None and target.exists() and target.stat().st_size == want.size \
                and _local_sha256(target) == want.sha256:
            result.already_present.append(relative)
        else:
            _download(run_url, relative, target, want)
            result.downloaded.append(relative)
        if want.sha256 is None:
            result.size_only.append(relative)
        else:
            result.checksum_verified += 1
        result.total_bytes += want.size
    unlisted = result.size_only
    if manifests and unlisted:
        log.warning("%d file(s) of %s are in no manifest and were checked by size only: %s",
                    len(unlisted), run_url, ", ".join(unlisted[:5]) + (" …" if len(unlisted) > 5 else ""))
    return result
