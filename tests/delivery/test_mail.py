"""Mail on completion, through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lossreport
from lossreport import runformat
from lossreport.delivery.outbox import sent_keys
from lossreport.runformat import OUTBOX_DIR, SENT_FILE
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.procs import run_cli, start_trainer, wait_for
from tests.support.smtp import SmtpServer, free_port

TO = "ml-team@example.com"


def _mail_args(server_port: int, *extra: str) -> list[str]:
    return ["--email-to", TO, "--smtp-host", "127.0.0.1", "--smtp-port", str(server_port), *extra]


def _trained(runs_dir: Path, run_id: str, **losses: float) -> Path:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=run_id) as run:
        for step in range(300):
            run.log(step, mse_loss=1.0 / (step + 1), **losses)
    return run.path


def check_mail_structure(message: EmailMessage, run_id: str, status: str) -> None:
    """What mail clients need: text + HTML alternatives, the chart as a cid: related part,
    CSS inlined (no <style>), an HTML body well under Gmail's clipping size."""
    assert message.get_content_type() in ("multipart/alternative", "multipart/mixed")
    plain = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert plain is not None and html_part is not None
    assert "Loss Training Summary:" in plain.get_content()
    html = html_part.get_content()
    assert len(html.encode()) < 100_000
    assert "<style" not in html and 'style="' in html
    assert "data:" not in html
    related = [p for p in message.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    images = [p for p in related[0].iter_parts() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    cid = images[0]["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    assert images[0].get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_id in message["Subject"] and status in message["Subject"]


def test_the_daemon_mails_each_finished_run_once_even_across_a_restart(
    runs_dir: Path, tmp_path: Path
) -> None:
    with SmtpServer() as smtp:
        # Without alerts: this trainer logs NaN, whose alert mail could arrive first.
        mail = _mail_args(smtp.port, "--no-alerts")
        daemon = Daemon(runs_dir, *mail, log=tmp_path / "daemon.log")
        try:
            daemon.wait_for_event("watching")
            completed = start_trainer(runs_dir, "completed", "--steps", "300")
            assert completed.wait(timeout=60) == 0
            wait_for(lambda: len(smtp.received) >= 1, timeout=60)
        finally:
            daemon.stop()
        first = smtp.received
        assert len(first) == 1 and first[0].recipients == [TO]
        check_mail_structure(first[0].message, "completed", "completed")
        assert "NaN/inf in mse_loss, overall_loss" in first[0].message["Subject"]

        # A new daemon: its scan sees the mailed run, and mails only the new one.
        daemon = Daemon(runs_dir, *mail, log=tmp_path / "daemon2.log")
        try:
            daemon.wait_for_event("watching")
            _trained(runs_dir, "second")
            wait_for(lambda: len(smtp.received) >= 2, timeout=60)
            wait_rendered(runs_dir / "completed", "completed")
        finally:
            daemon.stop()
        subjects = [r.message["Subject"] for r in smtp.received]
        assert len(subjects) == 2 and "second completed" in subjects[1], subjects


def test_mail_waits_in_the_outbox_through_an_smtp_outage_and_a_daemon_kill(
    runs_dir: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    args = _mail_args(port, "--email-retry", "0.3s")
    daemon = Daemon(runs_dir, *args, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        run_dir = _trained(runs_dir, "outage")
        daemon.wait_for_event("mail_failed")
        queued = list((runs_dir / OUTBOX_DIR).glob("*.eml"))
        assert len(queued) == 1
    finally:
        daemon.kill_everything()  # SIGKILL: only the outbox remembers the mail
    with SmtpServer(port) as smtp:
        daemon = Daemon(runs_dir, *args, log=tmp_path / "daemon2.log")
        try:
            wait_for(lambda: smtp.received, timeout=60)
            wait_for(lambda: not list((runs_dir / OUTBOX_DIR).glob("*.eml")), timeout=30)
        finally:
            daemon.stop()
        assert len(smtp.received) == 1
        check_mail_structure(smtp.received[0].message, "outage", "completed")
        assert len(sent_keys(run_dir)) == 1


def test_once_mode_mails_completed_failed_and_stalled_runs_once(runs_dir: Path) -> None:
    _trained(runs_dir, "completed")
    with pytest.raises(RuntimeError), lossreport.start_run(runs_dir, model="m", hook="h",
                                                           run_id="failed") as run:  # fmt: skip
        run.log(0, mse_loss=1.0)
        raise RuntimeError("out of memory")
    stalled = start_trainer(runs_dir, "stalled", "--steps", "50", "--then", "wait")
    try:
        assert stalled.stdout is not None and stalled.stdout.readline().startswith("logged")
        heartbeat = runformat.read_run_file(runs_dir / "stalled").heartbeat_at
        wait_for(lambda: age(heartbeat) > 1.0, timeout=10)
        with SmtpServer() as smtp:
            args = [*_mail_args(smtp.port), "--stale-after", "1s"]
            first = run_once(runs_dir, *args)
            assert first.returncode == 0, first.stderr
            subjects = sorted(r.message["Subject"] for r in smtp.received)
            assert [s.split(":")[0] for s in subjects] == [
                "[lossreport] completed completed",
                "[lossreport] failed failed",
                "[lossreport] stalled stalled",
            ]
            second = run_once(runs_dir, *args)
            assert second.returncode == 0, second.stderr
            assert len(smtp.received) == 3
    finally:
        stalled.kill()
        stalled.wait()


def age(timestamp: str) -> float:
    return (datetime.now(UTC) - runformat.parse_time(timestamp)).total_seconds()


def test_once_mode_keeps_unsent_mail_and_says_so(runs_dir: Path) -> None:
    _trained(runs_dir, "a")
    result = run_once(runs_dir, *_mail_args(free_port()))
    assert result.returncode == 1
    assert "stay in the outbox" in result.stderr
    assert len(list((runs_dir / OUTBOX_DIR).glob("*.eml"))) == 1
    with SmtpServer() as smtp:
        assert run_once(runs_dir, *_mail_args(smtp.port)).returncode == 0
        assert len(smtp.received) == 1


def test_email_command_sends_by_hand_with_the_csv_and_a_password_from_the_environment(
    runs_dir: Path,
) -> None:
    run_dir = _trained(runs_dir, "by-hand", l1_loss=0.1)
    with SmtpServer(credentials=("trainer", "s3cret")) as smtp:
        args = ["email", str(run_dir), "--to", TO, "--smtp-host", "127.0.0.1"]
        args += ["--smtp-port", str(smtp.port), "--smtp-user", "trainer", "--email-attach-csv"]
        missing = run_cli(*args)
        assert missing.returncode == 1 and "LOSSREPORT_SMTP_PASSWORD" in missing.stderr
        sent = run_cli(*args, env={"LOSSREPORT_SMTP_PASSWORD": "s3cret"})
        assert sent.returncode == 0, sent.stderr
        assert len(smtp.received) == 1
        message = smtp.received[0].message
    check_mail_structure(message, "by-hand", "completed")
    (attachment,) = list(message.iter_attachments())
    csv = next((run_dir / "loss_graphs").glob("loss_history_*.csv"))
    assert attachment.get_filename() == csv.name
    assert attachment.get_content().encode() == csv.read_bytes()


def test_the_subject_names_anomalies_and_user_strings_cannot_inject_headers(
    runs_dir: Path,
) -> None:
    with lossreport.start_run(
        runs_dir, model="evil\r\nBcc: victim@example.com", hook="<b>h</b>", run_id="odd"
    ) as run:
        for step in range(100):
            run.log(step, mse_loss=math.nan if step == 5 else 1.0, l1_loss=0.01 * (step + 1))
    with SmtpServer() as smtp:
        result = run_cli("email", str(run.path), "--to", TO, "--smtp-port", str(smtp.port))
        assert result.returncode == 0, result.stderr
        (received,) = smtp.received
    message = received.message
    assert received.recipients == [TO]
    assert message["Bcc"] is None
    subject = message["Subject"]
    assert "\n" not in subject and "NaN/inf in mse_loss" in subject
    assert "diverged: l1_loss" in subject
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    tags = _StartTags()
    tags.feed(html)
    assert "b" not in tags.names  # the hook name is text, not markup
    assert "&lt;b&gt;h&lt;/b&gt;" in html


class _StartTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)


def test_settings_come_from_a_config_file_and_a_password_in_it_is_refused(
    runs_dir: Path, tmp_path: Path
) -> None:
    run_dir = _trained(runs_dir, "configured")
    password_file = tmp_path / "smtp-password"
    password_file.write_text("from-a-file\n")
    os.chmod(password_file, 0o600)
    with SmtpServer(credentials=("me", "from-a-file")) as smtp:
        config = tmp_path / "lossreport.toml"
        config.write_text(
            f'[email]\nto = ["{TO}"]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\n'
            f'smtp_user = "me"\nsmtp_password_file = "{password_file}"\n'
        )
        result = run_cli("email", str(run_dir), "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert [r.recipients for r in smtp.received] == [[TO]]
    bad = tmp_path / "bad.toml"
    bad.write_text('[email]\nsmtp_password = "hunter2"\n')
    refused = run_cli("email", str(run_dir), "--config", str(bad))
    assert refused.returncode == 2
    assert str(bad) in refused.stderr and "smtp_password_file" in refused.stderr
    assert "hunter2" not in refused.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text("[watch]\nstale_afterr = 5\n")
    unknown = run_cli("watch", str(runs_dir), "--once", "--config", str(typo))
    assert unknown.returncode == 2 and re.search(r"unknown key 'stale_afterr'", unknown.stderr)


def test_there_is_no_password_flag() -> None:
    result = run_cli("email", ".", "--to", TO, "--smtp-password", "x")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_the_sent_record_lives_in_the_run_directory(runs_dir: Path) -> None:
    run_dir = _trained(runs_dir, "recorded")
    with SmtpServer() as smtp:
        assert run_once(runs_dir, *_mail_args(smtp.port)).returncode == 0
        (received,) = smtp.received
    assert (run_dir / SENT_FILE).is_file()
    assert sent_keys(run_dir) == {received.message["X-Lossreport-Key"]}


def test_a_run_its_trainer_rendered_at_close_is_still_mailed_once(
    runs_dir: Path, tmp_path: Path
) -> None:
    """The trainer's own report (report_on_close=True) records the render, so the daemon has
    nothing to render: it must still send the run's email, and only once."""
    with SmtpServer() as smtp:
        daemon = Daemon(
            runs_dir, *_mail_args(smtp.port, "--no-alerts"), log=tmp_path / "daemon.log"
        )
        try:
            daemon.wait_for_event("watching")
            trainer = start_trainer(runs_dir, "r", "--steps", "50", "--report-on-close", "true")
            output, _ = trainer.communicate(timeout=120)
            assert trainer.returncode == 0 and "Loss Training Summary:" in output
            wait_for(lambda: len(smtp.received) >= 1, timeout=60)
            wait_rendered(runs_dir / "r", "completed")
            # Whichever rendered last (the daemon, for its mail, or the trainer, whose render
            # can take the lock after the daemon's), the mail went out once.
            assert runformat.read_marker(runs_dir / "r") is not None
            daemon.stop()
            daemon = Daemon(
                runs_dir, *_mail_args(smtp.port, "--no-alerts"), log=tmp_path / "daemon2.log"
            )
            daemon.wait_for_event("watching")
        finally:
            daemon.stop()
        (received,) = smtp.received
        assert "r completed" in received.message["Subject"]
        assert daemon.events("render_started") == []  # the restarted daemon: nothing to do
        assert not list((runs_dir / OUTBOX_DIR).iterdir())
