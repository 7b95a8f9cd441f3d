"""The shard flusher on its own: `flush()` driven directly (and its thread once), no processes,
no sleeps."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import lossreport
from lossreport import runformat
from lossreport.trainer.flusher import ShardFlusher
from tests.support.procs import wait_for


class Heartbeat:
    """The trainer's heartbeat as a real callable: it rewrites run.json each time."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.record = runformat.RunRecord(run_id=run_dir.name, model="m", hook="h")
        self.beats = 0

    def __call__(self) -> None:
        self.record.heartbeat_at = runformat.utc_now()
        runformat.write_run_file(self.run_dir, self.record)
        self.beats += 1


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    (path / runformat.LOSSES_DIR).mkdir(parents=True)
    return path


@pytest.fixture
def heartbeat(run_dir: Path) -> Heartbeat:
    return Heartbeat(run_dir)


def _flusher(run_dir: Path, heartbeat: Heartbeat, max_unwritten_rows: int = 1000) -> ShardFlusher:
    return ShardFlusher(
        run_dir,
        rank=None,
        flush_secs=3600.0,
        heartbeat=heartbeat,
        max_unwritten_rows=max_unwritten_rows,
    )


def _log(flusher: ShardFlusher, steps: range, **losses: float) -> None:
    """Rows as `Run.log` appends them (it calls `add_column` the first time it sees a name)."""
    for step in steps:
        flusher.rows.append({**losses, runformat.STEP: step, runformat.WALL_TIME: 1000.0 + step})


def _shards(run_dir: Path) -> list[Path]:
    return [path for _, _, path in runformat.iter_shards(run_dir)]


def _break_disk(run_dir: Path) -> Path:
    """Make every shard write fail, as a lost mount would: a file where losses/ was. Returns
    where the folder was moved."""
    losses = run_dir / runformat.LOSSES_DIR
    held = losses.with_name("held-losses")
    losses.rename(held)
    losses.write_text("a file where the losses folder belongs")
    return held


def _repair_disk(run_dir: Path, held: Path) -> None:
    losses = run_dir / runformat.LOSSES_DIR
    losses.unlink()
    held.rename(losses)


def test_buffered_rows_become_one_shard_with_step_wall_time_and_each_loss(
    run_dir: Path, heartbeat: Heartbeat
) -> None:
    flusher = _flusher(run_dir, heartbeat)
    flusher.add_column("mse_loss")
    _log(flusher, range(3), mse_loss=0.5)
    flusher.add_column("l1_loss")
    flusher.rows.append({"mse_loss": math.nan, "l1_loss": 0.25, "step": 3, "wall_time": 1003.0})
    assert flusher.flush() is True
    (shard,) = _shards(run_dir)
    assert shard.name.startswith("part-000001-w")
    table = pq.read_table(shard)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("step", "int64"),
        ("wall_time", "double"),
        ("mse_loss", "double"),
        ("l1_loss", "double"),
    ]
    assert table.column("step").to_pylist() == [0, 1, 2, 3]
    assert table.column("wall_time").to_pylist() == [1000.0, 1001.0, 1002.0, 1003.0]
    assert table.column("l1_loss").to_pylist() == [None, None, None, 0.25]  # not logged: null
    assert math.isnan(table.column("mse_loss")[3].as_py())  # NaN stays NaN
    assert not flusher.rows and flusher.unwritten_rows == 0
    assert runformat.read_run_file(run_dir).heartbeat_at == heartbeat.record.heartbeat_at
    assert flusher.flush() is True  # nothing new: no empty shard
    assert len(_shards(run_dir)) == 1
    assert heartbeat.beats == 2  # but the heartbeat moves on every flush


def test_a_loss_first_logged_later_is_a_column_from_then_on(
    run_dir: Path, heartbeat: Heartbeat
) -> None:
    flusher = _flusher(run_dir, heartbeat)
    flusher.add_column("mse_loss")
    _log(flusher, range(2), mse_loss=1.0)
    assert flusher.flush() is True
    flusher.add_column("aux_loss")
    _log(flusher, range(2, 4), mse_loss=1.0, aux_loss=2.0)
    assert flusher.flush() is True
    first, second = (pq.read_table(path) for path in _shards(run_dir))
    assert first.column_names == ["step", "wall_time", "mse_loss"]
    assert second.column_names == ["step", "wall_time", "mse_loss", "aux_loss"]
    assert runformat.read_losses(run_dir).table.column("aux_loss").to_pylist() == [
        None,
        None,
        2.0,
        2.0,
    ]


def test_rows_that_cannot_be_written_are_kept_and_written_by_the_next_flush(
    run_dir: Path, heartbeat: Heartbeat
) -> None:
    flusher = _flusher(run_dir, heartbeat)
    held = _break_disk(run_dir)
    flusher.add_column("mse_loss")
    _log(flusher, range(3), mse_loss=1.0)
    assert flusher.flush() is False
    assert flusher.unwritten_rows == 3 and not flusher.rows
    flusher.add_column("aux_loss")  # a new loss while failing
    _log(flusher, range(3, 5), mse_loss=1.0, aux_loss=2.0)
    assert flusher.flush() is False
    assert flusher.unwritten_rows == 5
    assert heartbeat.beats == 2  # the run still shows it is alive

    _repair_disk(run_dir, held)
    assert flusher.flush() is True
    (shard,) = _shards(run_dir)
    table = pq.read_table(shard)
    assert table.column("step").to_pylist() == [0, 1, 2, 3, 4]
    assert table.column("aux_loss").to_pylist() == [None, None, None, 2.0, 2.0]
    assert flusher.unwritten_rows == 0 and flusher.dropped_rows == 0


def test_past_max_unwritten_rows_the_oldest_are_dropped_and_counted(
    run_dir: Path, heartbeat: Heartbeat
) -> None:
    flusher = _flusher(run_dir, heartbeat, max_unwritten_rows=5)
    held = _break_disk(run_dir)
    flusher.add_column("mse_loss")
    _log(flusher, range(8), mse_loss=1.0)
    assert flusher.flush() is False
    assert (flusher.unwritten_rows, flusher.dropped_rows) == (5, 3)
    _log(flusher, range(8, 12), mse_loss=1.0)
    assert flusher.flush() is False
    assert (flusher.unwritten_rows, flusher.dropped_rows) == (5, 7)

    _repair_disk(run_dir, held)
    assert flusher.stop() is True  # the last flush, as at close
    (shard,) = _shards(run_dir)
    assert pq.read_table(shard).column("step").to_pylist() == [7, 8, 9, 10, 11]
    assert flusher.dropped_rows == 7


def test_a_heartbeat_that_fails_does_not_make_written_rows_count_as_unwritten(
    run_dir: Path, heartbeat: Heartbeat
) -> None:
    (run_dir / runformat.RUN_FILE).mkdir()  # run.json cannot be rewritten
    flusher = _flusher(run_dir, heartbeat)
    flusher.add_column("mse_loss")
    _log(flusher, range(2), mse_loss=1.0)
    assert flusher.flush() is True
    assert len(_shards(run_dir)) == 1 and heartbeat.beats == 0


def test_run_flush_says_whether_the_rows_are_on_disk(runs_dir: Path) -> None:
    run = lossreport.start_run(
        runs_dir, model="m", hook="h", flush_every=10**6, flush_secs=3600
    )  # its flusher thread never flushes by itself here: only `run.flush()` writes
    try:
        run.log(0, mse_loss=1.0)
        assert run.flush() is True
        run.log(1, mse_loss=1.0)
        held = _break_disk(run.path)
        assert run.flush() is False
        assert run.unwritten_rows == 1
        _repair_disk(run.path, held)
        assert run.flush() is True
        assert run.unwritten_rows == 0
        run.log(2, mse_loss=1.0)
        _break_disk(run.path)
    finally:
        run.close()
    assert run.flush() is False  # close could not write step 2 either
    assert "1 logged rows could not be written" in (runformat.read_run_file(run.path).error or "")


def test_run_flush_after_a_clean_close_is_true(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=1.0)
    assert run.flush() is True


def test_with_nothing_to_write_the_thread_beats_only_every_idle_heartbeat_interval(
    run_dir: Path, heartbeat: Heartbeat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runformat, "IDLE_HEARTBEAT_SECS", 0.5)
    flusher = ShardFlusher(run_dir, rank=None, flush_secs=0.02, heartbeat=heartbeat)
    started = time.monotonic()
    flusher.start()
    try:
        wait_for(lambda: heartbeat.beats >= 2, timeout=10)
        assert time.monotonic() - started >= 0.7  # idle: every 0.5 s, not every 0.02 s tick
        monkeypatch.setattr(runformat, "IDLE_HEARTBEAT_SECS", 60.0)  # no idle beat from here
        before = heartbeat.beats
        _log(flusher, range(3), mse_loss=1.0)
        wait_for(lambda: _shards(run_dir), timeout=10)
        wait_for(lambda: heartbeat.beats > before, timeout=2)  # a shard beats at once
    finally:
        flusher.stop()
