"""A real server on loopback that answers one byte at a time (every `every` seconds), for
delivery deadline tests: no per-operation timeout ever trips on it, so only a total deadline
frees a client. It keeps, for each connection, when it came and when the client gave up."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass

# An HTTP answer (or an SMTP greeting) whose first line alone takes minutes at a byte a second.
SLOW_ANSWER = b"HTTP/1.1 200 " + b"O" * 600 + b"K\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Connection:
    opened: float  # time.monotonic()
    closed: float | None = None  # when the client went away
    sent: int = 0


class TricklingServer:
    """`with TricklingServer() as server:` ... `server.url`, `server.port`,
    `server.connections`."""

    def __init__(self, answer: bytes = SLOW_ANSWER, every: float = 1.0) -> None:
        self.answer, self.every = answer, every
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/hooks/trickle"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []

    @property
    def connections(self) -> list[Connection]:
        with self._lock:
            return [Connection(c.opened, c.closed, c.sent) for c in self._connections]

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection = Connection(time.monotonic())
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._trickle, args=(client, connection), daemon=True).start()

    def _trickle(self, client: socket.socket, connection: Connection) -> None:
        """Read whatever the client sends; between reads, send the next byte of the answer."""
        with client:
            next_byte = time.monotonic()
            while not self._stop.is_set() and connection.sent < len(self.answer):
                wait = max(0.0, next_byte - time.monotonic())
                if select.select([client], [], [], min(wait, 0.05))[0]:
                    try:
                        if not client.recv(65536):
                            break  # the client shut the connection down
                    except OSError:
                        break
                    continue
                if time.monotonic() < next_byte:
                    continue
                try:
                    client.sendall(self.answer[connection.sent : connection.sent + 1])
                except OSError:
                    break
                with self._lock:
                    connection.sent += 1
                next_byte += self.every
            with self._lock:
                connection.closed = time.monotonic()

    def __enter__(self) -> TricklingServer:
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._acceptor.join()
        self._listener.close()
