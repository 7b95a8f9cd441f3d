"""Each delivery has a total deadline, and one slow destination delays no other: a webhook that
answers a byte a second (which no per-operation timeout catches) neither holds the daemon's
mail nor outlives its deadline. Real servers on loopback: aiosmtpd, a trickling socket server."""

from __future__ import annotations

import os
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

import lossreport
from lossreport.delivery.message import HEADER_KEY, HEADER_RUN
from lossreport.delivery.outbox import Outbox
from lossreport.delivery.smtp import SmtpSettings, send
from lossreport.delivery.webhook import WebhookSettings, post
from lossreport.errors import MailError, WebhookError
from lossreport.runformat import Homes
from tests.support.daemon import Daemon
from tests.support.procs import wait_for
from tests.support.smtp import SmtpServer
from tests.support.trickle import TricklingServer

DEADLINE = 2.0
SLACK = 1.5  # the trickler notices a closed connection within a byte's interval


def test_a_webhook_answering_a_byte_a_second_fails_at_its_deadline() -> None:
    with TricklingServer() as trickler:
        started = time.monotonic()
        with pytest.raises(WebhookError) as caught:
            post(WebhookSettings(trickler.url, deadline=DEADLINE), {"text": "hi"})
        took = time.monotonic() - started
        wait_for(lambda: trickler.connections and trickler.connections[0].closed, timeout=10)
        (connection,) = trickler.connections
    assert f"within the {DEADLINE:g}s deadline" in str(caught.value)
    assert "trickle" not in str(caught.value)  # the URL's path may be a secret
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK
    assert connection.closed is not None and connection.closed - connection.opened < 4
    assert 0 < connection.sent < len(trickler.answer)  # it was still trickling


def test_an_smtp_server_greeting_a_byte_a_second_fails_at_its_deadline() -> None:
    with TricklingServer(answer=b"220 " + b"s" * 600 + b"\r\n") as trickler:
        message = EmailMessage()
        message["To"], message["From"], message["Subject"] = "a@example.com", "b@example.com", "s"
        started = time.monotonic()
        with pytest.raises(MailError) as caught:
            send(SmtpSettings("127.0.0.1", trickler.port, deadline=DEADLINE), message)
        took = time.monotonic() - started
    assert f"within the {DEADLINE:g}s deadline" in str(caught.value)
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK


def _queued_mail(outbox: Outbox, run_name: str) -> None:
    message = EmailMessage()
    message["To"], message["From"] = "ml-team@example.com", "lossreport@example.com"
    message["Subject"] = f"[lossreport] {run_name} completed"
    message[HEADER_RUN], message[HEADER_KEY] = run_name, f"run|{run_name}|completed"
    message.set_content(f"{run_name} completed.\n")
    outbox.add(message)


def test_a_trickling_webhook_holds_neither_the_mail_nor_the_sender_past_its_deadline(
    runs_dir: Path, tmp_path: Path
) -> None:
    """An alert post to a trickling webhook is queued before three completion mails: the mails
    go out while the webhook is still trickling, and the post gives up at its deadline, logged
    with its run and destination, to be retried."""
    runs = []
    for name in ("alerting", "done-1", "done-2", "done-3"):
        with lossreport.start_run(runs_dir, model="gpt2", hook="blocks.8.hook_resid_pre",
                                  run_id=f"{name}_2025-06-01_ÿ") as run:  # fmt: skip
            run.log(0, mse_loss=1.0)
        runs.append(Path(run.path).name)
    outbox = Outbox(Homes(runs_dir))
    post_path = outbox.add_post(
        f"alert|{runs[0]}|non_finite|post",
        runs[0],
        {"text": "NaN", "rule": "non_finite", "loss": "mse_loss", "step": 7},
    )
    os.utime(post_path, (time.time() - 60, time.time() - 60))  # the oldest: sent first
    for name in runs[1:]:
        _queued_mail(outbox, name)
    deadline = 6.0  # long enough for the daemon to start and mail, short for the test
    with SmtpServer() as smtp, TricklingServer() as trickler:
        daemon = Daemon(
            runs_dir, "--no-alerts", "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp.port),
            "--alert-webhook", trickler.url, "--alert-webhook-deadline", f"{deadline:g}s",
            "--email-deadline", "20s", log=tmp_path / "daemon.log",
        )  # fmt: skip
        try:
            wait_for(lambda: trickler.connections, timeout=60)
            opened = trickler.connections[0].opened
            wait_for(lambda: len(smtp.received) == 3 or trickler.connections[0].closed, 30)
            mailed_at = time.monotonic()
            (connection,) = trickler.connections
            assert len(smtp.received) == 3, daemon.log.read_text()
            assert connection.closed is None  # mailed while the webhook still trickled
            assert mailed_at - opened < deadline
            wait_for(lambda: trickler.connections[0].closed, timeout=deadline + 10)
            daemon.wait_for_event("mail_failed")
        finally:
            daemon.kill_everything()  # a clean stop is tested elsewhere; this one is quick
        (connection,) = trickler.connections
    assert connection.closed is not None
    assert connection.closed - connection.opened < deadline + SLACK
    assert 0 < connection.sent < len(trickler.answer)
    subjects = sorted(str(received.message["Subject"]) for received in smtp.received)
    assert subjects == [f"[lossreport] {name} completed" for name in runs[1:]]
    (failure,) = daemon.events("mail_failed")
    assert failure["run"] == runs[0]
    assert failure["destination"] == f"webhook http://127.0.0.1:{trickler.port}"
    assert f"{deadline:g}s deadline" in failure["message"] and "trickle" not in failure["message"]
    assert list((runs_dir / ".lossreport" / "outbox").glob("*.post.json"))  # kept for a retry
