"""A run belongs to the process that started it: a child forked after `start_run` (a PyTorch
DataLoader worker) that exits normally or is terminated neither closes it nor writes to it, so
the daemon does not report a run that still trains. A real trainer process forks a real child.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lossreport import runformat
from tests.support.procs import start_python


@pytest.mark.parametrize(
    ("how", "exit_status"),
    [("os", 0), ("multiprocessing", 0), ("sigterm", -signal.SIGTERM)],
)
def test_a_forked_child_neither_closes_nor_writes_the_parents_run(
    runs_dir: Path, how: str, exit_status: int
) -> None:
    run_id = f"sae_gpt2_blocks.8_{how}"
    trainer = start_python("-m", "tests.support.forking_trainer", str(runs_dir), run_id, how)
    assert trainer.stdin and trainer.stdout and trainer.stderr
    line = trainer.stdout.readline().strip()
    assert line == f"child exited {exit_status}", line + trainer.stderr.read()
    run_dir = runs_dir / run_id
    record = runformat.read_run_file(run_dir)
    assert record.status == runformat.RUNNING and record.finished_at is None
    assert record.error is None
    trainer.stdin.close()
    assert trainer.wait(timeout=60) == 0, trainer.stderr.read()
    record = runformat.read_run_file(run_dir)
    assert record.status == runformat.COMPLETED and record.error is None
    steps = runformat.read_losses(run_dir).table.column(runformat.STEP).to_pylist()
    assert steps == list(range(200))  # each row once, and nothing the child logged
