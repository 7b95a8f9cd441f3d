"""An alert raised while a run trains, on its way out: an email and a webhook post queued in the
outbox (sent, retried and recorded as sent like a run's summary mail), each once per run and
rule. The log line is the daemon's.

Everything here is plain text and JSON: an alert must reach a phone's lock screen and a chat
channel, and be cheap to build in the daemon's own process. A webhook's `text` follows Slack's
message formatting (which Mattermost and Teams read too): `&`, `<` and `>` in the run's names and
the alert's words are escaped, so a run named `<!channel>` pings no one, and the one link is
lossreport's own. A post never carries a filesystem path: without `--email-report-url` the run
is named by its key only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from .. import runformat
from ..alerts import words
from ..alerts.check import Alert
from ..report.outputs import OutputNames
from ..report.shown import MAX_FULL_CHARS, shortened
from .mailjob import MailJob
from .message import HEADER_KEY, HEADER_RUN, MAIL_POLICY, header_text, report_link
from .outbox import POST_SUFFIX, Outbox


@dataclass(frozen=True)
class AlertTarget:
    """Where a run's alerts go besides the log: the run summary's recipients, a webhook."""

    mail: MailJob | None = None
    webhook: bool = False
    report_url: str | None = None  # where `lossreport serve` shows the runs, for links


@dataclass(frozen=True)
class RaisedAlert:
    """An alert with the run it is about, as delivered and recorded."""

    run_name: str  # the run's key: its folder under the runs directory
    run: runformat.RunRecord
    alert: Alert
    url: str | None  # the run's report through `lossreport serve`, when its URL is known
    path: str  # the report's file, for the mail when there is no URL

    @property
    def key(self) -> str:
        """Once per run and rule, across daemon restarts."""
        return f"alert|{self.run.run_id}|{self.alert.rule}"

    def text(self) -> str:
        """One paragraph in Slack's formatting: the run, what happened, a link to look."""
        names = shortened(self.run.model) + (
            f" · {shortened(self.run.hook)}" if self.run.hook else ""
        )
        said = f"lossreport alert for run {shortened(self.run_name)} ({names}): {self.alert.detail}"
        link = f" <{_link_target(self.url)}|Open the report>" if self.url else ""
        return slack_escape(said) + link

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON: `text` for chat tools, the rest (unescaped) for anything else."""
        return {
            "text": self.text(),
            "run": self.run_name,
            "run_id": self.run.run_id,
            "model": self.run.model,
            "hook": self.run.hook,
            "report": self.url,
            **self.alert.to_json(),
        }


def slack_escape(text: str) -> str:
    """`&`, `<` and `>` as Slack's message formatting asks: nothing in `text` is markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_target(url: str) -> str:
    """A URL that cannot end the `<url|text>` around it (report_link quotes the run's names;
    the base is the operator's)."""
    return url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")


def raised(
    home: Path, run_name: str, run: runformat.RunRecord, alert: Alert, report_url: str | None
) -> RaisedAlert:
    """`alert` about run `run_name` whose report goes into `home`, linked to that report
    (which the daemon renders live once it raises an alert, under the name the record gives
    it)."""
    names = OutputNames.for_run(run.model, run.hook, runformat.parse_time(run.started_at))
    url = report_link(report_url, run_name, names.report_html) if report_url else None
    path = str(home / runformat.GRAPHS_DIR / names.report_html)
    return RaisedAlert(run_name, run, alert, url, path)


def queue(outbox: Outbox, raised_alert: RaisedAlert, target: AlertTarget) -> None:
    """Queue the alert's email and webhook post, each unless sent or queued already.
    Raises OSError when the outbox cannot be written."""
    key, run_name = raised_alert.key, raised_alert.run_name
    if target.mail is not None and outbox.wants(run_name, key + "|mail"):
        outbox.add(_email(raised_alert, target.mail))
    if target.webhook and outbox.wants(run_name, key + "|post", POST_SUFFIX):
        outbox.add_post(key + "|post", run_name, raised_alert.payload())


def _email(raised_alert: RaisedAlert, mail: MailJob) -> EmailMessage:
    alert = raised_alert.alert
    where = f" in {shortened(alert.loss)}" if alert.loss else ""
    at = f" at step {words.count(alert.step)}" if alert.step is not None else ""
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = header_text(
        f"[lossreport] ALERT {shortened(raised_alert.run_name)}: {alert.rule}{where}{at}"
    )
    message["From"] = mail.sender
    message["To"] = ", ".join(mail.recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("lossreport.alert", socket.gethostname() or "localhost")
    message[HEADER_RUN] = header_text(raised_alert.run_name)
    message[HEADER_KEY] = header_text(raised_alert.key + "|mail")
    value = "" if alert.value is None else f"Value: {words.number(alert.value)}\n"
    message.set_content(
        f"{alert.detail}\n\n"
        f"Run: {raised_alert.run_name} (run id {raised_alert.run.run_id})\n"
        f"Model: {shortened(raised_alert.run.model, MAX_FULL_CHARS)}\n"
        f"Hook: {shortened(raised_alert.run.hook or '', MAX_FULL_CHARS)}\n"
        f"Rule: {alert.rule}\n"
        + (f"Loss: {alert.loss}\n" if alert.loss else "")
        + (f"Step: {words.count(alert.step)}\n" if alert.step is not None else "")
        + value
        + f"\nReport (rendered live): {raised_alert.url or raised_alert.path}\n\n"
        "lossreport sends each alert once per run and rule; the run keeps training.\n"
    )
    return message
