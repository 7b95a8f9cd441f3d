"""`lossreport watch` as a real subprocess, with its JSON log lines readable by tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lossreport.daemon.runstate import read_state
from lossreport.runformat import read_marker
from tests.support.procs import PYTHONPATH, ROOT, wait_for

ENV = {**os.environ, "PYTHONPATH": PYTHONPATH}


class Daemon:
    def __init__(
        self, runs_dir: Path | str, *args: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        self._handle = log.open("w")
        self.process = subprocess.Popen(
            _watch_command(runs_dir, "--workers", "1", *args),
            cwd=ROOT,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**ENV, **(env or {})},
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue  # a traceback line from a crash
        return [e for e in lines if kind is None or e.get("event") == kind]

    def wait_for_event(self, kind: str, timeout: float = 60) -> None:
        wait_for(lambda: self.events(kind) or self.process.poll() is not None, timeout)
        assert self.events(kind), self.log.read_text()

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._handle.close()
        return code, time.monotonic() - started

    def kill_everything(self) -> None:
        """SIGKILL the daemon and its worker processes at once (its process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._handle.close()


def wait_rendered(run_dir: Path, status: str, timeout: float = 60) -> None:
    """Until the last render of `run_dir` saw its current inputs, with this status."""

    def rendered() -> bool:
        marker = read_marker(run_dir)
        return (
            marker is not None
            and marker.status == status
            and marker.fingerprint == read_state(run_dir).fingerprint
        )

    wait_for(rendered, timeout)


def run_once(
    runs_dir: Path | str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _watch_command(runs_dir, "--once", "--workers", "2", *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**ENV, **(env or {})},
    )


def _watch_command(runs_dir: Path | str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lossreport",
        "--log-format",
        "json",
        "watch",
        str(runs_dir),
        *args,
    ]
