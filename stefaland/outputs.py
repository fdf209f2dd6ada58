"""Claim an output before writing it: never touch what StefaLand did not create, never write twice.

Every command that writes a store, embeddings, predictions or a run folder calls
:func:`claim_output` first::

    with claim_output(out, "store", force=force, resumable=True) as claim:
        if claim.existed and force:
            claim.clear()          # removes only what is under ``out`` (ours: the marker says so)
        claim.mark()               # the marker first, so even a half-written output is recognisable
        ...write...
        claim.heartbeat()          # now and then in long writes (keeps the lock from looking stale)

What it guarantees, locally and on S3 alike:

* **Marker, not guessing.** An output is StefaLand's when it holds the marker
  ``<out>/.stefaland/zarr.json`` (a zarr group document, so zarr readers see an empty subgroup
  rather than warning about a foreign file), whose ``stefaland_output`` attribute names its kind
  (``store``, ``embed``, ``predict``, ``pretrain``, ``finetune`` ...). Single-file outputs
  (predictions ``.nc``) and zarr files written by code that cannot place the marker carry the same
  ``stefaland_output`` attribute in their own global attributes instead.
* **Refusal in one line.** A target that exists and is not a StefaLand output of that kind (a plain
  file, a folder of other files, an S3 prefix holding other things, another kind of output) is
  refused, even with ``force``. An existing output of the same kind is refused unless ``force``
  (replace it) or ``resumable`` (the caller applies its own resume rules, as ``data build`` does).
  An empty folder or prefix counts as absent.
* **Nothing outside.** :meth:`Claim.clear` removes the keys under ``<out>/`` and an object at
  ``<out>`` itself, never a parent, a sibling (``<out>2``, ``<out>.bak``) or a bucket.
* **One writer.** A lock object ``<out>.lock`` (created exclusively: ``O_EXCL`` locally, a
  conditional ``If-None-Match: *`` PUT on S3, read back to catch servers that ignore the condition)
  holds the writer's host, pid, start time and last heartbeat. A second writer gets
  "``<out>``: being written by host H pid P since T". A lock is *stale*, and taken over with a
  warning, when it was written on this host by a process that no longer exists, or when its
  heartbeat is older than ``STEFALAND_LOCK_STALE_S`` seconds (default 6 h; other hosts cannot be
  asked whether the process lives). To break a lock by hand, delete ``<out>.lock`` once you are sure
  nobody writes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import __version__, storage
from .errors import StefaLandError

log = logging.getLogger("stefaland.outputs")

MARKER = ".stefaland/zarr.json"
KIND_ATTR = "stefaland_output"
LOCK_SUFFIX = ".lock"
DEFAULT_STALE_S = 6 * 3600
_FILE_SUFFIXES = (".nc", ".nc4")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def marker_url(url: str) -> str:
    return storage.join(str(url).rstrip("/"), MARKER)


def read_marker(url: str) -> dict[str, Any] | None:
    """The marker's attributes of the output at ``url`` (None when there is no readable marker)."""
    try:
        document = json.loads(storage.read_bytes(marker_url(url)))
    except (StefaLandError, ValueError, OSError):
        return None
    attributes = document.get("attributes") if isinstance(document, dict) else None
    return attributes if isinstance(attributes, dict) and KIND_ATTR in attributes else None


def write_marker(url: str, kind: str, **extra: Any) -> None:
    """Write (or rewrite, atomically) the marker of ``url``; ``extra`` keys go beside the kind."""
    attributes = {KIND_ATTR: kind, "created": _now(), "stefaland_version": __version__, **extra}
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    storage.write_bytes_atomic(marker_url(url), json.dumps(document).encode())


def _bucket_root(url: str) -> bool:
    if not storage.is_remote(url):
        return False
    rest = str(url).split("://", 1)[1].strip("/")
    return "/" not in rest


def _listing(url: str) -> tuple[str, list[str]]:
    """``("absent" | "file" | "folder", names directly inside)`` for a local path or object URL."""
    fs, path = storage.filesystem(url)
    path = path.rstrip("/")
    if storage.is_remote(url):
        inside = fs.find(path + "/", maxdepth=None, withdirs=False)
        if inside:
            return "folder", sorted({p[len(path) + 1:].split("/", 1)[0] for p in inside})
        return ("file", []) if fs.isfile(path) else ("absent", [])
    if os.path.isdir(path):
        return "folder", sorted(os.listdir(path))
    if os.path.lexists(path):
        return "file", []
    return "absent", []


def _attribute_kind(url: str, what: str) -> str | None:
    """The ``stefaland_output`` attribute of a NetCDF file or of a zarr's root group, if any."""
    try:
        if what == "file":
            if not str(url).endswith(_FILE_SUFFIXES):
                return None
            import h5py

            fs, path = storage.filesystem(url)
            with fs.open(path, "rb") as handle, h5py.File(handle, "r") as h5:
                value = h5.attrs.get(KIND_ATTR)
            return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)
        document = json.loads(storage.read_bytes(storage.join(str(url).rstrip("/"), "zarr.json")))
        value = (document.get("attributes") or {}).get(KIND_ATTR)
        return str(value) if value is not None else None
    except Exception:  # noqa: BLE001 - unreadable means "not recognisably ours"
        return None


def output_kind(url: str) -> tuple[str, str | None]:
    """``(state, kind)``: state is absent | file | folder; kind the StefaLand kind found, else None."""
    what, names = _listing(url)
    if what == "absent" or (what == "folder" and not names):
        return "absent", None
    if what == "folder":
        marker = read_marker(url)
        if marker is not None:
            return what, str(marker[KIND_ATTR])
    return what, _attribute_kind(url, what)


# ---------------------------------------------------------------------------------------- locks

def lock_url(url: str) -> str:
    return str(url).rstrip("/") + LOCK_SUFFIX


def _stale_after() -> float:
    try:
        return float(os.environ.get("STEFALAND_LOCK_STALE_S", DEFAULT_STALE_S))
    except ValueError:
        return float(DEFAULT_STALE_S)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_exclusive(url: str, data: bytes) -> bool:
    """Create ``url`` only if it does not exist; False when it does."""
    if storage.is_remote(url):
        fs, path = storage.filesystem(url)
        try:
            fs.pipe_file(path, data, mode="create")
        except (OSError, FileExistsError) as exc:
            if fs.exists(path):
                return False
            raise StefaLandError(f"{url}: cannot create the lock ({exc})") from exc
        fs.invalidate_cache(path)
        return fs.cat_file(path) == data  # a server that ignored If-None-Match: whoever wrote last wins
    os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
    try:
        fd = os.open(url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StefaLandError(f"{url}: cannot create the lock ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def _read_lock(url: str) -> dict[str, Any] | None:
    try:
        data = json.loads(storage.read_bytes(url))
        return data if isinstance(data, dict) else None
    except StefaLandError:
        raise
    except (ValueError, OSError):
        return None


def _is_stale(holder: dict[str, Any]) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _pid_alive(holder["pid"])
    return time.time() - float(holder.get("heartbeat_unix", holder.get("started_unix", 0))) > _stale_after()


def _acquire(url: str, kind: str) -> tuple[str, str]:
    target = lock_url(url)
    token = uuid.uuid4().hex
    for _ in range(3):
        now = time.time()
        payload = {"host": socket.gethostname(), "pid": os.getpid(), "kind": kind, "token": token,
                   "started": _now(), "started_unix": now, "heartbeat_unix": now}
        if _create_exclusive(target, json.dumps(payload).encode()):
            return target, token
        try:
            holder = _read_lock(target)
        except StefaLandError:
            continue  # released between our create and read: try again
        if holder is None:
            raise StefaLandError(f"{url}: lock {target} is unreadable; delete it if nothing is writing {url}")
        if not _is_stale(holder):
            raise StefaLandError(
                f"{url}: being written by host {holder.get('host')} pid {holder.get('pid')} since "
                f"{holder.get('started')} (lock {target})"
            )
        log.warning("%s: taking over a stale lock of host %s pid %s (started %s)", url, holder.get("host"),
                    holder.get("pid"), holder.get("started"))
        storage.remove(target, recursive=False)
    raise StefaLandError(f"{url}: could not take the lock {target}; another writer keeps taking it")


# ---------------------------------------------------------------------------------------- claims

@dataclass
class Claim:
    """The right to write ``url`` (as ``kind``) until :meth:`release`; see the module docstring."""

    url: str
    kind: str
    existed: bool
    lock: str
    token: str
    released: bool = field(default=False)

    def mark(self, **extra: Any) -> None:
        """Write the marker (first thing into a new output; again with ``extra``, e.g. a record)."""
        write_marker(self.url, self.kind, **extra)

    def clear(self) -> None:
        """Remove this output (ours: checked by :func:`claim_output`) and nothing outside it."""
        remove_owned(self.url)

    def heartbeat(self) -> None:
        """Refresh the lock's time so a long write on another host is not taken for a dead one."""
        holder = _read_lock(self.lock)
        if holder is None or holder.get("token") != self.token:
            raise StefaLandError(f"{self.url}: lost the lock {self.lock} to another writer; stopping")
        holder["heartbeat_unix"] = time.time()
        storage.write_bytes_atomic(self.lock, json.dumps(holder).encode())

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            holder = _read_lock(self.lock)
        except StefaLandError:
            return
        if holder is not None and holder.get("token") == self.token:
            storage.remove(self.lock, recursive=False)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_owned(url: str) -> None:
    """Delete the keys under ``url/`` and an object at ``url``; refuse a bucket root or ``/``."""
    url = str(url).rstrip("/")
    local_root = not storage.is_remote(url) and os.path.abspath(url or "/") == "/"
    if not url or _bucket_root(url) or local_root:
        raise StefaLandError(f"{url}: refusing to remove a bucket or filesystem root")
    fs, path = storage.filesystem(url)
    path = path.rstrip("/")
    if storage.is_remote(url):
        keys = [k for k in fs.find(path + "/", withdirs=False) if k.startswith(path + "/")]
        if fs.isfile(path):
            keys.append(path)
        if keys:
            fs.rm(keys)  # explicit keys: never a recursive delete that could reach past the prefix
        fs.invalidate_cache(path)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def claim_output(url: str, kind: str, force: bool = False, resumable: bool = False) -> Claim:
    """Lock ``url`` and check it may be written as ``kind``; a one-line StefaLandError if not.

    ``claim.existed`` tells the caller a StefaLand ``kind`` output is already there (allowed only
    with ``force`` or ``resumable``); the caller then clears, replaces or resumes it. Use as a
    context manager (or call ``release()``) so the lock goes away on success and on error.
    """
    url = str(url).rstrip("/") or str(url)
    if _bucket_root(url):
        raise StefaLandError(f"{url}: is a whole bucket; write to a prefix inside it (e.g. {url}/out.zarr)")
    lock, token = _acquire(url, kind)
    claim = Claim(url, kind, False, lock, token)
    try:
        state, found = output_kind(url)
        if state != "absent":
            if found is None:
                what = "a file" if state == "file" else "a folder of other files"
                raise StefaLandError(
                    f"{url}: exists and is not a StefaLand {kind} output ({what}); choose another output path "
                    "or remove it yourself"
                )
            if found != kind:
                raise StefaLandError(f"{url}: is a StefaLand {found} output, not a {kind}; choose another output path")
            if not (force or resumable):
                raise StefaLandError(f"{url}: a StefaLand {kind} output already exists; pass --force to replace it")
            claim.existed = True
    except BaseException:
        claim.release()
        raise
    return claim

