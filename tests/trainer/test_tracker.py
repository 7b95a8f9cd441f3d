from __future__ import annotations

import json
import math
import os
import re
import socket
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import lossreport
from lossreport import runformat
from tests.support.procs import wait_for
from tests.support.trainer import expected_losses


def _shards(run: lossreport.Run) -> list[Path]:
    return [path for _, _, path in runformat.iter_shards(run.path)]


def test_start_run_writes_the_run_file_before_anything_is_logged(runs_dir: Path) -> None:
    run = lossreport.start_run(
        runs_dir,
        model="tiny-stories-1L-21M",
        hook="blocks.0.hook_mlp_out",
        architecture="standard",
        config={"l1_coefficient": 5.0},
    )
    try:
        doc = json.loads((run.path / "run.json").read_text())
        assert doc["format"] == "lossreport.run/1"
        assert doc["status"] == "running"
        assert doc["run_id"] == run.run_id == run.path.name
        assert run.path.parent == runs_dir
        assert run.run_id.startswith("tiny-stories-1L-21M_blocks.0.hook_mlp_out_")
        assert (doc["model"], doc["hook"], doc["architecture"]) == (
            "tiny-stories-1L-21M",
            "blocks.0.hook_mlp_out",
            "standard",
        )
        assert doc["config"] == {"l1_coefficient": 5.0}
        assert (doc["host"], doc["pid"]) == (socket.gethostname(), os.getpid())
        assert doc["finished_at"] is None and doc["error"] is None
        datetime.fromisoformat(doc["started_at"])
        datetime.fromisoformat(doc["heartbeat_at"])
        assert (run.path / "losses").is_dir()
    finally:
        run.close()


def test_every_logged_value_comes_back_from_the_history(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", flush_every=64) as run:
        for step in range(300):
            run.log(step, **expected_losses(step))
        history = run.get_loss_history()
    assert list(history.columns) == [
        "step",
        "mse_loss",
        "l1_loss",
        "overall_loss",
        "auxiliary_reconstruction_loss",
    ]
    assert history["step"].tolist() == list(range(300))
    for row in history.itertuples(index=False):
        expected = expected_losses(row.step)
        for name in history.columns[1:]:
            got = getattr(row, name)
            if name not in expected:
                assert math.isnan(got)  # a loss before it started: missing
            elif math.isnan(expected[name]):
                assert math.isnan(got)
            else:
                assert got == expected[name]
    table = runformat.read_losses(run.path).table  # on disk: missing is null, NaN is NaN
    assert table.column("auxiliary_reconstruction_loss").null_count == 150
    assert math.isnan(table.column("mse_loss")[7].as_py())
    assert table.column("overall_loss")[8].as_py() == math.inf


def test_shards_have_the_documented_schema(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=np.float32(0.5), l1_loss=torch.tensor(1.0), overall_loss=2)
    (shard,) = _shards(run)
    assert re.fullmatch(r"part-000001-w[0-9a-f]{8}\.parquet", shard.name)
    schema = pq.read_schema(shard)
    assert [(f.name, str(f.type)) for f in schema] == [
        ("step", "int64"),
        ("wall_time", "double"),
        ("mse_loss", "double"),
        ("l1_loss", "double"),
        ("overall_loss", "double"),
    ]


def test_a_shard_is_written_every_flush_every_steps(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", flush_every=10, flush_secs=3600)
    try:
        for step in range(9):
            run.log(step, mse_loss=1.0)
        assert _shards(run) == []
        run.log(9, mse_loss=1.0)
        wait_for(lambda: len(_shards(run)) == 1)
        assert runformat.read_losses(run.path).table.num_rows == 10
    finally:
        run.close()


def test_a_shard_is_written_after_flush_secs_and_the_heartbeat_moves(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", flush_every=10**6, flush_secs=0.2)
    try:
        first_beat = runformat.read_run_file(run.path).heartbeat_at
        run.log(0, mse_loss=1.0)
        wait_for(lambda: len(_shards(run)) == 1)
        wait_for(lambda: runformat.read_run_file(run.path).heartbeat_at != first_beat)
    finally:
        run.close()


def test_leaving_the_block_marks_the_run_completed(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=1.0)
    record = runformat.read_run_file(run.path)
    assert record.status == "completed"
    assert record.finished_at is not None and record.error is None


def test_an_exception_marks_the_run_failed_with_the_error_and_keeps_the_rows(
    runs_dir: Path,
) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        lossreport.start_run(runs_dir, model="m", hook="h") as run,
    ):
        run.log(0, mse_loss=1.0)
        1 / 0  # noqa: B018
    record = runformat.read_run_file(run.path)
    assert record.status == "failed"
    assert record.error == "ZeroDivisionError: division by zero"
    assert runformat.read_losses(run.path).table.num_rows == 1


def test_disabled_tracking_records_nothing_until_enabled(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=1.0)
        run.disable_loss_tracking()
        assert not run.tracking_enabled
        run.log(1, mse_loss=2.0)
        run.enable_loss_tracking()
        run.log(2, mse_loss=3.0)
    assert run.get_loss_history()["step"].tolist() == [0, 2]


def test_logging_to_a_closed_run_is_an_error(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=1.0)
    with pytest.raises(lossreport.RunClosedError, match=str(run.path)):
        run.log(1, mse_loss=1.0)


def test_bad_values_and_names_are_refused_and_nothing_half_logged(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        with pytest.raises(lossreport.InvalidLossError, match=r"'l1_loss'.*str"):
            run.log(0, mse_loss=1.0, l1_loss="high")
        with pytest.raises(lossreport.InvalidLossError, match="not a plain identifier"):
            run.log(0, **{"mse loss": 1.0})
        with pytest.raises(lossreport.InvalidLossError, match="at least one loss"):
            run.log(0)
        with pytest.raises(lossreport.InvalidLossError, match="step"):
            run.log(1.5, mse_loss=1.0)  # type: ignore[arg-type]
        run.log(1, mse_loss=1.0)
    assert run.get_loss_history()["step"].tolist() == [1]


def test_an_unwritable_runs_directory_fails_at_start_run(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(lossreport.RunDirectoryError) as info:
        lossreport.start_run(blocker / "runs", model="m", hook="h")
    assert "not-a-directory" in str(info.value)


def test_a_run_id_that_exists_is_resumed_and_keeps_its_start_time(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as first:
        for step in range(5):
            first.log(step, mse_loss=float(step))
    started = runformat.read_run_file(first.path).started_at
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as second:
        assert runformat.read_run_file(second.path).status == "running"
        for step in range(3, 7):  # resumed from a checkpoint at step 3
            second.log(step, mse_loss=10.0 * step)
    record = runformat.read_run_file(second.path)
    assert record.started_at == started and record.status == "completed"
    assert [seq for seq, _, _ in runformat.iter_shards(second.path)] == [1, 2]  # after the first's
    history = second.get_loss_history()
    assert history["mse_loss"].tolist() == [0.0, 1.0, 2.0, 30.0, 40.0, 50.0, 60.0]


def test_run_ids_are_cleaned_into_one_directory_name(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="../../escape me") as run:
        run.log(0, mse_loss=1.0)
    assert run.path.parent == runs_dir
    assert re.fullmatch(r"escape_me-[0-9a-f]{8}", run.path.name)
    assert run.run_id == runformat.read_run_file(run.path).run_id == "../../escape me"


def test_buffered_memory_stays_bounded_over_a_long_run(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", flush_every=1000) as run:
        peak = 0
        for step in range(50_000):
            run.log(step, mse_loss=0.5, l1_loss=0.25)
            if step % 1000 == 999:
                wait_for(lambda: len(run._rows) < 1000)
                peak = max(peak, len(run._rows))
    assert peak < 1000
    assert run.get_loss_history().shape == (50_000, 3)
