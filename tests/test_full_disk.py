"""A full disk (a real tmpfs, filled) while the trainer flushes and while the daemon renders."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

import lossreport
from lossreport import runformat
from tests.support.daemon import run_once
from tests.support.disk import fill, small_disk
from tests.support.procs import run_cli


def _digest(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def test_the_trainer_keeps_training_through_a_full_disk_and_writes_again_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        run = lossreport.start_run(
            disk / "runs", model="m", hook="h", run_id="r", flush_every=100,
            max_unwritten_rows=500,
        )  # fmt: skip
        for step in range(200):
            run.log(step, mse_loss=float(step))
        run.flush()
        filler = fill(disk)
        with caplog.at_level(logging.ERROR, logger="lossreport"):
            for step in range(200, 1400):  # training goes on; log() never raises for the disk
                run.log(step, mse_loss=float(step))
            run.flush()
        assert "cannot write losses, keeping them in memory" in caplog.text
        assert run.unwritten_rows == 500  # bounded: the newest rows wait, older ones dropped
        assert run.dropped_rows == 700
        filler.unlink()  # space comes back
        run.flush()
        assert run.unwritten_rows == 0
        for step in range(1400, 1500):
            run.log(step, mse_loss=float(step))
        run.close()
        steps = runformat.read_losses(run.path).table.column("step").to_pylist()
        assert steps == [*range(200), *range(900, 1500)]
        record = runformat.read_run_file(run.path)
        assert record.status == "completed"
        assert record.error is not None and "700 logged rows could not be written" in record.error


def test_the_daemon_leaves_the_previous_report_in_place_while_the_disk_is_full(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        runs = disk / "runs"
        with lossreport.start_run(runs, model="m", hook="h", run_id="r") as run:
            for step in range(300):
                run.log(step, mse_loss=1.0 / (step + 1))
        assert run_once(runs).returncode == 0
        graphs = run.path / "loss_graphs"
        before = _digest(graphs)
        with lossreport.start_run(runs, model="m", hook="h", run_id="r") as resumed:
            for step in range(300, 600):  # the run is resumed: its report is out of date
                resumed.log(step, mse_loss=1.0 / (step + 1))
        filler = fill(disk)
        failed = run_once(runs)
        assert failed.returncode == 1
        assert "No space left on device" in failed.stderr
        by_hand = run_cli("render", str(run.path))
        assert by_hand.returncode == 1
        assert f"{graphs}: the new report could not be written (No space left" in by_hand.stderr
        assert _digest(graphs) == before  # the previous report, whole and unchanged
        assert not [p for p in run.path.iterdir() if p.name.startswith(".loss_graphs.")]
        filler.unlink()
        assert run_once(runs).returncode == 0
        (summary,) = graphs.glob("loss_summary_*.json")
        assert '"total_steps": 600' in summary.read_text()
