"""A run directory shared by more than one writer, or asked for by ids and configs that cannot
be stored as given: no writer may lose another's rows, and nothing is silently mixed or left."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lossreport
from lossreport import runformat
from tests.support.checks import assert_rows_are_exactly_the_logged_values
from tests.support.procs import start_python, start_trainer

# A trainer that opens the run, says so, and logs only once told to: both writers of a test
# have read the run directory before either writes a shard, as two jobs started together do.
_GATED_TRAINER = textwrap.dedent("""
    import sys
    import lossreport
    from tests.support.trainer import expected_losses

    runs_dir, run_id, start, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with lossreport.start_run(
        runs_dir, model="m", hook="h", run_id=run_id, flush_every=50, flush_secs=60
    ) as run:
        print("ready", flush=True)
        sys.stdin.readline()
        for step in range(start, start + steps):
            run.log(step, **expected_losses(step))
            if step % 500 == 499:
                run.flush()  # at least six shards and heartbeats each, whatever the timing
    print("done", flush=True)
""")

_WARNING = "another process"


def _start_gated(runs_dir: Path, run_id: str, start: int, steps: int) -> subprocess.Popen[str]:
    trainer = start_python("-c", _GATED_TRAINER, str(runs_dir), run_id, str(start), str(steps))
    assert trainer.stdout is not None
    assert trainer.stdout.readline().strip() == "ready"
    return trainer


def _two_writers(runs_dir: Path, run_id: str) -> tuple[list[str], list[int]]:
    """Two processes log steps 0-2999 and 3000-5999 into one run at once: (stderrs, pids)."""
    first = _start_gated(runs_dir, run_id, 0, 3000)
    second = _start_gated(runs_dir, run_id, 3000, 3000)
    try:
        for trainer in (first, second):
            assert trainer.stdin is not None
            trainer.stdin.write("go\n")
            trainer.stdin.flush()
        outputs = [trainer.communicate(timeout=120) for trainer in (first, second)]
    finally:
        for trainer in (first, second):
            trainer.kill()
            trainer.wait()
    for trainer, (stdout, stderr) in zip((first, second), outputs, strict=True):
        assert trainer.returncode == 0, stderr
        assert stdout.strip() == "done"
    return [stderr for _, stderr in outputs], [first.pid, second.pid]


def test_two_processes_logging_one_run_id_at_once_keep_every_row(runs_dir: Path) -> None:
    _two_writers(runs_dir, "twice")
    run_dir = runs_dir / "twice"
    data = runformat.read_losses(run_dir)
    assert data.skipped == []
    assert data.table.num_rows == 6000
    assert_rows_are_exactly_the_logged_values(data.table)
    names = [path.name for _, _, path in runformat.iter_shards(run_dir)]
    assert len(names) == len(set(names))
    tokens = [name.split("-w")[1] for name in names]
    assert len(set(tokens)) == 2 and all(tokens.count(token) >= 6 for token in tokens)


def test_each_of_two_live_writers_warns_naming_the_other(runs_dir: Path) -> None:
    (first_err, second_err), (first_pid, second_pid) = _two_writers(runs_dir, "both")
    host = socket.gethostname()
    # The second saw the first's fresh heartbeat at start_run; the first saw run.json rewritten
    # by the second when it next refreshed its heartbeat. Each warns once.
    assert f"host {host}, pid {first_pid}" in second_err
    assert f"host {host}, pid {second_pid}" in first_err
    assert first_err.count(_WARNING) == 1
    assert second_err.count(_WARNING) == 1


def test_resuming_a_run_whose_writer_is_alive_warns_and_a_dead_one_does_not(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = start_trainer(runs_dir, "live", "--steps", "5", "--then", "wait")
    try:
        assert trainer.stdout is not None
        assert trainer.stdout.readline().strip() == "logged 5"
        with caplog.at_level(logging.WARNING, logger="lossreport"):
            lossreport.start_run(runs_dir, model="m", hook="h", run_id="live").close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"pid {trainer.pid}" in text and _WARNING in text for text in warnings)
    finally:
        trainer.kill()
        trainer.wait()

    caplog.clear()
    killed = start_trainer(runs_dir, "killed", "--steps", "5", "--then", "wait")
    assert killed.stdout is not None
    assert killed.stdout.readline().strip() == "logged 5"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert runformat.read_run_file(runs_dir / "killed").status == "running"  # fresh heartbeat
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        lossreport.start_run(runs_dir, model="m", hook="h", run_id="killed").close()
    assert not [r for r in caplog.records if _WARNING in r.getMessage()]


def test_run_json_rewritten_by_another_writer_is_warned_about_once(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", run_id="r", flush_secs=3600)
    try:
        other = runformat.read_run_file(run.path)
        other.host, other.pid = "node-17", 4242
        with caplog.at_level(logging.WARNING, logger="lossreport"):
            run.log(0, mse_loss=1.0)
            run.flush()
            assert runformat.read_run_file(run.path).pid == os.getpid()  # its own heartbeat
            runformat.write_run_file(run.path, other)
            run.flush()
            runformat.write_run_file(run.path, other)
            run.flush()
        warnings = [r.getMessage() for r in caplog.records if _WARNING in r.getMessage()]
        assert len(warnings) == 1
        assert "host node-17, pid 4242" in warnings[0]
    finally:
        run.close()


def test_shards_of_one_writer_carry_its_token_and_old_names_still_read(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        for step in range(4):
            run.log(step, mse_loss=float(step))
            if step % 2:
                run.flush()
    names = [path.name for _, _, path in runformat.iter_shards(run.path)]
    assert len(names) == 2
    tokens = {name.split("-w")[1] for name in names}
    assert len(tokens) == 1 and names[0].startswith("part-000001-w")
    # A run written before writer tokens (part-NNNNNN.parquet) resumes after its last shard.
    legacy = runs_dir / "legacy"
    (legacy / "losses").mkdir(parents=True)
    pq.write_table(
        pq.read_table(run.path / "losses" / names[0]), legacy / "losses" / "part-000007.parquet"
    )
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="legacy") as resumed:
        resumed.log(1, mse_loss=10.0)
    shards = [(seq, path.name) for seq, _, path in runformat.iter_shards(legacy)]
    assert shards[0] == (7, "part-000007.parquet") and shards[1][0] == 8
    assert resumed.get_loss_history()["mse_loss"].tolist() == [0.0, 10.0]


def test_shards_of_one_sequence_number_are_read_in_a_documented_order(tmp_path: Path) -> None:
    names = [
        "part-000002-wb.parquet",
        "part-000002.parquet",
        "part-000001-rank0-wz.parquet",
        "part-000002-wa.parquet",
        "part-000001-rank0.parquet",
        "part-000002-rank1-wa.parquet",
    ]
    (tmp_path / "losses").mkdir()
    for name in names:
        (tmp_path / "losses" / name).write_bytes(b"")
    ordered = [path.name for _, _, path in runformat.iter_shards(tmp_path)]
    assert ordered == [
        "part-000001-rank0.parquet",
        "part-000001-rank0-wz.parquet",
        "part-000002.parquet",
        "part-000002-wa.parquet",
        "part-000002-wb.parquet",
        "part-000002-rank1-wa.parquet",
    ]
    assert runformat.parse_shard_name("part-000002-rank1-wa.parquet") == (2, 1)
    assert runformat.parse_shard_name("part-000002-w.parquet") is None


def test_a_shard_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "losses").mkdir()
    first = pa.table({"step": pa.array([0], pa.int64()), "mse_loss": [1.0]})
    path = runformat.write_shard(tmp_path, 1, first, writer="abc")
    assert path.name == "part-000001-wabc.parquet"
    with pytest.raises(FileExistsError):
        runformat.write_shard(
            tmp_path, 1, first.set_column(1, "mse_loss", pa.array([2.0])), writer="abc"
        )
    assert pq.read_table(path).column("mse_loss").to_pylist() == [1.0]
    assert [p.name for p in (tmp_path / "losses").iterdir()] == [path.name]


@pytest.mark.parametrize(
    ("first", "second"),
    [("exp/1", "exp_1"), ("实验一", "эксперимент"), ("a b", "a_b"), ("x" * 120, "x" * 121)],
)
def test_distinct_run_ids_get_distinct_directories(runs_dir: Path, first: str, second: str) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=first) as one:
        one.log(0, mse_loss=1.0)
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=second) as two:
        two.log(0, mse_loss=2.0)
    assert one.path != two.path and one.path.parent == two.path.parent == runs_dir
    assert (one.run_id, two.run_id) == (first, second)
    assert runformat.read_run_file(one.path).run_id == first
    assert runformat.read_run_file(two.path).run_id == second
    assert one.get_loss_history()["mse_loss"].tolist() == [1.0]
    assert two.get_loss_history()["mse_loss"].tolist() == [2.0]
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=first) as again:
        assert again.path == one.path  # the same id resumes the same directory


def test_generated_ids_for_long_names_keep_their_random_part(runs_dir: Path) -> None:
    runs = [lossreport.start_run(runs_dir, model="m" * 150, hook="h" * 80) for _ in range(2)]
    for run in runs:
        run.close()
    assert runs[0].path != runs[1].path  # once truncated to the same 100 characters
    for run in runs:
        assert run.path.name == run.run_id == runformat.clean_name(run.run_id)
        assert len(run.run_id) <= 100 and run.run_id.startswith("m" * 50)


def test_a_directory_holding_another_run_id_is_refused_by_name(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="exp/1") as run:
        run.log(0, mse_loss=1.0)
    before = (run.path / "run.json").read_bytes()
    with pytest.raises(lossreport.RunDirectoryError) as info:
        lossreport.start_run(runs_dir, model="m", hook="h", run_id=run.path.name)
    assert "'exp/1'" in str(info.value) and repr(run.path.name) in str(info.value)
    assert (run.path / "run.json").read_bytes() == before


def test_a_refused_log_call_leaves_no_column_behind(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h") as run:
        run.log(0, mse_loss=1.0)
        with pytest.raises(lossreport.InvalidLossError, match="'aux_loss'"):
            run.log(1, mse_loss=1.0, l1_loss=2.0, aux_loss="high")
        with pytest.raises(lossreport.InvalidLossError, match="'bad name'"):
            run.log(2, mse_loss=1.0, sparsity=0.5, **{"bad name": 1.0})
        with pytest.raises(lossreport.InvalidLossError, match="'dead_features'"):
            run.log(3, dead_features=[1.0, 2.0])
        run.log(4, mse_loss=0.5)
    columns = {
        name
        for _, _, path in runformat.iter_shards(run.path)
        for name in pq.read_schema(path).names
    }
    assert columns == {"step", "wall_time", "mse_loss"}
    history = run.get_loss_history()
    assert list(history.columns) == ["step", "mse_loss"]
    assert history["step"].tolist() == [0, 4]


def _nested(depth: int) -> dict[str, Any]:
    config: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        config = {"a": config}
    return config


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"lr": math.nan}, "config key 'lr' is nan"),
        ({"optimizer": {"betas": [0.9, math.inf]}}, "config key 'optimizer.betas[1]' is inf"),
        ({"schedule": {3: "warmup"}}, "config key 'schedule.3' is an int"),
        ({("a", "b"): 1}, "config key \"('a', 'b')\" is a tuple"),
        (_nested(150), "nested more than"),
    ],
)
def test_a_config_that_cannot_be_stored_is_refused_by_key_and_leaves_nothing(
    runs_dir: Path, config: dict[Any, Any], named: str
) -> None:
    with pytest.raises(ValueError) as info:
        lossreport.start_run(runs_dir, model="m", hook="h", run_id="r", config=config)
    assert named in str(info.value)
    assert list(runs_dir.iterdir()) == []


def test_a_config_with_objects_json_lacks_is_stored_as_their_text(runs_dir: Path) -> None:
    config = {"dtype": Path("/data"), "nested": {"betas": (0.9, 0.99)}, "n": 3}
    with lossreport.start_run(runs_dir, model="m", hook="h", config=config) as run:
        pass
    doc = json.loads((run.path / "run.json").read_text())
    assert doc["config"] == {"dtype": "/data", "nested": {"betas": [0.9, 0.99]}, "n": 3}
