"""Summary first, pictures after: a daemon with more finished runs than free workers gives
each its quick report (no charts), then draws every run's charts; only the full report is
recorded, so a daemon stopped in between draws them after it restarts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import lossreport
from lossreport import runformat
from lossreport.catalog import Catalog
from lossreport.runformat import OUTBOX_DIR, read_marker
from tests.support.catalog import REAL_MODELS
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.procs import wait_for
from tests.support.smtp import SmtpServer

RUNS = 6
HOSTILE_MODEL = "Qwen/Qwen2.5-7B-中文-<b>instruct</b>"
NOTE = "The charts are being drawn."


def _sweep_run(runs_dir: Path, index: int) -> lossreport.Run:
    """A small SAE run of a sweep, its id start_run's own; left open (running)."""
    models = [HOSTILE_MODEL, *REAL_MODELS]
    run = lossreport.start_run(
        runs_dir,
        model=models[index % len(models)],
        hook=f"blocks.{index}.hook_resid_post",
        architecture="topk",
        config={"lr": 1e-4, "l1_coefficient": index + 1},
        report_on_close=False,
    )
    for step in range(200):
        run.log(step, mse_loss=5.0 / (1 + step) + 0.05, l1_loss=0.1 + step / 2000)
    run.flush()
    return run


def _report(run_dir: Path) -> dict[str, Any] | None:
    """What a reader finds in the run's loss_graphs/ now, or None before any report."""
    graphs = run_dir / runformat.GRAPHS_DIR
    try:
        names = {path.name for path in graphs.iterdir()}
        page = next(graphs.glob("loss_report_*.html")).read_text()
    except (OSError, StopIteration):  # not there yet, or swapped while read
        return None
    return {
        "pngs": sum(name.endswith(".png") for name in names),
        "csv": any(name.startswith("loss_history_") for name in names),
        "json": any(name.startswith("loss_summary_") for name in names),
        "page": page,
        "marker": read_marker(run_dir),
    }


def _is_quick(report: dict[str, Any]) -> bool:
    return (
        report["pngs"] == 0
        and report["csv"]
        and report["json"]
        and NOTE in report["page"]
        and report["marker"] is None
    )


def _is_full(run_dir: Path) -> bool:
    report = _report(run_dir)
    marker = read_marker(run_dir)
    return (
        report is not None
        and report["pngs"] == 3  # two losses and the combined chart
        and NOTE not in report["page"]
        and marker is not None
        and marker.status == "completed"
    )


def _catalog_rows(runs_dir: Path) -> dict[str, dict[str, Any]]:
    catalog = Catalog.open_readonly(runs_dir)
    if catalog is None:
        return {}
    try:
        return {row["run_id"]: row for row in catalog.recent(100)}
    finally:
        catalog.close()


def _order(daemon: Daemon) -> list[tuple[str, str]]:
    """(event, run) of each quick and full report, in the order the daemon made them."""
    return [
        (event["event"], event["run"])
        for event in daemon.events()
        if event.get("event") in ("summarised", "rendered")
    ]


def test_a_burst_gets_every_summary_first_then_every_chart(runs_dir: Path, tmp_path: Path) -> None:
    runs = [_sweep_run(runs_dir, index) for index in range(RUNS)]
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        for run in runs:
            run.close()
        # What a reader of each run's folder sees first, polled until every report is whole.
        first: dict[str, dict[str, Any]] = {}

        def all_full() -> bool:
            for run in runs:
                report = first.get(run.path.name) or _report(run.path)
                if report is not None:
                    first.setdefault(run.path.name, report)
            return all(_is_full(run.path) for run in runs)

        wait_for(all_full, timeout=120, interval=0.02)
        wait_for(lambda: len(daemon.events("rendered")) == RUNS)  # logged once in place
        order = _order(daemon)
        summarised = [run for event, run in order if event == "summarised"]
        # The first run may be alone in the queue when it is looked at, and is drawn at once;
        # the rest wait behind it: each gets its summary before any of them its charts.
        assert len(summarised) >= RUNS - 1, order
        last_summary = max(i for i, (event, _) in enumerate(order) if event == "summarised")
        assert all(order.index(("rendered", run)) > last_summary for run in summarised), order
        for run in runs:
            if run.path.name in summarised:
                assert _is_quick(first[run.path.name]), (run.path.name, first[run.path.name])
        hostile = next(report for report in first.values() if "instruct" in report["page"])
        assert "中文-&lt;b&gt;instruct&lt;/b&gt;" in hostile["page"]
        assert "<b>instruct" not in hostile["page"]
        rows = _catalog_rows(runs_dir)
        assert {run.path.name for run in runs} <= rows.keys()
    finally:
        daemon.stop()


def test_a_daemon_stopped_between_the_passes_draws_the_charts_after_it_restarts(
    runs_dir: Path, tmp_path: Path
) -> None:
    """Nothing claims to be final before the charts: no marker (so the restart renders the
    run) and no mail (mails carry the charts) until the full report."""
    runs = [_sweep_run(runs_dir, index) for index in range(RUNS)]
    for run in runs:  # finished while no daemon was watching: the start finds all waiting
        run.close()
    with SmtpServer() as smtp:
        mail = ["--email-to", "team@example.com", "--smtp-host", "127.0.0.1", "--no-alerts"]
        mail += ["--smtp-port", str(smtp.port)]
        daemon = Daemon(runs_dir, *mail, log=tmp_path / "first.log")
        try:
            wait_for(
                lambda: (
                    len(daemon.events("summarised")) == RUNS or daemon.process.poll() is not None
                ),
                timeout=60,
            )
        finally:
            daemon.kill_everything()  # SIGKILL, daemon and workers, between the two passes
        assert len(daemon.events("summarised")) == RUNS, daemon.log.read_text()
        waiting = [run for run in runs if read_marker(run.path) is None]
        assert len(waiting) >= RUNS - 2  # at most the first charts were drawn before the kill
        queued = list((runs_dir / OUTBOX_DIR).glob("*")) if (runs_dir / OUTBOX_DIR).is_dir() else []
        assert len(smtp.received) + len(queued) <= RUNS - len(waiting)
        rows = _catalog_rows(runs_dir)
        for run in waiting:
            report = _report(run.path)
            assert report is not None and _is_quick(report), run.path
            row = rows[run.path.name]  # listed with its figures, before its charts
            assert row["status"] == "completed" and row["report"].endswith(".html")
            assert row["final"]["mse_loss"] > 0 and row["minimum"]["l1_loss"] > 0, row
            assert len(json.loads(row["curves_json"])["mse_loss"]) > 10, row

        restarted = Daemon(runs_dir, *mail, log=tmp_path / "second.log")
        try:
            for run in runs:
                wait_rendered(run.path, "completed", timeout=120)
            wait_for(lambda: all(_is_full(run.path) for run in runs), timeout=30)
            wait_for(lambda: len(smtp.received) >= RUNS, timeout=60)
        finally:
            code, _ = restarted.stop(signal.SIGTERM)
        assert code == 0
        subjects = sorted(received.message["Subject"] for received in smtp.received)
        assert len(subjects) == RUNS, subjects  # each once
        for received in smtp.received:
            parts = [part.get_content_type() for part in received.message.walk()]
            assert "image/png" in parts  # the charts, which the quick report has not


def test_once_draws_every_chart_after_the_summaries_before_it_exits(runs_dir: Path) -> None:
    """cron's `--once` over a sweep that finished meanwhile: summaries first, and it exits only
    once every full report is in place."""
    runs = [_sweep_run(runs_dir, index) for index in range(RUNS)]
    for run in runs:
        run.close()
    done = run_once(runs_dir, "--no-alerts")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    summarised = [event["run"] for event in events if event.get("event") == "summarised"]
    assert sorted(summarised) == sorted(run.path.name for run in runs)
    assert all(_is_full(run.path) for run in runs)
