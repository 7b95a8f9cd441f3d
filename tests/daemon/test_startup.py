"""A restarted daemon over a tree it rendered before: it reads none of the settled runs again
(seen.py's stamps in the catalog) and renders nothing, but a run that changed while it was
down, or whose marker was removed, gets its full look and its render."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from lossreport import runformat
from lossreport.runformat import read_marker
from tests.support.daemon import Daemon, wait_rendered
from tests.support.procs import start_trainer, wait_for
from tests.support.rendered import rendered_runs

RUNS = 200
FEW_WATCHES = 10  # the runs directory's, and those of the few runs that train
STALE_AFTER = "720h"  # the fixture's stalled runs stay stalled, none is left running


def _start(runs_dir: Path, log: Path) -> Daemon:
    daemon = Daemon(runs_dir, "--stale-after", STALE_AFTER, log=log)
    daemon.wait_for_event("watching")
    return daemon


def _scan(daemon: Daemon) -> dict[str, object]:
    (scan,) = daemon.events("scan")
    return scan


def _status(run_dir: Path) -> str | None:
    marker = read_marker(run_dir)
    return None if marker is None else marker.status


def test_a_restart_reads_no_settled_run_and_renders_only_what_changed(
    runs_dir: Path, tmp_path: Path
) -> None:
    keys = rendered_runs(runs_dir, RUNS)  # completed, failed and stalled: all rendered
    daemon = _start(runs_dir, tmp_path / "first.log")
    daemon.stop()
    assert _scan(daemon)["read"] == RUNS  # the first start reads every run once
    assert not daemon.events("render_started")

    again = _start(runs_dir, tmp_path / "again.log")
    again.stop()
    scan = _scan(again)
    assert (scan["runs"], scan["read"]) == (RUNS, 0), scan["message"]
    assert not again.events("render_started")

    completed = [key for key in keys if _status(runs_dir / key) == runformat.COMPLETED]
    grown, unmarked = runs_dir / completed[0], runs_dir / completed[1]
    steps = np.arange(100, 150)
    more = pa.table(
        {"step": steps, "wall_time": 1.8e9 + steps.astype(float), "mse_loss": 1.0 / steps,
         "l1_loss": np.full(50, 0.1), "overall_loss": 1.1 / steps}
    )  # fmt: skip
    runformat.write_shard(grown, 1, more)  # trained on while the daemon was down
    (unmarked / runformat.GRAPHS_DIR / runformat.MARKER).unlink()  # its report removed

    third = _start(runs_dir, tmp_path / "third.log")
    try:
        assert _scan(third)["read"] == 2
        wait_rendered(grown, "completed")
        wait_rendered(unmarked, "completed")
    finally:
        third.stop()
    rendered = sorted(event["run"] for event in third.events("render_started"))
    assert rendered == sorted([grown.name, unmarked.name])
    assert read_marker(grown).entry["steps"] == 150  # type: ignore[union-attr]


def _inotify_watches(pid: int) -> int:
    """The inotify watches process `pid` holds: the `inotify wd:` lines of its inotify
    descriptors' fdinfo."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:  # closed meanwhile
            continue
        count += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return count


def test_finished_runs_hold_no_inotify_watch_and_their_changes_are_still_found(
    runs_dir: Path, tmp_path: Path
) -> None:
    """The daemon watches the runs directory and the runs that train, not every run ever made
    (watching all took three watches a run: past the watch limit at 100,000 runs). A new
    run is still rendered when it finishes, and then no longer watched; a finished run that
    grows is rendered again by the next scan."""
    keys = rendered_runs(runs_dir, RUNS)  # completed, failed and stalled: all settled
    daemon = Daemon(
        runs_dir, "--stale-after", STALE_AFTER, "--rescan-every", "2", log=tmp_path / "d.log"
    )
    try:
        daemon.wait_for_event("watching")
        assert "InotifyObserver" in daemon.events("watching")[0]["message"]
        assert _inotify_watches(daemon.process.pid) < FEW_WATCHES

        trainer = start_trainer(runs_dir, "Llama-3.1-8B-Instruct-layer12-résumé", "--steps", "100")
        assert trainer.wait(timeout=60) == 0
        old = {runs_dir / key for key in keys}
        (new_run,) = [path for path in runs_dir.glob("Llama-*") if path not in old]
        wait_rendered(new_run, "completed")
        assert new_run.name in {event["run"] for event in daemon.events("render_started")}
        wait_for(lambda: _inotify_watches(daemon.process.pid) < FEW_WATCHES)

        completed = [key for key in keys if _status(runs_dir / key) == runformat.COMPLETED]
        grown = runs_dir / completed[0]
        steps = np.arange(100, 150)
        more = pa.table(
            {"step": steps, "wall_time": 1.8e9 + steps.astype(float), "mse_loss": 1.0 / steps,
             "l1_loss": np.full(50, 0.1), "overall_loss": 1.1 / steps}
        )  # fmt: skip
        runformat.write_shard(grown, 1, more)
        wait_rendered(grown, "completed")
        assert read_marker(grown).entry["steps"] == 150  # type: ignore[union-attr]
    finally:
        daemon.stop()
