"""The native source: lossreport's own run folders, as the daemon and the renderer see them."""

from __future__ import annotations

from pathlib import Path

import lossreport
from lossreport import runformat, sources
from lossreport.daemon.runstate import read_state
from lossreport.sources.native import stat_fingerprint


def test_the_fingerprint_changes_with_every_input_and_only_with_inputs(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    before = read_state(run.path)
    (run.path / "loss_graphs").mkdir()
    (run.path / "loss_graphs" / "x.png").write_bytes(b"")
    (run.path / "losses" / ".part-000002.parquet.tmp").write_bytes(b"half")
    assert read_state(run.path).fingerprint == before.fingerprint
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(1, mse_loss=1.0)
    assert read_state(run.path).fingerprint != before.fingerprint


def test_the_fingerprint_from_stats_alone_is_the_one_read_with_run_json(
    runs_dir: Path, tmp_path: Path
) -> None:
    """What a restarted daemon compares (no run.json read) is the fingerprint of a full look,
    whatever the folder holds: alerts, a linked shard, losses that are a file, nothing."""
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    (tmp_path / "elsewhere.parquet").write_bytes(b"x")
    (run.path / "losses" / "part-000009.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    runformat.append_alert_log(run.path, [{"rule": "stalled", "detail": "d"}])
    odd = runs_dir / "odd"
    odd.mkdir()
    (odd / runformat.LOSSES_DIR).write_bytes(b"a file")
    for folder in (run.path, odd, runs_dir / "gone"):
        assert stat_fingerprint(folder)[0] == sources.NATIVE.inputs(folder).fingerprint
    assert "part-000009.parquet" in stat_fingerprint(run.path)[0]


def test_a_run_folder_is_found_and_anything_else_is_not(runs_dir: Path, tmp_path: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    (runs_dir / "not-a-run").mkdir()
    (runs_dir / ".lossreport").mkdir()
    dummy = tmp_path / "dummy"
    (dummy / "losses").mkdir(parents=True)  # would be a run, but is reached through a link
    (runs_dir / "linked").symlink_to(dummy, target_is_directory=True)
    assert sources.find(run.path) is sources.NATIVE
    assert sources.find(runs_dir / "not-a-run") is None
    assert sources.find(runs_dir / "linked") is None
    assert sources.list_runs(runs_dir) == [run.path]


def test_the_native_source_reads_what_the_trainer_wrote(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
        run.log(1, mse_loss=0.5)
    inputs = sources.NATIVE.inputs(run.path)
    assert inputs.status == "completed" and inputs.heartbeat is not None
    assert sources.NATIVE.read_record(run.path).run_id == "r"
    data = sources.NATIVE.read_losses(run.path)
    assert data.table.column("mse_loss").to_pylist() == [1.0, 0.5] and data.skipped == []
