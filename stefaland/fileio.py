"""Paths and URLs, local or on S3-compatible object storage, through fsspec.

Everything in StefaLand that reads or writes a file goes through here so that ``s3://`` and local
paths behave the same and credentials only ever come from the environment (never from stores,
configs or logs).
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import fsspec
from fsspec.core import url_to_fs

from .errors import StefaLandError

log = logging.getLogger("stefaland.fileio")
T = TypeVar("T")

_REMOTE_PROTOCOLS = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://", "memory://")


def is_remote(url: str) -> bool:
    """True for object-storage URLs, whose writes cannot be renamed atomically."""
    return str(url).startswith(_REMOTE_PROTOCOLS)


def storage_options_for(url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: an S3 endpoint from ``AWS_ENDPOINT_URL[_S3]`` plus ``extra``.

    Keys and secrets are left to botocore's usual chain (environment, profile, instance role), so
    they never pass through StefaLand objects that might be logged or serialised.
    """
    options: dict[str, Any] = {}
    if str(url).startswith("s3://"):
        endpoint = s3_endpoint()
        if endpoint:
            options["endpoint_url"] = endpoint
    if extra:
        options.update(extra)
    return options


def s3_endpoint() -> str | None:
    """``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, checked before botocore sees it.

    Why: botocore turns ``http://user:password@host`` into a 120-line traceback on the first request
    (S3 signs requests with the access key; credentials in the URL clash with that), and a malformed
    endpoint fails just as far from its cause. The error line masks the password, never echoes it.
    """
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        endpoint = os.environ.get(name)
        if endpoint:
            _check_endpoint(name, endpoint)
            return endpoint
    return None


def _check_endpoint(name: str, endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StefaLandError(f"{name}: not a valid URL ({exc}); expected e.g. http://127.0.0.1:9000") from None
    if parts.username is not None or parts.password is not None:
        user = f"{parts.username}:***" if parts.password is not None else "***"
        masked = endpoint.replace(parts.netloc, f"{user}@{parts.netloc.rpartition('@')[2]}", 1)
        raise StefaLandError(f"{name} {masked}: credentials in the endpoint URL are not supported; remove "
                             "'user:password@' and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StefaLandError(f"{name} {endpoint}: expected an http:// or https:// URL with a host, "
                             "e.g. http://127.0.0.1:9000")


def filesystem(url: str, extra: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(fs, path)`` for a local path or URL."""
    url = str(url)
    return url_to_fs(url, **storage_options_for(url, extra))


def join(url: str, *parts: str) -> str:
    """Join path components onto a path or URL, keeping the protocol."""
    url = str(url)
    if is_remote(url):
        return posixpath.join(url.rstrip("/"), *parts)
    return os.path.join(url, *parts)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_source_bytes(url: str, source: str, storage_options: dict | None = None) -> bytes:
    """A catalog source's file, whole (a table the driver parses itself); absence names the source."""
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise StefaLandError(f"source {source}: file not found: {url}") from None


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise StefaLandError(f"{url}: file not found") from exc


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old object or the whole new one.

    Local files are written beside the target and renamed (``os.replace`` is atomic on POSIX);
    an S3 PUT only becomes visible once complete, so it is atomic by itself.
    """
    url = str(url)
    if is_remote(url):
        fs, path = filesystem(url)
        fs.pipe_file(path, data)
        return
    directory = os.path.dirname(os.path.abspath(url))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(url))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, url)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def remove(url: str, recursive: bool = True) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


# Reads of an object retried after a transient error (503 SlowDown, a reset connection, a read cut
# short), each wait doubling from the base with jitter: 0.5, 1, 2 s by default, so a shared object
# store's throttling passes. Overridable for tests and for stores known to be flaky.
READ_ATTEMPTS_ENV, READ_BACKOFF_ENV = "STEFALAND_READ_ATTEMPTS", "STEFALAND_READ_BACKOFF_S"
READ_ATTEMPTS, READ_BACKOFF_S = 4, 0.5


def _positive(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if value <= 0:
        raise StefaLandError(f"{name} {text!r}: expected a positive number")
    return value


def read_with_retries(url: str, read: Callable[[], T]) -> T:
    """``read()``, retried with exponential backoff on errors that can pass; then one line naming ``url``.

    Not retried: a missing object or a refused permission (they do not pass by waiting), and errors
    that are not I/O (a corrupt file is refused where it is decoded)."""
    attempts = int(_positive(READ_ATTEMPTS_ENV, READ_ATTEMPTS))
    backoff = _positive(READ_BACKOFF_ENV, READ_BACKOFF_S)
    for attempt in range(1, attempts + 1):
        try:
            return read()
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as exc:
            if attempt == attempts:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise StefaLandError(f"{url}: cannot be read after {attempts} attempts with backoff "
                                     f"({type(exc).__name__}: {reason[:200]})") from None
            wait = backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, type(exc).__name__, wait, attempt + 1,
                        attempts)
            time.sleep(wait)
    raise AssertionError("unreachable")
