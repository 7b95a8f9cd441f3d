"""The peak memory of a command: run in a fresh Python process whose only child it is, so its
RUSAGE_CHILDREN high-water mark is the command's own (that of its largest process, a render's
chart helper included), not the largest of everything the test session ever ran."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from tests.support.procs import ROOT

TIMED_OUT = -1
# In its own session, so a command that outlives its time is ended with every process it
# started (a render that aborts leaves its chart helper holding the pipes open).
_MEASURE = """
import os, resource, signal, subprocess, sys
child = subprocess.Popen(
    sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    start_new_session=True,
)
try:
    output, _ = child.communicate(timeout=float(sys.argv[1]))
    returncode = child.returncode
except subprocess.TimeoutExpired:
    os.killpg(child.pid, signal.SIGKILL)
    output = child.communicate()[0] + f"\\ntimed out after {sys.argv[1]} s"
    returncode = -1
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
print(returncode, peak)
sys.stderr.write(output[-6000:])
"""


@dataclass(frozen=True)
class Measured:
    returncode: int  # TIMED_OUT when it ran past its time
    peak_bytes: int
    output: str  # the end of its stdout and stderr


def peak_memory(*command: str, timeout: float = 120.0, env: dict[str, str]) -> Measured:
    """Run `command` (from the repository root, with `env`) and measure its peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(timeout), *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout + 30,
        env=env,
    )
    assert done.returncode == 0, done.stderr  # the measuring process itself
    returncode, peak = (int(word) for word in done.stdout.split())
    return Measured(returncode, peak, done.stderr)
