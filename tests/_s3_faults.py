"""A loopback HTTP proxy in front of the S3 test server that answers chosen objects with errors.

Object storage fails now and then (503 SlowDown, 500 InternalError); the build must retry with
backoff and, when an object keeps failing, stop with one line naming it. SeaweedFS cannot be told
to fail, so this proxy sits between the client and it: every request is passed through unchanged
(the Host header too, so the AWS signature still matches), except GETs of an object whose path
contains a chosen text, which get an S3 error document instead, a given number of times or always.
It also counts the bytes it serves per object, so a benchmark can see how much of each file a
build really reads.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlparse

from _loopback_http import serve

ALWAYS = -1


@dataclass
class Faults:
    """``fail[text] = n``: the next n GETs of a path containing ``text`` fail (``ALWAYS``: all)."""

    fail: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # errors served, per text
    passed: dict[str, int] = field(default_factory=dict)  # GETs of a faulty text let through
    served: dict[str, int] = field(default_factory=dict)  # bytes of GET responses, per path (benchmarks)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, method: str, path: str) -> str | None:
        """The text whose rule fails this request, or None to pass it through."""
        if method != "GET":
            return None
        with self.lock:
            for text, remaining in self.fail.items():
                if text in path:
                    if remaining == 0:
                        self.passed[text] = self.passed.get(text, 0) + 1
                        return None
                    if remaining > 0:
                        self.fail[text] = remaining - 1
                    self.failed[text] = self.failed.get(text, 0) + 1
                    return text
        return None


_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
          b"<Message>Please reduce your request rate.</Message></Error>")


def _handler(upstream: str, faults: Faults) -> type[BaseHTTPRequestHandler]:
    target = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _forward(self) -> None:
            if faults.decide(self.command, self.path):
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_ERROR)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(_ERROR)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status, response.reason)
            head = self.command == "HEAD"  # its Content-Length is the object's, with no body
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding") and (head or key.lower() != "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET" and response.status < 300:
                path = self.path.split("?", 1)[0]
                with faults.lock:
                    faults.served[path] = faults.served.get(path, 0) + len(data)
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


@contextmanager
def faulty_s3(upstream: str) -> Iterator[tuple[str, Faults]]:
    """``(endpoint, faults)``: an S3 endpoint on loopback that is ``upstream`` with ``faults``."""
    faults = Faults()
    with serve(_handler(upstream, faults), "s3-faults") as port:
        yield f"http://127.0.0.1:{port}", faults
