"""The trainer side as real processes: killed, terminated and read from while it writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

from lossreport import runformat
from tests.support.checks import assert_rows_are_exactly_the_logged_values
from tests.support.procs import ROOT, start_trainer, wait_for


def _shard_count(run_dir: Path) -> int:
    return sum(1 for _ in runformat.iter_shards(run_dir))


def test_sigkill_loses_only_the_unflushed_buffer_and_every_shard_stays_readable(
    runs_dir: Path,
) -> None:
    trainer = start_trainer(
        runs_dir, "killed", "--steps", "1000000", "--flush-every", "100", "--step-delay", "0.0002"
    )
    run_dir = runs_dir / "killed"
    try:
        wait_for(lambda: _shard_count(run_dir) >= 3)
    finally:
        trainer.kill()
        trainer.wait()
    for _, _, shard in runformat.iter_shards(run_dir):
        pq.read_table(shard)  # raises if any shard on disk were partial
    data = runformat.read_losses(run_dir)
    assert data.skipped == []
    assert data.table.num_rows >= 300
    assert_rows_are_exactly_the_logged_values(data.table)
    assert runformat.read_run_file(run_dir).status == "running"  # stalled: nobody closed it


def test_sigterm_flushes_marks_the_run_failed_and_still_terminates(runs_dir: Path) -> None:
    trainer = start_trainer(
        runs_dir, "preempted", "--steps", "250", "--flush-every", "1000", "--then", "wait"
    )
    assert trainer.stdout is not None
    assert trainer.stdout.readline().strip() == "logged 250"
    assert _shard_count(runs_dir / "preempted") == 0  # all 250 rows still in the buffer
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=30) == -signal.SIGTERM
    record = runformat.read_run_file(runs_dir / "preempted")
    assert record.status == "failed"
    assert record.error == "terminated by SIGTERM"
    table = runformat.read_losses(runs_dir / "preempted").table
    assert table.num_rows == 250
    assert_rows_are_exactly_the_logged_values(table)


def test_a_users_own_sigterm_handler_still_runs(runs_dir: Path) -> None:
    script = textwrap.dedent(f"""
        import signal, sys
        import lossreport
        def handler(signum, frame):
            print("user handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
        with lossreport.start_run({str(runs_dir)!r}, model="m", hook="h", run_id="own") as run:
            run.log(0, mse_loss=1.0)
            print("ready", flush=True)
            sys.stdin.read()
    """)
    trainer = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert trainer.stdout is not None
    assert trainer.stdout.readline().strip() == "ready"
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=30) == 3
    assert trainer.stdout.read().strip() == "user handler ran"
    record = runformat.read_run_file(runs_dir / "own")
    assert (record.status, record.error) == ("failed", "terminated by SIGTERM")
    assert runformat.read_losses(runs_dir / "own").table.num_rows == 1


def test_a_run_never_closed_is_closed_at_exit_with_the_uncaught_error(runs_dir: Path) -> None:
    script = textwrap.dedent(f"""
        import lossreport
        run = lossreport.start_run({str(runs_dir)!r}, model="m", hook="h", run_id="crashed")
        run.log(0, mse_loss=1.0)
        raise RuntimeError("out of memory")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Exception ignored" not in result.stderr
    record = runformat.read_run_file(runs_dir / "crashed")
    assert (record.status, record.error) == ("failed", "RuntimeError: out of memory")
    assert runformat.read_losses(runs_dir / "crashed").table.num_rows == 1


def test_a_reader_never_sees_a_partial_shard_while_the_writer_writes(runs_dir: Path) -> None:
    trainer = start_trainer(
        runs_dir, "live", "--steps", "4000", "--flush-every", "25", "--step-delay", "0.0002"
    )
    run_dir = runs_dir / "live"
    reads = 0
    try:
        wait_for(lambda: (run_dir / "run.json").exists())
        while trainer.poll() is None or reads == 0:
            data = runformat.read_losses(run_dir)
            assert data.skipped == []
            assert_rows_are_exactly_the_logged_values(data.table)
            reads += 1
    finally:
        trainer.kill()
        trainer.wait()
    assert trainer.returncode == 0
    assert reads > 5
    final = runformat.read_losses(run_dir).table
    assert final.num_rows == 4000
    assert runformat.read_run_file(run_dir).status == "completed"
