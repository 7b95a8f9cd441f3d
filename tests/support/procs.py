"""Helpers for tests that run real processes: waiting with a deadline, starting trainers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# For child processes: this checkout's package first (an editable install of another checkout
# must not stand in for it), then the repository root (tests.support modules run as scripts).
PYTHONPATH = os.pathsep.join([str(ROOT / "watcher"), str(ROOT)])


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


# A parent of the command's own, whose RUSAGE_CHILDREN holds that one child alone (the test
# process's would hold every child it ever waited for).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_measured(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python ARGS` to completion, output captured, and its peak resident memory in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})},
    )
    *output, peak_kib = done.stderr.rstrip("\n").split("\n")
    done.stderr = "\n".join(output)
    return done, int(peak_kib) / 1024
