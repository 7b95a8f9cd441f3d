"""Helpers for tests that run real processes: waiting with a deadline, starting trainers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# This checkout's package for every subprocess, even beside one installed from another.
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "watcher")])


def wait_for(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Poll `predicate` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def start_trainer(runs_dir: Path, run_id: str, *args: str) -> subprocess.Popen[str]:
    """The scripted trainer (tests/support/trainer.py) as a real subprocess."""
    return start_python("-m", "tests.support.trainer", str(runs_dir), run_id, *args)


def start_python(*args: str) -> subprocess.Popen[str]:
    """`python ARGS` from the repository root, with text pipes on every stream."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m lossreport ARGS` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "lossreport", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})},
    )
