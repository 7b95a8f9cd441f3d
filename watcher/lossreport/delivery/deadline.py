"""A total time limit on one delivery (an SMTP session, a webhook post).

The standard library's clients only bound each socket operation: a server that sends one
byte every few seconds never trips such a timeout and holds a sender for as long as it
likes. A `Deadline` opens the delivery's connections itself and, once its time is up, shuts
them down (a duplicate of each socket's descriptor is kept for that, so it still works after
TLS has wrapped the socket): whatever call was blocked on them then fails at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any


class Deadline:
    """`with Deadline(30) as deadline:` ... open sockets with `deadline.connect`;
    `deadline.expired` says whether the time ran out (and so why the delivery failed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._expired = False
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def connect(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: Any = None,
    ) -> socket.socket:
        """`socket.create_connection`, given no longer than what is left, and cut at the end."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no time left of the {self.seconds:g}s deadline")
        limit = left if timeout is None else min(timeout, left)
        sock = socket.create_connection(address, limit, source_address)
        with self._lock:
            self._watched.append(sock.dup())
            if self._expired:
                _cut(self._watched[-1])
        return sock

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._watched:
                _cut(sock)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _cut(sock: socket.socket) -> None:
    """Shut the connection down (both ways): a blocked read or write on it returns now."""
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)
