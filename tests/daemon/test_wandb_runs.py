"""The daemon on W&B run folders written by the real wandb package (offline): a NaN logged
through wandb.log while the run trains reaches the webhook, and a real SAELens training that
logs to W&B is reported by a daemon given nothing but the folder."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lossreport import runformat
from lossreport.sources import wandb_log
from lossreport.sources.wandb_runs import CACHE_FOLDER, RECORD_FILE, WandbSource
from tests.support.daemon import ROOT, Daemon, run_once, wait_rendered
from tests.support.optional import missing
from tests.support.procs import wait_for
from tests.support.wandb_writer import wandb_env
from tests.support.webhook import WebhookReceiver

if wandb_log.load_codec() is None:
    missing("wandb", "pip install -e '.[wandb]'")

SOURCE = WandbSource()


def _writer(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.wandb_writer", *args],
        cwd=ROOT,
        env=wandb_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_nan_logged_through_wandb_reaches_the_webhook_while_the_run_trains(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    go = tmp_path / "go"
    with WebhookReceiver() as hook:
        daemon = Daemon(root, "--alert-webhook", hook.url, log=tmp_path / "d.log")
        daemon.wait_for_event("watching")  # its folders made after: watched from the start
        writer = _writer(root, "live", "livenan1", str(go))
        try:
            wait_for(lambda: list(root.glob("wandb/offline-run-*-livenan1")), timeout=60)
            (run_dir,) = root.glob("wandb/offline-run-*-livenan1")
            # Steps 0..3 are in the log (W&B commits step 4 with the next): the daemon has
            # seen the run running.
            wait_for(lambda: SOURCE.read_losses(run_dir).table.num_rows == 4, timeout=60)
            go.touch()
            wait_for(lambda: [p for p in hook.delivered() if p["rule"] == "non-finite"], 60)
            (alert, arrived) = next(
                (post, at) for post, at in hook.timed() if post["rule"] == "non-finite"
            )
            logged_at = float(go.with_suffix(".nan").read_text())
            assert (alert["loss"], alert["step"], alert["value"]) == ("overall_loss", 5, "nan")
            assert writer.poll() is None  # while it trains
            latency = arrived - logged_at
            record_property("nan_to_webhook_seconds", round(latency, 2))
            print(f"a NaN logged through wandb.log reached the webhook in {latency:.2f} s")
            # Not a speed target: the log grows in place, and a daemon that waited for the
            # stall check (every 30 s at the default --stale-after) to see it took 28.9 s.
            assert latency < 15.0
            go.unlink()
            assert writer.wait(timeout=60) == 0
            wait_for(lambda: SOURCE.inputs(run_dir).status == "completed", timeout=30)
        finally:
            if writer.poll() is None:
                writer.send_signal(signal.SIGKILL)
            writer.communicate()
            assert daemon.stop()[0] == 0
    log = runformat.read_alert_log(run_dir)
    assert [entry["rule"] for entry in log] == ["non-finite"]


def test_a_killed_wandb_process_is_alerted_as_stalled(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.wandb_writer", "crash", "killed1"],
        cwd=ROOT,
        env=wandb_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "logged\n"
        (run_dir,) = root.glob("wandb/offline-run-*-killed1")
        wait_for(lambda: SOURCE.read_losses(run_dir).table.num_rows == 29, timeout=30)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    with WebhookReceiver() as hook:
        daemon = Daemon(
            root, "--stale-after", "2s", "--alert-webhook", hook.url, log=tmp_path / "d.log"
        )
        try:
            wait_for(lambda: [p for p in hook.delivered() if p["rule"] == "stalled"], 60)
            wait_rendered(run_dir, "stalled")  # and reported as such
        finally:
            assert daemon.stop()[0] == 0
    (alert,) = [post for post in hook.delivered() if post["rule"] == "stalled"]
    assert "though its log says running" in str(alert["text"])
    # Its name, config and end are kept for the next process (its log is not read again).
    kept = run_dir / runformat.CACHE_DIR / CACHE_FOLDER / RECORD_FILE
    assert json.loads(kept.read_bytes())["meta"]["run_id"] == "killed1"


@pytest.mark.slow
def test_a_real_sae_lens_training_logged_to_wandb_is_reported_by_a_daemon_given_the_folder(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cluster-home"
    root.mkdir()
    logged_file = tmp_path / "logged.json"
    writer = _writer(root, "sae_lens", "saelens1", str(logged_file))
    _out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-3000:]
    logged = {int(step): values for step, values in json.loads(logged_file.read_text()).items()}

    result = run_once(root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = root.glob("wandb/offline-run-*-saelens1")
    marker = runformat.read_marker(run_dir)
    assert marker is not None and marker.status == "completed"
    (csv_path,) = (run_dir / runformat.GRAPHS_DIR).glob("loss_history_*.csv")
    with csv_path.open(newline="") as handle:
        rows = {int(row["step"]): row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(logged) and len(rows) == 60
    for step, values in logged.items():
        for name, value in values.items():
            assert math.isclose(float(rows[step][name]), value, rel_tol=1e-12), (step, name)
    charts = {path.name for path in (run_dir / runformat.GRAPHS_DIR).glob("loss_curves_*.png")}
    assert any("overall_loss" in name for name in charts)
    assert not any("learning_rate" in name or "_runtime" in name for name in charts)
    index = (root / runformat.INDEX_FILE).read_text()
    assert "saelens1" in index and "gpt2-small" in index
