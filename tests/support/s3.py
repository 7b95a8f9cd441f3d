"""A real S3-protocol server on loopback for the object-store tests: moto in server mode, a
subprocess speaking HTTP like AWS S3 (and enforcing If-None-Match / If-Match), behind a small
TCP proxy that can fail the way a store fails: answer 503, accept and never answer, or stop
listening (a restart, as its clients see one)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.support.procs import wait_for

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: 96\r\n\r\n"
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    b"\n\n\n\n\n\n\n\n"
)

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours its log lines
_OBJECT_GET = re.compile(r'"GET /([^/?\s]+)/([^?\s]+) HTTP/')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """`moto_server` on 127.0.0.1; `auth_after` N requests, it checks credentials (IAM)."""

    def __init__(self, log: Path, auth_after: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        executable = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        assert executable is not None, "moto[server] is a dev dependency"
        env = {**os.environ, **CREDENTIALS}
        if auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for(self._answers, timeout=30, interval=0.1)

    def _answers(self) -> bool:
        assert self.process.poll() is None, "moto_server exited"
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                return True
        except OSError:
            return False

    def object_gets(self, bucket: str) -> list[str]:
        """The keys in `bucket` read so far (GETs of objects, not listings), from the server's
        request log; a marker request is waited for first, so every earlier request is in it."""
        marker = f"logged-{uuid.uuid4().hex}"
        with suppress(Exception):  # botocore's ClientError: no such key, as meant
            boto(self.url).head_object(Bucket=bucket, Key=marker)
        wait_for(lambda: marker in self.log.read_text(errors="replace"), timeout=10)
        text = _COLOURS.sub("", self.log.read_text(errors="replace"))
        found = _OBJECT_GET.findall(text)
        return [urllib.parse.unquote(key) for name, key in found if name == bucket]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


class FaultProxy:
    """A TCP proxy to `upstream`; `mode` decides what each new connection gets: "pass",
    "slowdown" (a 503 to its first request), "hang" (read, never answered) or "down" (the port
    refuses connections). Changing the mode closes every open connection, so clients holding
    keep-alive connections meet the new mode at once."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._listen()

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "slowdown", "hang", "down")
        with self._lock:
            self.mode = mode
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if mode == "down" and self._listener is not None:
                self._listener.close()
                self._listener = None
        if mode != "down" and self._listener is None:
            self._listen()

    def close(self) -> None:
        self.set_mode("down")

    def _listen(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                self._open.add(client)
                self.connections += 1
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        try:
            if mode == "slowdown":
                client.recv(65536)
                client.sendall(SLOW_DOWN)
            elif mode == "hang":
                while client.recv(65536):
                    pass
            elif mode == "pass":
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                with self._lock:
                    self._open.add(upstream)
                pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                pump.start()
                _pump(client, upstream)
                pump.join()
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            client.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def client_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The environment a trainer or daemon gets: the standard AWS variables, nothing else."""
    return {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, **extra}


def boto(endpoint: str, **credentials: str) -> Any:
    """A boto3 client for the test's own checks (listing, reading what was written)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials.get("key", CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=credentials.get("secret", CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
    )


def keys(client: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under `prefix`: key -> size."""
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return found


@contextmanager
def s3_server(tmp: Path) -> Iterator[tuple[MotoServer, FaultProxy]]:
    server = MotoServer(tmp / "moto.log")
    proxy = FaultProxy(server.port)
    try:
        yield server, proxy
    finally:
        proxy.close()
        server.stop()
