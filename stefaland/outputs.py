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
  ``stefaland_output`` attribute in their own global attributes instead; text files that cannot
  hold an attribute (split files) are recognised by their first line (:data:`HEADER_KINDS`).
  Folders of small files (a report's tables and plots) carry the marker like any folder.
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
  warning, when it was written on this machine by a process that no longer exists, or when its
  heartbeat is older than ``STEFALAND_LOCK_STALE_S`` seconds (default 6 h, or what a long run
  declared; other hosts cannot be asked whether the process lives): the full rules are below. To
  break a lock by hand, delete ``<out>.lock`` once you are sure nobody writes.

How a lock is judged stale (:func:`_is_stale`), in this order:

1. *Same machine* (same host name and same kernel boot id): stale when the pid is gone, or is now
   another process (its start time differs: pids are reused, and a restarted container numbers
   its processes from 1 again). Never stale while that very process lives.
2. *Same host name, another boot, local disk*: the machine rebooted since; stale.
3. *Same Kubernetes run* (the holder's ``STEFALAND_RUN_ID`` is ours, on another host or boot): the
   Job only starts a replacement pod once the previous one has ended, and only one process of a run
   (rank 0) holds the lock, so the holder is the preempted pod we replace; stale. (A Job's pods
   keep the same host name across replacements, on another node, hence the run id.)
4. *Anything else*: stale when the heartbeat is older than ``STEFALAND_LOCK_STALE_S`` when set,
   else the holder's own ``stale_after_s``, else 6 h. Long runs (pretraining, finetuning) call
   :meth:`Claim.keep_alive`, a background heartbeat every minute declaring ``stale_after_s`` =
   10 min, so a run killed on another machine frees its folder ten minutes later without anyone
   deleting the lock; a live run, however slow its epochs, never looks stale. (Clocks of the
   machines involved are assumed to agree within minutes.)

A writer whose lock was taken over anyway (its heartbeat stalled for longer than that) finds out at
its next heartbeat and stops at its next :meth:`Claim.check` with one line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import __version__, fileio
from .errors import StefaLandError

log = logging.getLogger("stefaland.outputs")

MARKER = ".stefaland/zarr.json"
KIND_ATTR = "stefaland_output"
LOCK_SUFFIX = ".lock"
DEFAULT_STALE_S = 6 * 3600
RUN_HEARTBEAT_S = 60.0  # keep_alive(): how often a long run refreshes its lock
RUN_STALE_S = 600.0  # keep_alive(): after how long without a heartbeat its lock may be taken over
RUN_ID_ENV = "STEFALAND_RUN_ID"  # set in every pod of a `stefaland submit` run
_FILE_SUFFIXES = (".nc", ".nc4")
#: Text files that say what they are in their first line (no attribute to carry a kind): a split
#: file's ``# stefaland-split {...}`` header (stefaland.splits.splitfile.MAGIC) makes it kind "split".
HEADER_KINDS: dict[bytes, str] = {b"# stefaland-split ": "split", b"# stefaland paper plan": "paper-plan"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def marker_url(url: str) -> str:
    return fileio.join(str(url).rstrip("/"), MARKER)


def read_marker(url: str) -> dict[str, Any] | None:
    """The marker's attributes of the output at ``url`` (None when there is no readable marker)."""
    try:
        document = json.loads(fileio.read_bytes(marker_url(url)))
    except (StefaLandError, ValueError, OSError):
        return None
    attributes = document.get("attributes") if isinstance(document, dict) else None
    return attributes if isinstance(attributes, dict) and KIND_ATTR in attributes else None


def write_marker(url: str, kind: str, **extra: Any) -> None:
    """Write (or rewrite, atomically) the marker of ``url``; ``extra`` keys go beside the kind."""
    attributes = {KIND_ATTR: kind, "created": _now(), "stefaland_version": __version__, **extra}
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    fileio.write_bytes_atomic(marker_url(url), json.dumps(document).encode())


def _bucket_root(url: str) -> bool:
    if not fileio.is_remote(url):
        return False
    rest = str(url).split("://", 1)[1].strip("/")
    return "/" not in rest


def _listing(url: str) -> tuple[str, list[str]]:
    """``("absent" | "file" | "folder", names directly inside)`` for a local path or object URL."""
    fs, path = fileio.filesystem(url)
    path = path.rstrip("/")
    if fileio.is_remote(url):
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
                return _header_kind(url)
            import h5py

            fs, path = fileio.filesystem(url)
            with fs.open(path, "rb") as handle, h5py.File(handle, "r") as h5:
                value = h5.attrs.get(KIND_ATTR)
            return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)
        document = json.loads(fileio.read_bytes(fileio.join(str(url).rstrip("/"), "zarr.json")))
        value = (document.get("attributes") or {}).get(KIND_ATTR)
        return str(value) if value is not None else None
    except Exception:  # noqa: BLE001 - unreadable means "not recognisably ours"
        return None


def _header_kind(url: str) -> str | None:
    """The kind a text file declares in its first line (:data:`HEADER_KINDS`), if any."""
    fs, path = fileio.filesystem(url)
    longest = max(len(prefix) for prefix in HEADER_KINDS)
    with fs.open(path, "rb") as handle:
        start = handle.read(longest)
    return next((kind for prefix, kind in HEADER_KINDS.items() if start.startswith(prefix)), None)


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


def _stale_after(holder: dict[str, Any] | None = None) -> float:
    """``STEFALAND_LOCK_STALE_S`` when set, else what the holder declared, else 6 h."""
    for value in (os.environ.get("STEFALAND_LOCK_STALE_S"), (holder or {}).get("stale_after_s")):
        try:
            if value is not None and float(value) >= 0:
                return float(value)
        except (TypeError, ValueError):
            pass
    return float(DEFAULT_STALE_S)


def _boot_id() -> str | None:
    """This kernel's boot id (Linux), shared by every container on the machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _pid_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid from its first owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def stale_after_s() -> float:
    """Seconds after which an abandoned write of another machine may be cleaned up (``STEFALAND_LOCK_STALE_S``,
    default 6 h): the same limit as a lock's, for temp files that cannot hold a heartbeat."""
    return _stale_after()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this machine (a temp file named after a dead writer is abandoned)."""
    return _pid_alive(pid)


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
    if fileio.is_remote(url):
        fs, path = fileio.filesystem(url)
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
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:  # a full disk must not leave a cut-off lock that blocks every later run
        os.unlink(url)
        raise StefaLandError(f"{url}: cannot write the lock ({exc.strerror or exc})") from exc
    return True


def _read_lock(url: str) -> dict[str, Any] | None:
    try:
        data = json.loads(fileio.read_bytes(url))
        return data if isinstance(data, dict) else None
    except StefaLandError:
        raise
    except (ValueError, OSError):
        return None


def _is_stale(holder: dict[str, Any], remote: bool = False) -> bool:
    """Whether the lock ``holder`` wrote may be taken over; the rules are in the module docstring."""
    same_host = holder.get("host") == socket.gethostname()
    boot, held_boot = _boot_id(), holder.get("boot_id")
    pid = holder.get("pid")
    if same_host and (boot is None or held_boot is None or boot == held_boot) and isinstance(pid, int):
        if not _pid_alive(pid):
            return True
        started = holder.get("pid_start")
        now_started = _pid_start(pid)
        return started is not None and now_started is not None and now_started != started
    if same_host and not remote:
        return True  # a lock on this machine's disk from before its last boot
    run_id = os.environ.get(RUN_ID_ENV)
    if run_id and holder.get("run_id") == run_id:
        return True  # the pod this one replaces (see the module docstring)
    try:
        beat = float(holder.get("heartbeat_unix", holder.get("started_unix", 0)))
    except (TypeError, ValueError):
        beat = 0.0
    return time.time() - beat > _stale_after(holder)


def _why_stale(holder: dict[str, Any]) -> str:
    if holder.get("host") == socket.gethostname():
        return "its process is gone"
    if os.environ.get(RUN_ID_ENV) and holder.get("run_id") == os.environ.get(RUN_ID_ENV):
        return f"it was held by an earlier pod of run {holder.get('run_id')}"
    return "its heartbeat stopped"


def _acquire(url: str, kind: str) -> tuple[str, str]:
    target = lock_url(url)
    token = uuid.uuid4().hex
    for _ in range(3):
        now = time.time()
        payload = {"host": socket.gethostname(), "pid": os.getpid(), "kind": kind, "token": token,
                   "started": _now(), "started_unix": now, "heartbeat_unix": now,
                   "boot_id": _boot_id(), "pid_start": _pid_start(os.getpid()), "run_id": os.environ.get(RUN_ID_ENV)}
        if _create_exclusive(target, json.dumps(payload).encode()):
            return target, token
        try:
            holder = _read_lock(target)
        except StefaLandError:
            continue  # released between our create and read: try again
        if holder is None:
            raise StefaLandError(f"{url}: lock {target} is unreadable; delete it if nothing is writing {url}")
        if not _is_stale(holder, fileio.is_remote(target)):
            raise StefaLandError(f"{url}: being written by {_holder_text(holder)} (lock {target})")
        log.warning("%s: taking over the stale lock of host %s pid %s (started %s): %s", url, holder.get("host"),
                    holder.get("pid"), holder.get("started"), _why_stale(holder))
        fileio.remove(target, recursive=False)
    raise StefaLandError(f"{url}: could not take the lock {target}; another writer keeps taking it")


def _holder_text(holder: dict[str, Any]) -> str:
    text = f"host {holder.get('host')} pid {holder.get('pid')} since {holder.get('started')}"
    if holder.get("run_id"):
        text += f", run {holder['run_id']}"
    try:
        age = time.time() - float(holder["heartbeat_unix"])
        if age > 120:
            text += f", last heartbeat {age / 60:.0f} min ago"
    except (KeyError, TypeError, ValueError):
        pass
    return text


def check_unlocked(url: str) -> None:
    """One line when a live writer holds ``url``'s lock (e.g. before submitting a run into it)."""
    target = lock_url(url)
    if fileio.is_remote(target):
        fs, path = fileio.filesystem(target)
        fs.invalidate_cache(path)
    try:
        holder = _read_lock(target)
    except StefaLandError:
        return  # no lock
    if holder is not None and not _is_stale(holder, fileio.is_remote(target)):
        raise StefaLandError(f"{url}: being written by {_holder_text(holder)} (lock {target}); wait until it "
                             f"stops, or delete {target} if nothing writes there")


class LockLost(StefaLandError):
    """The lock was taken over by another writer (or deleted): stop writing."""


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
    lost: str | None = field(default=None)  # why the heartbeat thread found the lock gone
    _stale_after_s: float | None = field(default=None, repr=False)
    _stop: threading.Event | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _beat_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def mark(self, **extra: Any) -> None:
        """Write the marker (first thing into a new output; again with ``extra``, e.g. a record)."""
        write_marker(self.url, self.kind, **extra)

    def clear(self) -> None:
        """Remove this output (ours: checked by :func:`claim_output`) and nothing outside it."""
        remove_owned(self.url)

    def heartbeat(self) -> None:
        """Refresh the lock's time so a long write on another host is not taken for a dead one."""
        with self._beat_lock:
            if self.released:
                return
            if fileio.is_remote(self.lock):
                fs, path = fileio.filesystem(self.lock)
                fs.invalidate_cache(path)
            try:
                holder = _read_lock(self.lock)
            except StefaLandError:
                if fileio.exists(self.lock):
                    raise  # unreadable for another reason (network): not proof of a takeover
                holder = None
            if holder is None or holder.get("token") != self.token:
                raise LockLost(f"{self.url}: lost the lock {self.lock} to another writer; stopping")
            holder["heartbeat_unix"] = time.time()
            if self._stale_after_s is not None:
                holder["stale_after_s"] = self._stale_after_s
            fileio.write_bytes_atomic(self.lock, json.dumps(holder).encode())

    def keep_alive(self, every_s: float = RUN_HEARTBEAT_S, stale_after_s: float = RUN_STALE_S) -> None:
        """Heartbeat every ``every_s`` seconds from a daemon thread until :meth:`release`, and declare
        that the lock may be taken over ``stale_after_s`` seconds after the last one (module docstring).
        A network error is retried at the next beat; a lost lock is remembered for :meth:`check`."""
        if self._thread is not None:
            return
        self._stale_after_s = float(max(stale_after_s, 3 * every_s))
        self.heartbeat()
        self._stop = threading.Event()

        def beat() -> None:
            assert self._stop is not None
            while not self._stop.wait(every_s):
                try:
                    self.heartbeat()
                except LockLost as exc:
                    self.lost = str(exc)
                    log.error("%s", exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a network blip: try again at the next beat
                    log.warning("%s: could not refresh the lock (%s); retrying in %.0f s", self.url, exc, every_s)

        self._thread = threading.Thread(target=beat, name=f"stefaland-lock {self.url}", daemon=True)
        self._thread.start()

    def kept_alive(self) -> Claim:
        """:meth:`keep_alive`, releasing the lock if the first heartbeat fails; returns the claim.

        What a long-running writer (a training run) takes right after claiming its folder."""
        try:
            self.keep_alive()
        except BaseException:
            self.release()
            raise
        return self

    def check(self) -> None:
        """One line (and stop) when the heartbeat found the lock taken over; call it before each write."""
        if self.lost:
            raise LockLost(self.lost)

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
        with self._beat_lock:  # a heartbeat in flight must not write the lock back after it is removed
            if self.released:
                return
            self.released = True
        try:
            holder = _read_lock(self.lock)
        except StefaLandError:
            return
        if holder is not None and holder.get("token") == self.token:
            fileio.remove(self.lock, recursive=False)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_owned(url: str) -> None:
    """Delete the keys under ``url/`` and an object at ``url``; refuse a bucket root or ``/``."""
    url = str(url).rstrip("/")
    local_root = not fileio.is_remote(url) and os.path.abspath(url or "/") == "/"
    if not url or _bucket_root(url) or local_root:
        raise StefaLandError(f"{url}: refusing to remove a bucket or filesystem root")
    fs, path = fileio.filesystem(url)
    path = path.rstrip("/")
    if fileio.is_remote(url):
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
    url = _normalise(url)
    lock, token = _acquire(url, kind)
    claim = Claim(url, kind, False, lock, token)
    try:
        claim.existed = _check_target(url, kind, force, resumable)
    except BaseException:
        claim.release()
        raise
    return claim


def _normalise(url: str) -> str:
    url = str(url).rstrip("/") or str(url)
    if _bucket_root(url):
        raise StefaLandError(f"{url}: is a whole bucket; write to a prefix inside it (e.g. {url}/out.zarr)")
    return url


def _check_target(url: str, kind: str, force: bool, resumable: bool) -> bool:
    """True when a StefaLand ``kind`` output is there (and allowed), False when absent; else one line."""
    state, found = output_kind(url)
    if state == "absent":
        return False
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
    return True


def adopt_output(url: str, kind: str) -> bool:
    """Check that ``url`` is absent (or empty) or already a StefaLand ``kind`` output, and mark it; no lock.

    For an output several writers share, each locking only its own part (:func:`lock_output`):
    the folds of a finetuning run, which a Kubernetes Indexed Job trains in parallel. Marking is
    idempotent, so writers racing here all succeed. Returns whether it was already ``kind``.
    """
    url = _normalise(url)
    existed = _check_target(url, kind, force=False, resumable=True)
    if not existed:
        write_marker(url, kind)
    return existed


def lock_output(url: str, kind: str) -> Claim:
    """Only the lock of ``url`` (a part inside an output already adopted, e.g. ``<run>/fold-3``)."""
    url = _normalise(url)
    lock, token = _acquire(url, kind)
    return Claim(url, kind, fileio.exists(url), lock, token)

