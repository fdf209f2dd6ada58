"""Known failures of the environment, each told as one ``error:`` line with what to do.

Why here and not at each call site: the same few exception classes (a refused S3 request, an
unreachable endpoint, a read-only folder, a full disk or quota, a folder given where a file is
expected, a malformed kubeconfig, memory exhausted) can surface from dozens of library calls in
every command. The CLI group translates them once; ``-v`` keeps the full traceback for debugging.
Anything not recognised here is a bug and keeps its traceback. URL passwords never reach a line.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Sequence

_S3_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403",
                  "ExpiredToken", "InvalidToken", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_CREDENTIAL_HINT = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's permissions"
# A full disk, a quota, or a file-size limit (``ulimit -f``; EFBIG): what happened and what to do.
# Each may strike in any write of any command, from zarr's or dask's threads as often as our own.
_FREE = "free space or choose another location"
_FULL = {errno.ENOSPC: ("no space left on the device", _FREE),
         errno.EDQUOT: ("disk quota exceeded", _FREE),
         errno.EFBIG: ("file too large for the file system or for this process's file-size limit (ulimit -f)",
                       "raise the limit or choose another location")}
# ``scheme://user:password@host`` (or a bare token, ``scheme://token@host``): masked in every line
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s:]*)(:[^/@\s]*)?@")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from (libraries wrap botocore errors in OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def mask_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL (a bare ``token@``: all
    of it) replaced by ``***``: an endpoint or URL may carry credentials, and an error line ends up
    in logs and issue reports."""
    return _URL_USERINFO.sub(lambda m: f"{m[1]}{m[2]}:***@" if m[3] is not None else f"{m[1]}***@", text)


def _endpoint() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return mask_credentials(endpoint) if endpoint else "the default AWS endpoint"


def _urls(args: Sequence[str]) -> str:
    found = [mask_credentials(a) for a in args if "://" in a]
    return f" ({', '.join(found)})" if found else ""


def _out_arg(args: Sequence[str]) -> str | None:
    """The command's ``--out`` (``--out X`` or ``--out=X``): where a full disk most likely bites."""
    for index, arg in enumerate(args):
        if arg == "--out" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def _botocore(exc: BaseException, args: Sequence[str]) -> str | None:
    try:
        from botocore import exceptions as boto
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        return None
    if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError)):
        return f"no S3 credentials found{_urls(args)}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError | boto.ConnectionClosedError):
        return (f"cannot reach the S3 endpoint {_endpoint()}{_urls(args)} ({exc}); check AWS_ENDPOINT_URL and "
                "that the server is up")
    if isinstance(exc, boto.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _S3_AUTH_CODES:
            return f"S3 at {_endpoint()} refused the request{_urls(args)} ({code}); {_CREDENTIAL_HINT}"
        if code in ("NoSuchBucket", "404", "NoSuchKey"):
            return f"S3 at {_endpoint()}: no such bucket or object{_urls(args)} ({code}); check the s3:// URL"
        return f"S3 at {_endpoint()} failed{_urls(args)}: {exc}"
    if isinstance(exc, boto.HTTPClientError):  # e.g. user:password in AWS_ENDPOINT_URL
        return f"S3 request to {_endpoint()} failed{_urls(args)} ({exc}); check AWS_ENDPOINT_URL"
    return None


def _os_error(exc: OSError, args: Sequence[str], from_s3: bool) -> str | None:
    where = exc.filename if exc.filename is not None else None
    if isinstance(exc, PermissionError):
        if from_s3 or where is None:
            return f"S3 at {_endpoint()} refused the request{_urls(args)} ({exc}); {_CREDENTIAL_HINT}"
        return f"{where}: permission denied; choose a location you may write to (or read), or change its permissions"
    if isinstance(exc, IsADirectoryError):
        return f"{where}: is a folder but a file was expected; give the file inside it (e.g. {where}/<name>.yaml)"
    if isinstance(exc, NotADirectoryError):
        return f"{where}: part of this path is a file, not a folder; choose another path"
    if isinstance(exc, FileNotFoundError):
        return f"{where or exc}: no such file or folder; check the path"
    if isinstance(exc, FileExistsError):
        return f"{where}: already exists; choose another path"
    if exc.errno == errno.EROFS:
        return f"{where}: read-only file system; choose a writable location"
    if exc.errno in _FULL:
        what, remedy = _FULL[exc.errno]
        resumes = " (the same command again resumes the build)" if list(args[:2]) == ["data", "build"] else ""
        return f"{where or _out_arg(args) or 'output'}: {what}; {remedy}{resumes}"
    return None


def describe(exc: BaseException, args: Sequence[str] = ()) -> str | None:
    """One line for a known failure (``args``: the command line, to name the URLs involved), or
    None for an exception that is not one of these and so is a bug worth a traceback. URL
    passwords are masked (the exception texts may quote an endpoint)."""
    message = _describe(exc, args)
    return None if message is None else mask_credentials(message)


def _describe(exc: BaseException, args: Sequence[str]) -> str | None:
    chain = list(_chain(exc))
    from_s3 = any(type(e).__module__.startswith(("botocore", "aiobotocore", "s3fs")) for e in chain)
    for item in chain:
        message = _botocore(item, args)
        if message:
            return message
    for item in chain:
        if isinstance(item, MemoryError):
            return (f"out of memory ({item or 'allocation failed'}); lower the size asked for "
                    "(--shard-size, batch_size, seq_len) or use a larger machine")
        if type(item).__name__ == "ConfigException" and type(item).__module__.startswith("kubernetes"):
            return f"kubeconfig: {item}; fix the file named by KUBECONFIG (or ~/.kube/config)"
        if isinstance(item, OSError):
            message = _os_error(item, args, from_s3)
            if message:
                return message
        if isinstance(item, ConnectionError):
            return f"connection failed ({item}); check the endpoint and the network"
    return None
