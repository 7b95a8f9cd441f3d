"""The peak memory of a command: run in a fresh Python process whose only child it is, so its
RUSAGE_CHILDREN high-water mark is the command's own (that of its largest process, a render's
chart helper included), not the largest of everything the test session ever ran."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from tests.support.procs import ROOT

_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
print(done.returncode, peak)
sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
"""


@dataclass(frozen=True)
class Measured:
    returncode: int
    peak_bytes: int
    output: str  # the end of its stdout and stderr


def peak_memory(*command: str, timeout: float = 240.0, env: dict[str, str]) -> Measured:
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
