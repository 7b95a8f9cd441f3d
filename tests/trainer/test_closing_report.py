"""The report at a run's close (`report_on_close`): the feature document's end-of-training
graphs, CSV and console summary with no daemon, and none of it when a live daemon follows."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lossreport
from lossreport import runformat
from lossreport.runformat import presence
from lossreport.trainer.closing_report import ENVIRONMENT_VARIABLE
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.procs import PYTHONPATH, ROOT, run_cli, wait_for
from tests.support.trainer import LATE_LOSS_FROM, expected_losses

LOSSES = ("mse_loss", "l1_loss", "overall_loss", "auxiliary_reconstruction_loss")
# The trainers here decide as a user's would: no LOSSREPORT_REPORT_ON_CLOSE (conftest sets 0).
USER_ENV = {
    **{k: v for k, v in os.environ.items() if k != ENVIRONMENT_VARIABLE},
    "PYTHONPATH": PYTHONPATH,
}


def _train(runs_dir: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.trainer", str(runs_dir), run_id, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=USER_ENV,
    )
    assert result.returncode == 0, result.stderr
    return result


def _report_files(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Each file of the report with its inode and modification time: a render changes both."""
    graphs = run_dir / runformat.GRAPHS_DIR
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in graphs.iterdir()}


def test_a_run_closed_with_no_daemon_prints_the_summary_and_leaves_a_whole_report(
    runs_dir: Path,
) -> None:
    output = _train(runs_dir, "r", "--steps", "2000", "--flush-every", "500").stdout
    run_dir = runs_dir / "r"
    graphs = run_dir / runformat.GRAPHS_DIR
    charts = sorted(graphs.glob("loss_curves_*.png"))
    (csv_path,) = graphs.glob("loss_history_*.csv")
    # The feature document's console block, in its order, naming the files as they are.
    block = output[output.index("Generated 5 loss graph files:") :]
    assert [line.strip() for line in block.splitlines()[1:6]] == [
        f"- {graphs / name}" for name in _chart_order(charts)
    ]
    assert f"Saved loss history CSV to: {csv_path}" in block
    summary = block[block.index("Loss Training Summary:") :].splitlines()
    assert summary[:4] == [
        "Loss Training Summary:",
        "  Model: scripted/model",
        "  Hook: blocks.0.hook_mlp_out",
        "  Total Steps: 2000",
    ]
    assert "  l1_loss:" in summary and "    Final: 0.250002" in summary
    # The whole report: every logged value in the CSV, the summary, the page.
    assert len(charts) == 5 and all(p.stat().st_size > 10_000 for p in charts)
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == list(range(2000))
    for step in (0, 7, 8, LATE_LOSS_FROM, 1999):
        for name, value in expected_losses(step).items():
            assert float(rows[step][name]) == pytest.approx(value, nan_ok=True)
    assert rows[0]["auxiliary_reconstruction_loss"] == ""  # not logged before step 150
    (summary_json,) = graphs.glob("loss_summary_*.json")
    document = json.loads(summary_json.read_text())
    assert document["run"]["status"] == "completed" and document["total_steps"] == 2000
    (page,) = graphs.glob("loss_report_*.html")
    assert "scripted/model" in page.read_text()
    assert runformat.read_run_file(run_dir).status == "completed"

    # A daemon over the same directory then finds nothing to do.
    before = _report_files(run_dir)
    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr
    assert '"event": "render_started"' not in result.stdout + result.stderr
    assert _report_files(run_dir) == before


def _chart_order(charts: list[Path]) -> list[str]:
    """The charts in the order the console lists them: the losses as logged, then combined."""
    by_loss = {
        next(name for name in (*LOSSES, "combined") if f"loss_curves_{name}_" in p.name): p.name
        for p in charts
    }
    logged = ["mse_loss", "l1_loss", "overall_loss", "auxiliary_reconstruction_loss"]
    return [by_loss[name] for name in [*logged, "combined"]]


def test_with_a_live_daemon_the_default_leaves_the_report_to_it(
    runs_dir: Path, tmp_path: Path
) -> None:
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        wait_for(lambda: runformat.live_daemon(runs_dir) is not None, timeout=60)
        output = _train(runs_dir, "r", "--steps", "300").stdout
        assert "Generated" not in output and "Loss Training Summary" not in output
        wait_rendered(runs_dir / "r", "completed")
        started = [e for e in daemon.events("render_started") if e.get("run") == "r"]
        assert len(started) == 1  # the daemon rendered it, once
    finally:
        assert daemon.stop()[0] == 0
    assert not (runs_dir / runformat.PRESENCE_FILE).exists()  # withdrawn on a clean exit


def test_a_dead_daemons_presence_does_not_count(runs_dir: Path, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has now
    (runs_dir / runformat.PRESENCE_FILE).write_text(
        json.dumps({"host": os.uname().nodename, "pid": gone.pid, "heartbeat_at": _now()})
    )
    output = _train(runs_dir, "r", "--steps", "50").stdout
    assert "Loss Training Summary:" in output


def _now() -> str:
    return runformat.utc_now()


def test_true_renders_even_under_a_live_daemon_and_false_never(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENVIRONMENT_VARIABLE)
    presence.write_presence(runs_dir)  # this process, alive: a daemon for the trainer
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="auto") as run:
        run.log(0, mse_loss=1.0)
    with lossreport.start_run(
        runs_dir, model="m", hook="h", run_id="always", report_on_close=True
    ) as run:
        run.log(0, mse_loss=1.0)
    (runs_dir / runformat.PRESENCE_FILE).unlink()
    with lossreport.start_run(
        runs_dir, model="m", hook="h", run_id="never", report_on_close=False
    ) as run:
        run.log(0, mse_loss=1.0)
    assert [p.parent.name for p in runs_dir.glob(f"*/{runformat.GRAPHS_DIR}")] == ["always"]
    assert capsys.readouterr().out.count("Loss Training Summary:") == 1


def test_auto_given_as_any_string_equal_to_it_leaves_the_report_to_the_daemon(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENVIRONMENT_VARIABLE)
    presence.write_presence(runs_dir)
    from_a_config_file = "".join(["au", "to"])  # not the interned literal
    with lossreport.start_run(
        runs_dir, model="m", hook="h", run_id="r", report_on_close=from_a_config_file
    ) as run:
        run.log(0, mse_loss=1.0)
    assert not (runs_dir / "r" / runformat.GRAPHS_DIR).exists()


def test_the_environment_decides_auto_before_the_daemon_does(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "1")
    presence.write_presence(runs_dir)
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="forced") as run:
        run.log(0, mse_loss=1.0)
    assert (runs_dir / "forced" / runformat.GRAPHS_DIR).is_dir()


def test_a_bad_setting_is_refused_at_start_before_anything_is_created(runs_dir: Path) -> None:
    with pytest.raises(ValueError, match="report_on_close must be True, False or 'auto'"):
        lossreport.start_run(runs_dir, model="m", hook="h", report_on_close="yes")  # type: ignore[arg-type]
    assert list(runs_dir.iterdir()) == []


def test_the_chart_engine_never_enters_the_training_process(runs_dir: Path) -> None:
    script = (
        "import sys, lossreport\n"
        f"with lossreport.start_run({str(runs_dir)!r}, model='m', hook='h', run_id='r',"
        " report_on_close=True) as run:\n"
        "    run.log(0, mse_loss=1.0)\n"
        "heavy = sorted(m for m in ('vl_convert', 'altair', 'jinja2') if m in sys.modules)\n"
        "print('loaded:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=USER_ENV
    )
    assert result.returncode == 0, result.stderr
    assert "Loss Training Summary:" in result.stdout  # it rendered
    assert result.stdout.rstrip().endswith("loaded: []")


def test_a_failed_render_leaves_the_run_completed_and_says_why(
    runs_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = tmp_path / "dummy"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the report's")
    run = lossreport.start_run(runs_dir, model="m", hook="h", run_id="r", report_on_close=True)
    run.log(0, mse_loss=1.0)
    (run.path / runformat.GRAPHS_DIR).symlink_to(elsewhere)  # the render must refuse it
    with caplog.at_level(logging.ERROR, logger="lossreport"):
        run.close()  # does not raise
    assert runformat.read_run_file(run.path).status == "completed"
    out = capsys.readouterr().out
    assert "Loss report not rendered:" in out and "is a symbolic link" in out
    assert f"lossreport render {run.path}" in out
    assert any("Loss report not rendered" in r.getMessage() for r in caplog.records)
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]
    (run.path / runformat.GRAPHS_DIR).unlink()
    assert run_cli("render", str(run.path)).returncode == 0  # the run can still be rendered
    assert list((run.path / runformat.GRAPHS_DIR).glob("loss_report_*.html"))


def test_a_failed_training_gets_its_report_as_failed(runs_dir: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="out of memory"),
        lossreport.start_run(
            runs_dir, model="m", hook="h", run_id="r", report_on_close=True
        ) as run,
    ):
        run.log(0, mse_loss=1.0)
        raise RuntimeError("out of memory")
    (summary,) = (run.path / runformat.GRAPHS_DIR).glob("loss_summary_*.json")
    assert json.loads(summary.read_text())["run"]["status"] == "failed"


def test_a_trainer_stopped_by_sigterm_exits_without_rendering(runs_dir: Path) -> None:
    trainer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.trainer", str(runs_dir), "r", "--steps", "20",
         "--then", "wait", "--report-on-close", "true"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=USER_ENV,
    )  # fmt: skip
    assert trainer.stdout is not None
    assert trainer.stdout.readline() == "logged 20\n"
    trainer.terminate()
    assert trainer.wait(timeout=30) == -15
    record = runformat.read_run_file(runs_dir / "r")
    assert (record.status, record.error) == ("failed", "terminated by SIGTERM")
    assert not (runs_dir / "r" / runformat.GRAPHS_DIR).exists()


def test_clear_loss_history_starts_afresh_and_keeps_what_was_logged(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", run_id="r", report_on_close=False)
    for step in range(100):
        run.log(step, mse_loss=float(step))
    run.flush()
    for step in range(100, 120):  # buffered, not yet written: cleared too
        run.log(step, mse_loss=float(step))
    run.clear_loss_history()
    for step in range(120, 150):
        run.log(step, mse_loss=float(step))
    assert run.get_loss_history()["step"].tolist() == list(range(120, 150))
    run.close()
    (cleared,) = (run.path / runformat.LOSSES_DIR / runformat.CLEARED_DIR).iterdir()
    kept = sorted(
        step
        for shard in cleared.iterdir()
        for step in runformat.read_shard(shard).column("step").to_pylist()
    )
    assert kept == list(range(120))  # set aside, not deleted
    with pytest.raises(lossreport.RunClosedError):
        run.clear_loss_history()
