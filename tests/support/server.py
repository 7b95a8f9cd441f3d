"""`lossreport serve` as a real subprocess on a free loopback port."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.daemon import ENV
from tests.support.procs import ROOT, wait_for


@contextmanager
def serving(
    runs_dir: Path | str, log: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Yields the (host, port) the server says it bound."""
    with log.open("w") as handle:
        command = [sys.executable, "-m", "lossreport", "--log-format", "json", "serve"]
        process = subprocess.Popen(
            [*command, str(runs_dir), "--port", "0", *args],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**ENV, **(env or {})},
        )
        try:
            wait_for(lambda: _bound(log) or process.poll() is not None, timeout=30)
            bound = _bound(log)
            assert bound is not None, log.read_text()
            yield bound
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def _bound(log: Path) -> tuple[str, int] | None:
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "serving":
            return str(event["host"]), int(event["port"])
    return None


def request(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One raw request: `path` goes on the wire exactly as given (no client normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
