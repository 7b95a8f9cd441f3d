"""The example SAEs train for real and log each architecture's loss terms through start_run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lossreport import runformat
from tests.support.procs import ROOT

EXPECTED_LOSSES = {
    "standard": ["mse_loss", "l1_loss", "overall_loss"],
    "gated": ["mse_loss", "l1_loss", "auxiliary_reconstruction_loss", "overall_loss"],
    "topk": ["mse_loss", "auxiliary_reconstruction_loss", "overall_loss"],
}


def test_each_architecture_trains_and_logs_its_losses(runs_dir: Path) -> None:
    started = time.monotonic()
    trainers = {
        architecture: subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "train_sae.py"),
                "--architecture",
                architecture,
                "--runs-dir",
                str(runs_dir),
                "--run-id",
                architecture,
                "--steps",
                "400",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for architecture in EXPECTED_LOSSES
    }
    for trainer in trainers.values():
        _, stderr = trainer.communicate(timeout=120)
        assert trainer.returncode == 0, stderr
    assert time.monotonic() - started < 60
    for architecture, losses in EXPECTED_LOSSES.items():
        run_dir = runs_dir / architecture
        record = runformat.read_run_file(run_dir)
        assert (record.status, record.architecture) == ("completed", architecture)
        data = runformat.read_losses(run_dir)
        assert data.loss_names == losses
        assert data.table.column("step").to_pylist() == list(range(400))
        mse = data.table.column("mse_loss").to_pylist()
        assert sum(mse[-20:]) < 0.7 * sum(mse[:20]), architecture  # it learned something
