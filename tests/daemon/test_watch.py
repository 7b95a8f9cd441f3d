"""The daemon as a real process, against real trainer processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import lossreport
from lossreport import runformat
from lossreport.runformat import read_marker
from tests.support.daemon import Daemon, child_workers, run_once, wait_rendered
from tests.support.procs import start_trainer, wait_for


def _finished_run(runs_dir: Path, run_id: str, steps: int = 200, **start: object) -> Path:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=run_id, **start) as run:  # type: ignore[arg-type]
        for step in range(steps):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.1)
    return run.path


def _report_is_whole(run_dir: Path) -> bool:
    graphs = run_dir / "loss_graphs"
    names = [path.name for path in graphs.iterdir()]
    pages = list(graphs.glob("loss_report_*.html"))
    prefixes = (
        "loss_curves_mse_loss_",
        "loss_curves_l1_loss_",
        "loss_curves_combined_",
        "loss_history_",
        "loss_summary_",
        "loss_report_",
    )
    return (
        len(pages) == 1
        and pages[0].read_text().rstrip().endswith("</html>")
        and all(any(name.startswith(prefix) for name in names) for prefix in prefixes)
    )


def test_completed_failed_stalled_and_resumed_runs_are_rendered(
    runs_dir: Path, tmp_path: Path
) -> None:
    daemon = Daemon(runs_dir, "--stale-after", "2s", log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        completed = start_trainer(runs_dir, "completed", "--steps", "300")
        failed = start_trainer(runs_dir, "failed", "--steps", "120", "--then", "wait")
        killed = start_trainer(
            runs_dir, "killed", "--steps", "1000000", "--flush-every", "50", "--step-delay", "0.001"
        )
        assert completed.wait(timeout=60) == 0
        assert failed.stdout is not None and failed.stdout.readline().startswith("logged")
        failed.send_signal(signal.SIGTERM)
        failed.wait(timeout=30)
        wait_for(lambda: runformat.read_losses(runs_dir / "killed").table.num_rows >= 100)
        killed.kill()
        killed.wait()

        wait_rendered(runs_dir / "completed", "completed")
        wait_rendered(runs_dir / "failed", "failed")
        wait_rendered(runs_dir / "killed", "stalled")
        summary = json.loads(
            next((runs_dir / "failed" / "loss_graphs").glob("loss_summary_*.json")).read_text()
        )
        assert summary["run"]["error"] == "terminated by SIGTERM"

        resumed = start_trainer(runs_dir, "killed", "--start", "50", "--steps", "100")
        assert resumed.wait(timeout=60) == 0
        wait_rendered(runs_dir / "killed", "completed")

        wait_for(
            lambda: (
                "killed" in (runs_dir / "index.html").read_text()
                and "completed" in (runs_dir / "index.html").read_text()
            )
        )
        page = (runs_dir / "index.html").read_text()
        assert all(
            f"{run}/loss_graphs/loss_report_" in page for run in ("completed", "failed", "killed")
        )
    finally:
        code, seconds = daemon.stop()
    assert code == 0 and seconds < 15
    assert daemon.events("stopping")
    rendered = [(event["run"], event["status"]) for event in daemon.events("rendered")]
    assert {"completed", "failed", "killed"} == {run for run, _ in rendered}
    assert [status for run, status in rendered if run == "killed"][-2:] == ["stalled", "completed"]


def test_broken_runs_among_healthy_ones_all_get_reports_and_a_restart_renders_nothing(
    runs_dir: Path,
) -> None:
    for run_id in ("healthy-1", "healthy-2", "corrupt-shard", "bad-run-file"):
        _finished_run(runs_dir, run_id)
    (runs_dir / "corrupt-shard" / "losses" / "part-000009.parquet").write_bytes(b"PAR1 junk")
    (runs_dir / "bad-run-file" / "run.json").write_text("{ not json")
    (runs_dir / "not-a-run").mkdir()

    first = run_once(runs_dir)
    assert first.returncode == 0, first.stderr
    for run_id in ("healthy-1", "healthy-2", "corrupt-shard", "bad-run-file"):
        assert _report_is_whole(runs_dir / run_id), run_id
    assert (
        "part-000009.parquet"
        in next((runs_dir / "corrupt-shard" / "loss_graphs").glob("*.html")).read_text()
    )
    assert read_marker(runs_dir / "bad-run-file").status == "unknown"  # type: ignore[union-attr]
    assert (runs_dir / "index.html").is_file()

    markers = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/loss_graphs/.lossreport-*")}
    second = run_once(runs_dir)
    assert second.returncode == 0
    scans = [json.loads(line) for line in second.stderr.splitlines() if '"scan"' in line]
    assert scans and "scanned 4 runs" in scans[0]["message"]
    assert "0 to render" in scans[0]["message"]
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def test_a_daemon_killed_mid_render_leaves_every_report_whole_after_a_restart(
    runs_dir: Path, tmp_path: Path
) -> None:
    runs = [_finished_run(runs_dir, f"run-{index}", steps=3000) for index in range(5)]
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    daemon.wait_for_event("render_started")
    wait_for(
        lambda: any(p.name.startswith(".loss_graphs.new-") for r in runs for p in r.iterdir())
    )  # a render is half way
    daemon.kill_everything()

    restarted = run_once(runs_dir)
    assert restarted.returncode == 0, restarted.stderr
    for run in runs:
        assert _report_is_whole(run), run
        assert not [p for p in run.iterdir() if p.name.startswith(".loss_graphs.")]


def test_two_daemons_on_one_directory_render_each_run_once(runs_dir: Path, tmp_path: Path) -> None:
    first = Daemon(runs_dir, log=tmp_path / "first.log")
    second = Daemon(runs_dir, log=tmp_path / "second.log")
    try:
        first.wait_for_event("watching")
        second.wait_for_event("watching")
        runs = [_finished_run(runs_dir, f"shared-{index}") for index in range(4)]
        for run in runs:
            wait_rendered(run, "completed")
        wait_for(lambda: len(first.events("rendered")) + len(second.events("rendered")) >= 4)
    finally:
        first.stop()
        second.stop()
    rendered = [e["run"] for e in first.events("rendered") + second.events("rendered")]
    assert sorted(rendered) == [f"shared-{index}" for index in range(4)]


def test_polling_mode_renders_a_completed_run(runs_dir: Path, tmp_path: Path) -> None:
    daemon = Daemon(runs_dir, "--poll", "--poll-interval", "0.3", log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        assert "PollingObserver" in daemon.events("watching")[0]["message"]
        assert start_trainer(runs_dir, "polled", "--steps", "100").wait(timeout=60) == 0
        wait_rendered(runs_dir / "polled", "completed")
    finally:
        daemon.stop()


def test_an_inotify_overflow_is_rescanned_once_and_misses_no_run(
    runs_dir: Path, tmp_path: Path
) -> None:
    """The daemon frozen, its inotify queue is overflowed, then a run finishes: its events
    are past the overflow, lost, and only the rescan the overflow brings finds it (the
    periodic one is an hour away)."""
    daemon = Daemon(runs_dir, "--rescan-every", "3600", log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        assert "InotifyObserver" in daemon.events("watching")[0]["message"]
        queue_size = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            for number in range(queue_size // 2 + 100):  # a create and a close-write each
                (runs_dir / f".noise-{number}").touch()
            run_dir = _finished_run(
                runs_dir, "Qwen2.5-7B-Instruct/résumé-sweep", report_on_close=False
            )
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        wait_rendered(run_dir, "completed", timeout=60)
        assert len(daemon.events("events_lost")) == 1
    finally:
        daemon.stop()


def test_systemd_hears_ready_watchdog_pings_and_stopping(runs_dir: Path, tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.settimeout(60)
        daemon = Daemon(
            runs_dir,
            log=tmp_path / "daemon.log",
            env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "400000"},
        )
        messages = [listener.recv(4096).decode() for _ in range(3)]
        assert messages[0].startswith("READY=1\nSTATUS=watching ")
        assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
        code, seconds = daemon.stop()
        rest = []
        listener.settimeout(1)
        try:
            while True:
                rest.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
    assert rest[-1] == "STOPPING=1"
    assert code == 0 and seconds < 10


def test_a_run_that_cannot_be_rendered_is_retried_and_never_stops_the_others(
    runs_dir: Path, tmp_path: Path
) -> None:
    blocked = _finished_run(runs_dir, "blocked")
    (blocked / "loss_graphs").write_text("a file where the report folder would go")
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("render_failed")
        healthy = _finished_run(runs_dir, "healthy")
        wait_rendered(healthy, "completed")
        (blocked / "loss_graphs").unlink()  # the user moves their file away
        wait_rendered(blocked, "completed", timeout=90)  # the retry, after its backoff
    finally:
        code, _ = daemon.stop()
    assert code == 0
    failure = daemon.events("render_failed")[0]
    assert failure["run"] == "blocked" and failure["attempt"] == 1
    assert "not a folder: left untouched" in failure["message"]


def test_live_every_re_renders_a_running_run(runs_dir: Path, tmp_path: Path) -> None:
    daemon = Daemon(runs_dir, "--live-every", "1s", log=tmp_path / "daemon.log")
    trainer = start_trainer(
        runs_dir, "live", "--steps", "50", "--flush-every", "10", "--then", "wait"
    )
    try:
        wait_rendered(runs_dir / "live", "running")
    finally:
        trainer.kill()
        trainer.wait()
        daemon.stop()
    assert daemon.events("rendered")[0]["status"] == "running"


def test_a_worker_killed_mid_render_is_replaced_and_the_run_rendered(
    runs_dir: Path, tmp_path: Path
) -> None:
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        run = _finished_run(runs_dir, "victim", steps=3000)
        daemon.wait_for_event("render_started")
        wait_for(lambda: child_workers(daemon.process.pid))
        for pid in child_workers(daemon.process.pid):
            os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        daemon.wait_for_event("render_failed")
        wait_rendered(run, "completed", timeout=90)
    finally:
        code, _ = daemon.stop()
    assert code == 0


def test_idle_workers_are_replaced_by_a_fresh_one_that_still_renders(
    runs_dir: Path, tmp_path: Path
) -> None:
    daemon = Daemon(runs_dir, "--idle-restart", "1s", log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        wait_rendered(_finished_run(runs_dir, "before"), "completed")
        daemon.wait_for_event("workers_refreshed")
        wait_rendered(_finished_run(runs_dir, "after"), "completed")
    finally:
        code, _ = daemon.stop()
    assert code == 0


def test_a_run_deleted_file_by_file_is_not_rendered_while_it_goes(
    runs_dir: Path, tmp_path: Path
) -> None:
    """`rm -rf` of a big run on NFS takes seconds, an unlink a round trip. Scans meanwhile saw
    its inputs change and rendered it into the folder being emptied: the removal then failed
    (not empty) and left a report of half a run in the index."""
    run_dir = _finished_run(runs_dir, "going", report_on_close=False)
    first = next((run_dir / "losses").iterdir())
    for number in range(2, 301):  # a long run's shards
        shutil.copy(first, first.with_name(first.name.replace("000001", f"{number:06d}")))
    daemon = Daemon(runs_dir, "--rescan-every", "1s", log=tmp_path / "daemon.log")
    try:
        wait_rendered(run_dir, "completed")
        renders = len(daemon.events("render_started"))
        _remove_as_a_slow_filesystem_does(run_dir)  # 3 s: scans look at it meanwhile
        index = runs_dir / "index.html"
        wait_for(lambda: index.exists() and "going/loss_graphs" not in index.read_text())
        assert not run_dir.exists()
        assert len(daemon.events("render_started")) == renders
    finally:
        code, _ = daemon.stop()
    assert code == 0


def _remove_as_a_slow_filesystem_does(folder: Path, unlink_seconds: float = 0.01) -> None:
    """`rm -rf folder`, deepest first, each removal taking `unlink_seconds` as on NFS (a round
    trip each). Raises OSError where a folder is not empty by its turn: written meanwhile."""
    for top, folders, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
            time.sleep(unlink_seconds)  # the simulated filesystem's latency, not a wait
        for name in folders:
            os.rmdir(os.path.join(top, name))
    os.rmdir(folder)


def test_a_rescan_drops_deleted_runs_from_the_index(runs_dir: Path, tmp_path: Path) -> None:
    keep, drop = _finished_run(runs_dir, "keep"), _finished_run(runs_dir, "drop")
    daemon = Daemon(runs_dir, "--rescan-every", "1s", log=tmp_path / "daemon.log")
    try:
        wait_rendered(keep, "completed")
        wait_rendered(drop, "completed")
        index = runs_dir / "index.html"
        wait_for(lambda: index.exists() and "drop/loss_graphs" in index.read_text())
        shutil.rmtree(drop)
        wait_for(lambda: "drop/loss_graphs" not in index.read_text())
        assert "keep/loss_graphs" in index.read_text()
    finally:
        code, _ = daemon.stop()
    assert code == 0
