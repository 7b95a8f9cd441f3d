"""`lossreport demo`: the whole product in one command, on this machine.

Starts the real daemon, trains the three example SAEs (examples/train_sae.py, which needs
torch) as separate processes, waits until the daemon has rendered each report, prints where
they are and stops the daemon.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import runformat
from ..daemon.runstate import read_state
from ..errors import DemoError
from ..runformat import read_marker

logger = logging.getLogger(__name__)

ARCHITECTURES = ("standard", "gated", "topk")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "train_sae.py"
REPORT_TIMEOUT_SECONDS = 180.0


def run_demo(runs_dir: Path, steps: int = 2000) -> list[Path]:
    """Returns the report of each example run, once the daemon has written it."""
    if not EXAMPLE.is_file():
        raise DemoError(f"the demo trains {EXAMPLE}, which only a source checkout has")
    runs_dir.mkdir(parents=True, exist_ok=True)
    daemon = subprocess.Popen([sys.executable, "-m", "lossreport", "watch", str(runs_dir)])
    try:
        _wait_until_following(runs_dir, daemon)  # so the trainers leave their reports to it
        trainers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--architecture",
                    architecture,
                    "--runs-dir",
                    str(runs_dir),
                    "--steps",
                    str(steps),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for architecture in ARCHITECTURES
        ]
        run_dirs = []
        for trainer in trainers:
            output, _ = trainer.communicate()
            if trainer.returncode != 0:
                raise DemoError(f"an example trainer failed (exit {trainer.returncode})")
            run_dirs.append(Path(output.strip().rsplit(": ", 1)[-1]))
        return [_wait_for_report(run_dir, daemon) for run_dir in run_dirs]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


def _wait_until_following(runs_dir: Path, daemon: subprocess.Popen[bytes]) -> None:
    """Until the daemon says it follows `runs_dir` (its presence file)."""
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    while runformat.live_daemon(runs_dir) is None:
        if daemon.poll() is not None:
            raise DemoError(f"the daemon exited ({daemon.returncode}) before watching {runs_dir}")
        if time.monotonic() > deadline:
            raise DemoError(f"the daemon did not start watching {runs_dir}")
        time.sleep(0.1)


def _wait_for_report(run_dir: Path, daemon: subprocess.Popen[bytes]) -> Path:
    """Until the daemon's marker shows it rendered the run's final inputs."""
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        marker = read_marker(run_dir)
        if marker is not None and marker.fingerprint == read_state(run_dir).fingerprint:
            return run_dir.parent / str(marker.entry["report"])
        if daemon.poll() is not None:
            raise DemoError(f"the daemon exited ({daemon.returncode}) before rendering {run_dir}")
        time.sleep(0.2)
    raise DemoError(
        f"{run_dir}: no report after {REPORT_TIMEOUT_SECONDS:.0f}s "
        f"(is {run_dir / runformat.RUN_FILE} completed?)"
    )
