"""One HTTP server on a free loopback port, for the test doubles that speak HTTP (the Kubernetes API
server, the S3 fault proxy, a request recorder): started in a thread, always shut down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], name: str = "loopback-http") -> Iterator[int]:
    """The port ``handler`` answers on at 127.0.0.1, for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
