"""Alerts while runs train: a real daemon, real trainer processes, a real SMTP server and a
real HTTP receiver on loopback. Each alert must arrive while its trainer still runs, name the
step, and arrive once, daemon restarts included."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import lossreport
from lossreport import runformat
from lossreport.delivery.webhook import TOKEN_ENV
from tests.support import alert_corpus
from tests.support.daemon import Daemon
from tests.support.procs import start_trainer, wait_for
from tests.support.smtp import SmtpServer
from tests.support.webhook import WebhookReceiver

# The scripted trainer (tests/support/trainer.py) logs mse_loss = NaN at step 7.
NAN_STEP = 7


@pytest.fixture
def trainers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for trainer in started:
        if trainer.poll() is None:
            trainer.send_signal(signal.SIGCONT)
            trainer.kill()
        trainer.wait()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lossreport.toml"
    path.write_text(text)
    return path


def _alerts_of(posts: list[dict[str, object]], rule: str) -> list[dict[str, object]]:
    return [post for post in posts if post["rule"] == rule]


def test_a_nan_is_alerted_once_while_the_trainer_runs_even_across_a_restart(
    runs_dir: Path, tmp_path: Path, trainers: list[subprocess.Popen[str]]
) -> None:
    # A user rule that can only fire late, after the restart: it shows the new daemon checked
    # the run (and re-read the NaN without raising it again). The trainer is stopped while the
    # first daemon runs, so a slow machine cannot let it reach step 300 before the restart.
    config = _config(
        tmp_path,
        '[[alerts.rule]]\nname = "l1 late"\nloss = "l1_loss"\nabove = 0.0\nafter_step = 300\n',
    )
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        args = ("--config", str(config), "--alert-webhook", hook.url)
        mail = ("--email-to", "me@example.com", "--smtp-host", "127.0.0.1")
        daemon = Daemon(
            runs_dir, *args, *mail, "--smtp-port", str(smtp.port), log=tmp_path / "1.log"
        )
        wait_for(lambda: runformat.live_daemon(runs_dir) is not None, timeout=60)
        trainer = start_trainer(
            runs_dir, "r", "--steps", "400", "--flush-every", "10", "--step-delay", "0.02",
            "--then", "wait", "--report-on-close", "false",
        )  # fmt: skip
        trainers.append(trainer)

        wait_for(lambda: _alerts_of(hook.delivered(), "non-finite"), timeout=30)
        assert trainer.poll() is None  # while it trains
        trainer.send_signal(signal.SIGSTOP)
        (alert,) = _alerts_of(hook.delivered(), "non-finite")
        assert (alert["loss"], alert["step"], alert["value"]) == ("mse_loss", NAN_STEP, "nan")
        assert alert["run"] == "r" and "step 7;" in str(alert["text"])
        assert alert["report"] is None  # no URL to link: the run is named by its key
        assert str(runs_dir) not in json.dumps(alert)
        wait_for(lambda: any("ALERT" in m.message["Subject"] for m in smtp.received), timeout=30)
        (mailed,) = [m.message for m in smtp.received if "ALERT" in m.message["Subject"]]
        assert "non-finite in mse_loss at step 7" in mailed["Subject"]
        # The live report shows it (rendered because of the alert).
        wait_for(lambda: _report_text(runs_dir / "r").count("Alerts raised while") == 1)
        assert "step 7" in _report_text(runs_dir / "r")
        index = runs_dir / runformat.INDEX_FILE
        wait_for(lambda: index.exists() and "⚠ non-finite at step 7<" in index.read_text())
        assert daemon.stop()[0] == 0

        daemon = Daemon(
            runs_dir, *args, *mail, "--smtp-port", str(smtp.port), log=tmp_path / "2.log"
        )
        daemon.wait_for_event("watching")
        trainer.send_signal(signal.SIGCONT)
        wait_for(lambda: _alerts_of(hook.delivered(), "l1 late"), timeout=60)
        assert trainer.poll() is None
        assert daemon.stop()[0] == 0
        assert len(_alerts_of(hook.delivered(), "non-finite")) == 1  # once, across the restart
        (late,) = _alerts_of(hook.delivered(), "l1 late")
        assert int(str(late["step"])) >= 300
        assert sum("ALERT" in m.message["Subject"] for m in smtp.received) == 2
    log = runformat.read_alert_log(runs_dir / "r")
    assert [entry["rule"] for entry in log] == ["non-finite", "l1 late"]


def _report_text(run_dir: Path) -> str:
    pages = list((run_dir / "loss_graphs").glob("loss_report_*.html"))
    return pages[0].read_text() if pages else ""


def test_a_jump_is_alerted_by_the_default_rules_in_words(
    runs_dir: Path, tmp_path: Path, trainers: list[subprocess.Popen[str]]
) -> None:
    """The scripted trainer's mse_loss jumps 100x at step 100 and stays. The default rule
    compares the last 100 finite values with the 100 before them: the first time it can is
    step 200 (the NaN at step 7 is no value), where it fires."""
    config = _config(tmp_path, "[alerts]\nnon_finite = false\n")
    with WebhookReceiver() as hook:
        daemon = Daemon(
            runs_dir, "--config", str(config), "--alert-webhook", hook.url, log=tmp_path / "d.log"
        )
        diverging = start_trainer(
            runs_dir, "r", "--steps", "300", "--flush-every", "10", "--step-delay", "0.01",
            "--then", "wait", "--diverge-from", "100", "--report-on-close", "false",
        )  # fmt: skip
        trainers.append(diverging)
        wait_for(lambda: hook.delivered(), timeout=30)
        assert trainers[0].poll() is None
        assert daemon.stop()[0] == 0
    (alert,) = hook.delivered()
    assert (alert["rule"], alert["loss"], alert["step"]) == ("divergence", "mse_loss", 200)
    assert re.fullmatch(
        r"mse_loss rose [\d.]+x in 100 steps, from [\d.]+ at step 100 to [\d.]+ at step 200, "
        r"and stayed there: 90 of its last 100 values are at least [\d.]+ \(rule divergence\)\.",
        str(alert["detail"]),
    )


@pytest.mark.slow
def test_the_labelled_corpus_raises_no_false_alert_and_catches_every_failure(
    tmp_path: Path,
) -> None:
    """Every healthy and failing curve of tests/support/alert_corpus.py, played to one daemon
    with the default rules: nothing on a healthy curve, each failure caught from its onset,
    seconds after the shard that shows it."""
    played, _log = alert_corpus.run_corpus(tmp_path, alert_corpus.corpus())
    false = {run.curve.kind: run.false_alerts() for run in played if run.false_alerts()}
    assert false == {}
    caught = {run.curve.kind: run.caught() is not None for run in played if run.curve.failure}
    assert all(caught.values()), caught
    latencies = {run.curve.kind: run.latency(alert_corpus.STALE_AFTER) for run in played}
    assert all(s is None or s < 20 for s in latencies.values()), latencies


def test_an_alert_escapes_slack_control_sequences_and_links_the_served_report(
    runs_dir: Path, tmp_path: Path
) -> None:
    """User strings cannot ping a channel or plant a link; the one link is lossreport's, to
    the report through --email-report-url, and no filesystem path leaves in the post."""
    with WebhookReceiver() as hook:
        daemon = Daemon(
            runs_dir, "--alert-webhook", hook.url, "--email-report-url",
            "https://reports.example.com/lossreport/", log=tmp_path / "d.log",
        )  # fmt: skip
        wait_for(lambda: runformat.live_daemon(runs_dir) is not None, timeout=60)
        run = lossreport.start_run(
            runs_dir, model="<!channel> gpt2 & co", hook="<https://evil.example|Open the report>",
            run_id="résumé-run_20260301-091500_a1b2c3", report_on_close=False,
        )  # fmt: skip
        try:
            for step in range(20):
                run.log(step, mse_loss=1.0 / (step + 1))
            run.log(20, mse_loss=math.nan)
            run.flush()
            wait_for(lambda: hook.delivered(), timeout=30)
        finally:
            run.close()
        assert daemon.stop()[0] == 0
    (alert,) = hook.delivered()
    key = run.path.name
    report = alert["report"]
    assert isinstance(report, str)
    assert report.startswith(f"https://reports.example.com/lossreport/{quote(key)}/loss_graphs/")
    assert alert["text"] == (
        f"lossreport alert for run {key} (&lt;!channel&gt; gpt2 &amp; co · "
        "&lt;https://evil.example|Open the report&gt;): mse_loss is NaN at step 20; its last "
        "finite value was 0.05 at step 19 (rule non-finite). "
        f"<{report}|Open the report>"
    )
    assert alert["model"] == "<!channel> gpt2 & co"  # the JSON fields stay as they are
    assert str(runs_dir) not in json.dumps(alert)


def test_a_silent_trainer_is_alerted_as_stalled(
    runs_dir: Path, tmp_path: Path, trainers: list[subprocess.Popen[str]]
) -> None:
    with WebhookReceiver() as hook:
        daemon = Daemon(
            runs_dir, "--stale-after", "2s", "--alert-webhook", hook.url, log=tmp_path / "d.log"
        )
        trainer = start_trainer(
            runs_dir, "r", "--steps", "5", "--flush-every", "5", "--then", "wait",
            "--report-on-close", "false",
        )  # fmt: skip
        trainers.append(trainer)
        assert trainer.stdout is not None and trainer.stdout.readline() == "logged 5\n"
        trainer.send_signal(signal.SIGSTOP)  # hung: no more heartbeats
        wait_for(lambda: hook.delivered(), timeout=60)
        assert daemon.stop()[0] == 0
    (alert,) = hook.delivered()
    assert alert["rule"] == "stalled" and "written nothing" in str(alert["text"])


def test_a_webhook_that_fails_twice_gets_the_alert_on_the_third_try_with_its_token(
    runs_dir: Path, tmp_path: Path, trainers: list[subprocess.Popen[str]]
) -> None:
    token = "t0ken-" + os.urandom(4).hex()
    with WebhookReceiver(fail_first=2) as hook:
        daemon = Daemon(
            runs_dir, "--alert-webhook", hook.url, "--email-retry", "0.2s",
            log=tmp_path / "d.log", env={TOKEN_ENV: token},
        )  # fmt: skip
        wait_for(lambda: runformat.live_daemon(runs_dir) is not None, timeout=60)
        trainer = start_trainer(
            runs_dir, "r", "--steps", "50", "--flush-every", "10", "--then", "wait",
            "--report-on-close", "false",
        )  # fmt: skip
        trainers.append(trainer)
        wait_for(lambda: hook.delivered(), timeout=60)
        assert daemon.stop()[0] == 0
        posts = hook.posts
    assert [post.answered for post in posts] == [500, 500, 200]
    assert all(post.headers["Authorization"] == f"Bearer {token}" for post in posts)
    assert len({json.dumps(post.body, sort_keys=True) for post in posts}) == 1  # the same alert
    assert token not in daemon.log.read_text()
    failures = daemon.events("mail_failed")
    assert len(failures) == 2 and "HTTP 500" in failures[0]["message"]
    # Named by its run and rule, as a user knows them, not by its file in the outbox.
    rule = posts[0].body["rule"]
    assert failures[0]["run"] == "r"
    assert failures[0]["message"].startswith(f"run=r alert {rule} (webhook post) not sent (")
    assert "WebhookError" not in failures[0]["message"]
    assert hook.url.split("/hooks")[1] not in daemon.log.read_text()  # the path may be a secret
