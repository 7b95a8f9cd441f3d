"""The serve module's HTTP server in a thread of the test, for limits a test must lower."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lossreport.delivery.serve import Limits, RunsServer, RunsSite


@contextmanager
def server_thread(runs_dir: Path, limits: Limits | None = None) -> Iterator[int]:
    """Yields the loopback port it listens on; shuts the server down after the block."""
    server = RunsServer(("127.0.0.1", 0), RunsSite(runs_dir), limits=limits or Limits())
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_unanswered(sock: socket.socket) -> bool:
    """Whether the server closed `sock` without sending a byte (a reset counts as closed).
    Blocks until the server sends or closes, or the socket's own timeout."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
