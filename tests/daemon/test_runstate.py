"""The daemon's pure decisions: when a run needs a render, what a path belongs to."""

from __future__ import annotations

import os
import queue
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lossreport
from lossreport import runformat, storage
from lossreport.daemon.netfs import filesystem_type, is_network_filesystem
from lossreport.daemon.options import ONCE_FINISHED, ONCE_LIVE, WatchOptions
from lossreport.daemon.runstate import RunState, as_rendered, once_left, render_reason
from lossreport.daemon.watch import Watcher, _EventsToRuns
from lossreport.runformat import RenderedMarker, read_marker
from lossreport.sources.native import stat_fingerprint
from tests.support.procs import wait_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _state(status: str | None, beat_age: float = 0.0, fingerprint: str = "f1") -> RunState:
    return RunState(Path("r"), status, NOW - timedelta(seconds=beat_age), fingerprint)


@pytest.mark.parametrize(
    ("state", "marker", "reason"),
    [
        (_state("running", 5), None, None),
        (_state("running", 700), None, "stalled, never rendered"),
        (_state("completed"), None, "completed, never rendered"),
        (_state("completed"), RenderedMarker("f1", "completed", {}), None),
        (
            _state("completed", fingerprint="f2"),
            RenderedMarker("f1", "completed", {}),
            "completed, inputs changed",
        ),
        (_state("failed"), RenderedMarker("f1", "stalled", {}), "failed, was stalled"),
        (_state(None), None, "unknown, never rendered"),
    ],
)
def test_render_reason(state: RunState, marker: RenderedMarker | None, reason: str | None) -> None:
    assert render_reason(state, marker, NOW, stale_after=600) == reason


def _foreign(
    beat_age: float, rendered: str | None = None
) -> tuple[RunState, RenderedMarker | None]:
    """A TensorBoard run (running until silence finishes it), and its marker if `rendered`."""
    beat = NOW - timedelta(seconds=beat_age)
    state = RunState(Path("tb"), "running", beat, "f1", silence_finishes=True, writer="tensorboard")
    return state, None if rendered is None else RenderedMarker("f1", rendered, {})


@pytest.mark.parametrize(
    ("run", "once_foreign", "reason"),
    [
        # The daemon, and --once-foreign finished: silence for --stale-after finishes it.
        (_foreign(30), None, None),
        (_foreign(30), ONCE_FINISHED, None),
        (_foreign(700), ONCE_FINISHED, "completed, never rendered"),
        # --once (live): what exists now, unless it is being written this very moment.
        (_foreign(30), ONCE_LIVE, "running, never rendered"),
        (_foreign(1), ONCE_LIVE, None),
        (_foreign(30, rendered="running"), ONCE_LIVE, None),  # unchanged: not again
        (_foreign(700), ONCE_LIVE, "completed, never rendered"),
        (_foreign(700, rendered="running"), ONCE_LIVE, "completed, was running"),
        # lossreport's own runs say when they end: --once leaves them running.
        ((_state("running", 30), None), ONCE_LIVE, None),
    ],
)
def test_once_renders_quiet_foreign_runs_as_they_are(
    run: tuple[RunState, RenderedMarker | None], once_foreign: str | None, reason: str | None
) -> None:
    assert render_reason(*run, NOW, 600, once_foreign) == reason


def test_once_says_why_it_leaves_each_run() -> None:
    assert once_left(_foreign(12)[0], NOW, 600, ONCE_FINISHED) == (
        "written by tensorboard, last write 12 s ago; treated as running until --stale-after "
        "(10m) passes; --once-foreign=live renders it now"
    )
    assert once_left(_foreign(1)[0], NOW, 600, ONCE_LIVE) == (
        "written by tensorboard, last write 1 s ago: being written now; not rendered, run "
        "--once again when it is quiet"
    )
    assert once_left(_state("running", 3), NOW, 600, ONCE_LIVE) == (
        "running, heartbeat 3 s ago; rendered once it completes, fails or is silent for "
        "--stale-after (10m)"
    )


def test_events_map_to_runs_and_our_own_writes_are_ignored(runs_dir: Path) -> None:
    events: queue.SimpleQueue[tuple[str, ...]] = queue.SimpleQueue()
    handler = _EventsToRuns(runs_dir, events, threading.Event())
    parts = handler._parts
    assert parts(str(runs_dir / "run-1" / "run.json")) == ("run-1", "run.json")
    assert parts(str(runs_dir / "run-1" / "losses" / ".part-000003.parquet.x.tmp")) is None
    assert parts(str(runs_dir / "run-1" / "loss_graphs" / "loss_report_x.html")) is None
    assert parts(str(runs_dir / "run-1" / ".run.json.abc.tmp")) is None
    assert parts(str(runs_dir / ".hidden" / "run.json")) is None
    assert parts(str(runs_dir / "a" / ".lossreport-cache" / "tensorboard" / "x")) is None
    # The main thread finds the run a path belongs to, at any depth, new or known.
    with lossreport.start_run(runs_dir / "exp" / "sweep", model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    watcher = Watcher(runs_dir, WatchOptions(alerts=False))
    shard = ("exp", "sweep", "r", "losses", "part-000001.parquet")
    assert watcher._run_of(shard) == "exp/sweep/r"
    assert watcher._run_of(("exp", "sweep", "r")) == "exp/sweep/r"
    assert watcher._run_of(("exp", "sweep", "notes.txt")) is None  # in no run
    assert watcher._run_of(("index.html",)) is None


def test_network_filesystems_are_recognised_from_the_mount_table(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "lustre@tcp:/fs /lus lustre rw 0 0\n"
    )
    assert filesystem_type(Path("/mnt/shared/runs"), str(mounts)) == "nfs4"
    assert filesystem_type(Path("/lus"), str(mounts)) == "lustre"
    assert filesystem_type(Path("/home/me"), str(mounts)) == "ext4"
    assert is_network_filesystem("nfs4") and is_network_filesystem("lustre")
    assert not is_network_filesystem("ext4") and not is_network_filesystem(None)


def test_a_scan_takes_a_finished_run_as_its_marker_says_while_nothing_of_it_changed(
    runs_dir: Path,
) -> None:
    """A first start does not parse the run.json of a run rendered as it is (`as_rendered`):
    only while its inputs' names, sizes and times are the render's, and run.json has not
    changed at all since the marker was written (an edit in place with its time put back
    has a newer change time)."""
    with lossreport.start_run(runs_dir, model="m", hook="h", report_on_close=False) as run:
        run.log(0, mse_loss=1.0)
    lossreport.render_run(run.path)
    run_file = run.path / runformat.RUN_FILE
    wait_for(lambda: not storage.changed_too_recently(os.lstat(run_file).st_ctime_ns))
    marker = read_marker(run.path)
    assert marker is not None and marker.status == runformat.COMPLETED
    marker_file = os.lstat(run.path / runformat.GRAPHS_DIR / runformat.MARKER)
    state = as_rendered(run.path, marker, marker_file)
    assert state is not None and (state.status, state.fingerprint) == (
        runformat.COMPLETED,
        marker.fingerprint,
    )
    stalled = RenderedMarker(marker.fingerprint, runformat.STALLED, marker.entry)
    assert as_rendered(run.path, stalled, marker_file) is None  # its heartbeat is needed
    assert as_rendered(run.path, None, None) is None
    assert as_rendered(run.path, marker, None) is None  # no marker file where it was read

    before = os.lstat(run_file)
    text = run_file.read_text(encoding="utf-8")
    with run_file.open("r+", encoding="utf-8") as handle:  # the same size, its time put back
        handle.write(text.replace('"status": "completed"', '"status": "failed"   '))
    os.utime(run_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert stat_fingerprint(run.path)[0] == marker.fingerprint  # the stats agree
    assert as_rendered(run.path, marker, marker_file) is None
