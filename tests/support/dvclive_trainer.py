"""A training script that logs with DVCLive itself, run as a real subprocess:
`python -m tests.support.dvclive_trainer FOLDER STEPS [--hold]`.

It logs params (a model name, a nested mapping), `train/mse_loss` (a NaN and an infinity
among its values), `l1_loss` with timestamps, and `eval/loss` every fourth step, calling
`next_step()` after each step; then prints what it logged as one JSON line
({series: {step: value}}) and, with `--hold`, waits for a line on stdin before `end()`:
a run still being written. It runs in the run's parent folder: DVCLive makes a DVC
repository at the root of a Git work tree it starts in (this checkout's, from its root).

`write` and `start` run it from a test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.support.procs import PYTHONPATH

Logged = dict[str, dict[int, float]]


def start(folder: Path, steps: int, *, hold: bool = False) -> subprocess.Popen[str]:
    """This script logging `steps` steps into `folder` (DVCLive's dir), as a subprocess."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.dvclive_trainer", str(folder), str(steps)]
        + (["--hold"] if hold else []),
        cwd=folder.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )


def logged_by(process: subprocess.Popen[str]) -> Logged:
    """What the script says it logged (its first line of output)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return {
        name: {int(step): value for step, value in by_step.items()}
        for name, by_step in json.loads(line).items()
    }


def write(folder: Path, steps: int) -> Logged:
    """A whole DVCLive run in `folder`, ended; what it logged."""
    process = start(folder, steps)
    logged = logged_by(process)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    return logged


def _losses(step: int) -> dict[str, float]:
    mse = 1.0 / (step + 1) + 0.01 * math.sin(step)
    if step == 3:
        mse = math.nan
    if step == 5:
        mse = math.inf
    values = {"train/mse_loss": mse, "l1_loss": 0.5 + 2.0 / (step + 2)}
    if step % 4 == 0:
        values["eval/loss"] = 1.5 / (step + 1)
    return values


def main(folder: str, steps: int, hold: bool) -> None:
    from dvclive.live import Live

    logged: Logged = {}
    with Live(folder, dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"model_name": "gelu-1l_ω", "lr": 0.0004, "sae": {"d_sae": 4096}})
        for step in range(steps):
            for name, value in _losses(step).items():
                live.log_metric(name, value, timestamp=name == "l1_loss")
                logged.setdefault(name, {})[step] = value
            live.next_step()
        print(json.dumps(logged), flush=True)
        if hold:
            sys.stdin.readline()


if __name__ == "__main__":
    main(str(Path(sys.argv[1])), int(sys.argv[2]), "--hold" in sys.argv[3:])
