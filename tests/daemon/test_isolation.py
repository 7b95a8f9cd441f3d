"""One bad run never hurts the others: a render worker that dies costs only the run it held,
a run that kills two is set aside, and a stopping daemon waits for its renders only so long.

The daemon is a real `lossreport watch` process with one worker; workers die as the kernel's
OOM killer makes them die, by SIGKILL. (A memory budget per worker cannot make them: the chart
engine reserves 34 GB of address space at start, so RLIMIT_AS would stop every render.)
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lossreport
from lossreport.runformat import read_marker
from tests.support.daemon import Daemon, child_workers, wait_rendered
from tests.support.procs import wait_for

HEALTHY_MODEL, BAD_MODEL = "gpt2-small", "gemma-2-2b"  # the bad run sorts first: it is first
HOOK = "blocks.8.hook_resid_pre"


def _sae_run(runs_dir: Path, model: str, series: int = 1, steps: int = 300) -> Path:
    """A finished run named as start_run names it, with `series` healthy SAE losses."""
    with lossreport.start_run(runs_dir, model=model, hook=HOOK) as run:
        _log(run, 0, steps, series)
    return run.path


def _log(run: lossreport.Run, start: int, steps: int, series: int) -> None:
    for step in range(start, start + steps):
        losses = {f"mse_loss_{k}": 1.0 / (step + 1 + k) for k in range(series)}
        run.log(step, l1_loss=0.3 - 0.1 * step / (start + steps), **losses)


def _kill_worker_rendering(daemon: Daemon, run_dir: Path) -> None:
    """SIGKILL the worker while it holds `run_dir`'s render: frozen first (SIGSTOP), so that
    the test can see the render is unfinished (no marker) before it kills."""
    wait_for(lambda: child_workers(daemon.process.pid))
    workers = child_workers(daemon.process.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGSTOP)
    assert read_marker(run_dir) is None, "the render ended before the test could kill it"
    os.kill(workers[0], signal.SIGKILL)


def _started(daemon: Daemon, run: str) -> int:
    """Full renders of `run` started: a backlog's quick reports (no charts) first are not."""
    return sum(event["run"] == run for event in _full_renders(daemon))


def _full_renders(daemon: Daemon) -> list[dict[str, Any]]:
    return [event for event in daemon.events("render_started") if not event["quick"]]


def test_a_run_that_kills_its_worker_twice_is_set_aside_and_the_others_render_in_order(
    runs_dir: Path, tmp_path: Path
) -> None:
    bad = _sae_run(runs_dir, BAD_MODEL, series=2, steps=2000)  # seconds to render
    healthy = [_sae_run(runs_dir, HEALTHY_MODEL) for _ in range(10)]
    daemon = Daemon(runs_dir, "--rescan-every", "1s", log=tmp_path / "daemon.log", verbose=True)
    try:
        for attempt in (1, 2):
            wait_for(lambda attempt=attempt: _started(daemon, bad.name) >= attempt, 60)
            _kill_worker_rendering(daemon, bad)
        daemon.wait_for_event("set_aside")
        for run in healthy:
            wait_rendered(run, "completed", timeout=90)
        index = runs_dir / "index.html"
        shown = "set aside: render worker crashed twice (killed by SIGKILL)"
        wait_for(lambda: index.exists() and shown in index.read_text())
        wait_for(lambda: len(daemon.events("set_aside_kept")) >= 2)  # looked at, not rendered
        assert _started(daemon, bad.name) == 2

        with lossreport.start_run(runs_dir, model=BAD_MODEL, hook=HOOK, run_id=bad.name) as run:
            _log(run, 2000, 10, series=2)  # new inputs: it is rendered again
        wait_rendered(bad, "completed", timeout=90)
    finally:
        code, _ = daemon.stop()
    assert code == 0
    set_aside = daemon.events("set_aside")
    assert [event["run"] for event in set_aside] == [bad.name]
    assert set_aside[0]["reason"] == "killed by SIGKILL"
    assert "not retried until its inputs change" in set_aside[0]["message"]
    # The healthy runs lost nothing: each rendered once, in their order, none failed.
    failed = {event["run"] for event in daemon.events("render_failed")}
    assert failed == {bad.name}
    started = [event["run"] for event in _full_renders(daemon)]
    assert [name for name in started if name != bad.name] == sorted(r.name for r in healthy)


def test_an_idle_daemon_stops_within_a_second(runs_dir: Path, tmp_path: Path) -> None:
    run = _sae_run(runs_dir, HEALTHY_MODEL)
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    wait_rendered(run, "completed")  # a warm worker now waits, idle
    daemon.wait_for_event("rendered")
    workers = child_workers(daemon.process.pid)
    code, seconds = daemon.stop()
    assert code == 0
    assert seconds < 1.0, f"took {seconds:.1f}s"
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert daemon.events("stopping")[0]["runs"] == []


def test_ctrl_c_stops_an_idle_daemon_within_a_second(runs_dir: Path, tmp_path: Path) -> None:
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    daemon.wait_for_event("watching")
    code, seconds = daemon.stop(signal.SIGINT)
    assert code == 0
    assert seconds < 1.0, f"took {seconds:.1f}s"


def test_a_stuck_render_is_stopped_at_the_stop_deadline(runs_dir: Path, tmp_path: Path) -> None:
    run = _sae_run(runs_dir, BAD_MODEL, series=2, steps=2000)
    daemon = Daemon(runs_dir, "--stop-wait", "1s", log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("render_started")
        wait_for(lambda: child_workers(daemon.process.pid))
        workers = child_workers(daemon.process.pid)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGSTOP)  # stuck (a hung filesystem, a runaway chart)
        assert read_marker(run) is None, "the render ended before the test could stop it"
        code, seconds = daemon.stop(timeout=30)
    finally:
        if daemon.process.poll() is None:
            daemon.kill_everything()
    assert code == 0
    assert seconds < 1 + 5, f"took {seconds:.1f}s"  # --stop-wait, and the kill's reaping
    assert not Path(f"/proc/{workers[0]}").exists()
    assert daemon.events("stopping")[0]["runs"] == [run.name]  # what it waited for
    assert daemon.events("stop_deadline")[0]["runs"] == [run.name]
    assert daemon.events("render_stopped")[0]["run"] == run.name
    assert not daemon.events("set_aside") and not daemon.events("render_failed")


def test_the_daemon_writes_only_its_own_log_lines_over_renders(
    runs_dir: Path, tmp_path: Path
) -> None:
    """A re-render replaces loss_graphs/ under the daemon's inotify watches: watchdog warned
    "Callback with id ... already exists" on stderr at every one."""
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        run_dir = _sae_run(runs_dir, HEALTHY_MODEL)
        wait_rendered(run_dir, "completed")
        for start in (300, 310, 320):
            with lossreport.start_run(
                runs_dir, model=HEALTHY_MODEL, hook=HOOK, run_id=run_dir.name
            ) as run:
                _log(run, start, 10, series=1)
            wait_rendered(run_dir, "completed")
    finally:
        code, _ = daemon.stop()
    assert code == 0
    for line in daemon.log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a log line of the daemon's: {line}") from None
        assert record["logger"].startswith("lossreport"), line
