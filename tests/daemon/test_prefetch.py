"""The first start's prefetcher (daemon/prefetch.py), a real process: it reads the files a look
at a run reads before the look gets there, and in a hostile tree it reads nothing through a
link and never waits on a FIFO."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileOpenedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from lossreport import runformat
from lossreport.daemon import prefetch, prefetcher
from tests.support.procs import wait_for
from tests.support.rendered import rendered_runs

MARKER = f"{runformat.GRAPHS_DIR}/{runformat.MARKER}"


class _Opened(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileOpenedEvent):
            self.paths.append(os.fsdecode(event.src_path))


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[_Opened, Path, Path]]:
    """A real runs tree and a folder elsewhere (what its links point at), each watched for
    every file opened in it, from after they were made."""
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    rendered_runs(runs, 3, running_from=3)
    for folder in ("graphs", "losses", "run"):
        (elsewhere / folder).mkdir(parents=True)
        (elsewhere / folder / runformat.RUN_FILE).write_text("{}")
    (elsewhere / "graphs" / runformat.MARKER).write_text("{}")
    handler = _Opened()
    observer = Observer()
    observer.schedule(handler, str(runs), recursive=True)
    observer.schedule(handler, str(elsewhere), recursive=True)
    observer.start()
    try:
        yield handler, runs, elsewhere
    finally:
        observer.stop()
        observer.join()


def _hostile_runs(runs: Path, elsewhere: Path) -> list[str]:
    """Runs whose folders, files or subfolders are links to `elsewhere`, or FIFOs: more of
    the latter than the prefetcher has threads, so a blocking open would stop it."""
    names = []
    for number in range(prefetcher.THREADS + 2):
        run = runs / f"fifo-run-{number}"
        (run / runformat.GRAPHS_DIR).mkdir(parents=True)
        os.mkfifo(run / runformat.RUN_FILE)
        os.mkfifo(run / MARKER)
        names.append(run.name)
    linked = {
        "linked-graphs": (runformat.GRAPHS_DIR, elsewhere / "graphs"),
        "linked-losses": (runformat.LOSSES_DIR, elsewhere / "losses"),
        "linked-run-file": (runformat.RUN_FILE, elsewhere / "run" / runformat.RUN_FILE),
    }
    for name, (inside, target) in linked.items():
        (runs / name).mkdir()
        (runs / name / inside).symlink_to(target)
        names.append(name)
    (runs / "linked-run").symlink_to(elsewhere / "run")
    return [*names, "linked-run"]


def test_the_prefetcher_reads_each_run_and_nothing_through_a_link_or_from_a_fifo(
    opened: tuple[_Opened, Path, Path],
) -> None:
    handler, runs, elsewhere = opened
    real = sorted(path.name for path in runs.iterdir())
    names = [*_hostile_runs(runs, elsewhere), *real]
    arguments, environment = prefetch.command(str(runs))
    fed = b"".join(os.fsencode(name) + b"\0" for name in names)
    # It exits once stdin ends and every read is done: a FIFO opened to wait would hold it.
    subprocess.run(arguments, env=environment, input=fed, timeout=60, check=True)
    for name in real:
        for path in (runs / name / runformat.RUN_FILE, runs / name / MARKER):
            wait_for(lambda path=path: str(path) in handler.paths)
    assert not [path for path in handler.paths if path.startswith(str(elsewhere))]


def test_a_scan_tells_the_prefetcher_of_each_run_before_it_gets_there(
    opened: tuple[_Opened, Path, Path],
) -> None:
    """The scan's runs in order, the real ones past the first batch told (the runs before
    them are missing, fast to find so): each is read by the time the scan reaches it."""
    handler, runs, _ = opened
    real = sorted(path.name for path in runs.iterdir())
    names = sorted([*real, *(f"0-gone-{number:05d}" for number in range(prefetch.MIN_RUNS))])
    feeder = prefetch.Feeder.over(str(runs), names)
    assert feeder is not None
    try:
        for name in names:
            feeder.reached(name)
            if name in real:
                path = runs / name / runformat.RUN_FILE
                wait_for(lambda path=path: str(path) in handler.paths)
    finally:
        feeder.close()


def _children() -> list[str]:
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()


def test_a_first_start_reads_ahead_and_a_small_tree_does_not(tmp_path: Path) -> None:
    for number in range(prefetch.MIN_RUNS - 1):
        (tmp_path / f"run-{number}").mkdir()
    folders = runformat.list_folder_names(tmp_path)
    assert prefetch.Feeder.for_scan(str(tmp_path), folders, known=0) is None  # not worth it
    (tmp_path / "one-more").mkdir()
    before = _children()
    feeder = prefetch.Feeder.for_scan(str(tmp_path), [*folders, "one-more"], known=0)
    assert feeder is not None and feeder.reads
    try:
        assert len(_children()) == len(before) + 1
    finally:
        feeder.close()
    assert _children() == before


def test_a_restart_takes_lstats_ahead_only_once_its_scan_is_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most runs stamped: a scan of lstats, which on a warm cache outruns any prefetcher, so
    one is started only when the scan is slower than SLOW_RUN_SECONDS a run (cold, NFS)."""
    names = [f"run-{number:05d}" for number in range(2 * prefetch.SAMPLE + 2)]
    for name in names:
        (tmp_path / name).mkdir()
    before = _children()
    for slowest, started in ((prefetch.SLOW_RUN_SECONDS, False), (0.0, True)):
        monkeypatch.setattr(prefetch, "SLOW_RUN_SECONDS", slowest)  # 0: any pace is slow
        feeder = prefetch.Feeder.for_scan(str(tmp_path), names, known=len(names))
        assert feeder is not None and not feeder.reads
        try:
            for name in names:
                feeder.reached(name)
            assert (len(_children()) > len(before)) is started, slowest
        finally:
            feeder.close()
