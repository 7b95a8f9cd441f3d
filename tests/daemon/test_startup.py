"""A restarted daemon over a tree it rendered before: it reads none of the settled runs again
(seen.py's stamps in the catalog) and renders nothing, but a run that changed while it was
down (a shard added or put back under its name, run.json edited in place), or whose marker
was removed, gets its full look and its render."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa

from lossreport import runformat, storage
from lossreport.catalog.store import QUERY_INDEXES
from lossreport.daemon import prefetch
from lossreport.runformat import read_marker
from tests.support.daemon import Daemon, wait_rendered
from tests.support.procs import start_trainer, wait_for
from tests.support.rendered import rendered_runs

RUNS = 200
FEW_WATCHES = 10  # the runs directory's, and those of the few runs that train
STALE_AFTER = "720h"  # the fixture's stalled runs stay stalled, none is left running


def _settled_runs(runs_dir: Path, count: int) -> list[str]:
    """`rendered_runs`, once their folders are too old for a change to hide in the same tick
    of the filesystem's clock (storage.RACY_NS): a first start then stamps every one."""
    keys = rendered_runs(runs_dir, count)
    newest = max(os.lstat(runs_dir / key).st_ctime_ns for key in keys)
    wait_for(lambda: not storage.changed_too_recently(newest))
    return keys


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
    keys = _settled_runs(runs_dir, RUNS)  # completed, failed and stalled: all rendered
    daemon = _start(runs_dir, tmp_path / "first.log")
    daemon.stop()
    assert _scan(daemon)["read"] == RUNS  # the first start reads every run once
    assert not daemon.events("render_started")
    catalog = sqlite3.connect(runs_dir / runformat.CATALOG_DIR / runformat.CATALOG_FILE)
    indexes = {name for (name,) in catalog.execute("SELECT name FROM sqlite_schema")}
    catalog.close()
    assert indexes >= QUERY_INDEXES.keys()  # left out while it filled, made at its end

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
    # (The never-rendered one may get its summary first under a backlog: two renders.)
    rendered = sorted({event["run"] for event in third.events("render_started")})
    assert rendered == sorted([grown.name, unmarked.name])
    assert read_marker(grown).entry["steps"] == 150  # type: ignore[union-attr]


def test_a_first_start_over_a_large_tree_reads_ahead_and_lists_every_run_once(
    runs_dir: Path, tmp_path: Path
) -> None:
    """prefetch.MIN_RUNS runs, none with a stamp: the scan reads ahead in a process of its
    own (prefetch.py), gone by "watching"; every run is read once and listed, none rendered
    again, as without it."""
    _settled_runs(runs_dir, prefetch.MIN_RUNS)
    daemon = Daemon(runs_dir, "--stale-after", STALE_AFTER, log=tmp_path / "d.log", verbose=True)
    try:
        daemon.wait_for_event("watching")
        (started,) = daemon.events("prefetching")
        assert started["reads"] is True
        assert not Path(f"/proc/{started['pid']}").exists()  # killed and reaped
    finally:
        daemon.stop()
    assert _scan(daemon)["read"] == prefetch.MIN_RUNS
    assert not daemon.events("render_started")
    catalog = sqlite3.connect(runs_dir / runformat.CATALOG_DIR / runformat.CATALOG_FILE)
    (listed,) = catalog.execute("SELECT count(*) FROM runs").fetchone()
    catalog.close()
    assert listed == prefetch.MIN_RUNS


def test_a_restart_looks_again_at_runs_changed_without_a_new_name_size_or_time(
    runs_dir: Path, tmp_path: Path
) -> None:
    """A shard put back under its name with its size and time (`rsync -a`, `cp -p` and a
    rename), and a run.json edited in place with its time set back (`touch -r`): neither
    changes a file's name, size or modification time, which is all a stamp of the files saw,
    so a restart took both runs as settled. The folders' change times (seen.py) see both: the
    replaced shard's run gets a full look (its inputs read the same: no render), the edited
    run.json's run its render as the status it now says."""
    keys = _settled_runs(runs_dir, 20)
    _start(runs_dir, tmp_path / "first.log").stop()
    completed = [key for key in keys if _status(runs_dir / key) == runformat.COMPLETED]
    resynced, edited = runs_dir / completed[0], runs_dir / completed[1]

    (shard,) = (resynced / runformat.LOSSES_DIR).glob("part-*.parquet")
    copy = shard.with_name(".part-000000.parquet.tmp")
    shutil.copy2(shard, copy)  # the same bytes and modification time, another inode
    os.replace(copy, shard)

    run_file = edited / runformat.RUN_FILE
    before = os.lstat(run_file)
    text = run_file.read_text(encoding="utf-8")
    failed = text.replace('"status": "completed"', '"status": "failed"   ')
    assert failed != text and len(failed) == len(text)
    with run_file.open("r+", encoding="utf-8") as handle:  # in place, the same size
        handle.write(failed)
    os.utime(run_file, ns=(before.st_atime_ns, before.st_mtime_ns))

    again = _start(runs_dir, tmp_path / "again.log")
    try:
        wait_rendered(edited, runformat.FAILED)
    finally:
        again.stop()
    assert _scan(again)["read"] == 2, _scan(again)["message"]
    assert {event["run"] for event in again.events("render_started")} == {edited.name}


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
