"""A run's summary as an email that mail clients actually show.

Gmail and Outlook ignore `<style>` blocks and `data:` images, and Gmail clips HTML past ~102 KB.
So the HTML part has its CSS inlined (css-inline, no remote fetches), the combined chart is a
`multipart/related` part referenced by `cid:`, drawn at mail size (not the 300 DPI file), and a
plain-text alternative carries the same summary.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import socket
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import css_inline

from .. import storage
from ..errors import FileTooLargeError
from ..report import pages, stats, vega
from ..report.render import RenderResult
from ..report.shown import MAX_FULL_CHARS, listed, shortened

CHART_PPI = 96  # about 1000 px wide, shown at 672 px: sharp on high-density screens, ~250 KB
CHART_CID = "combined-chart"
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # a common mail server limit is 10 to 25 MB
# gzip shrinks a loss CSV 3-5x: a larger one could not fit even gzipped, so it is not read
MAX_CSV_TO_PACK_BYTES = 100 * 1024 * 1024
SUBJECT_NAMES = 3  # losses a subject names (with NaN/inf, diverged); "and N more" after
HEADER_RUN = "X-Lossreport-Run"
HEADER_KEY = "X-Lossreport-Key"
# Lines up to RFC 5322's 998 characters: the email package's folding of long headers that hold
# non-ASCII text corrupts them ("mse_los s"), and our subjects are long and may hold any name.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)
# Control characters and every other line break str.splitlines knows (NEL, U+2028, ...): the
# email package refuses a header holding one, and a bare CR or LF would add a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


def message_key(run: dict[str, Any]) -> str:
    """Identifies one finished state of a run: a run is mailed once per key. A resumed run
    that finishes again (a new finished_at) is a new key."""
    when = run.get("finished_at") or run.get("heartbeat_at") or run.get("started_at")
    return f"{run.get('run_id')}|{run.get('status')}|{when}"


def subject(result: RenderResult) -> str:
    """Run, status and what went wrong, so the inbox list alone tells which runs need a look.
    Each name is shortened and at most SUBJECT_NAMES losses named (report/shown.py)."""
    run = result.run
    run_id, status, model, hook = (
        shortened(str(run[key])) for key in ("run_id", "status", "model", "hook")
    )
    text = f"[lossreport] {run_id} {status}: {model}" + (f" · {hook}" if hook else "")
    losses = result.stats["losses"]
    non_finite = [name for name, loss in losses.items() if loss["nan_count"] or loss["inf_count"]]
    diverged = [name for name, loss in losses.items() if stats.diverged(loss)]
    if non_finite:
        text += f" · NaN/inf in {listed(non_finite, SUBJECT_NAMES)}"
    if diverged:
        text += f" · diverged: {listed(diverged, SUBJECT_NAMES)}"
    if result.problems:
        text += f" · {len(result.problems)} inputs skipped"
    return header_text(text)


def build_message(
    result: RenderResult,
    *,
    recipients: list[str],
    sender: str,
    run_name: str,
    attach_csv: bool = False,
    report_url: str | None = None,
) -> EmailMessage:
    """The message for `result` (a fresh render); `run_name` is the run's folder name."""
    run = result.run
    key = message_key(run)
    link = report_link(report_url, run_name, result.report.name) if report_url else None
    attachment, attachment_note = _history_attachment(result) if attach_csv else (None, None)
    chart = _chart_png(result.combined_svg)
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = subject(result)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = _message_id(key)  # the same on a resend, so clients can dedupe
    message[HEADER_RUN] = header_text(run_name)
    message[HEADER_KEY] = header_text(key)
    message.set_content(_plain_text(result, link, attachment_note))
    html = pages.render_email_html(
        subject=message["Subject"],
        run=run,
        stats=result.stats,
        anomalies=result.anomalies,
        problems=result.problems,
        chart_cid=CHART_CID if chart else None,
        report_path=str(result.report.absolute()),
        report_link=link,
        attachment_note=attachment_note,
    )
    message.add_alternative(_INLINER.inline(html), subtype="html")
    if chart is not None:
        html_part = message.get_body(preferencelist=("html",))
        assert html_part is not None
        html_part.add_related(chart, "image", "png", cid=f"<{CHART_CID}>", filename="losses.png")
    if attachment is not None:
        data, filename, maintype, subtype = attachment
        message.add_attachment(data, maintype, subtype, filename=filename)
    return message


def report_link(base: str, run_name: str, report_name: str) -> str:
    """Where `lossreport serve` (behind `base`) shows the report; names URL-quoted."""
    return f"{base.rstrip('/')}/{quote(run_name)}/loss_graphs/{quote(report_name)}"


def _chart_png(svg: str | None) -> bytes | None:
    if svg is None:
        return None
    return vega.to_png(svg, ppi=CHART_PPI)


def _history_attachment(
    result: RenderResult,
) -> tuple[tuple[bytes, str, str, str] | None, str]:
    """The CSV as it is, gzipped when large, or nothing (and a note why) when still too large."""
    try:
        data = storage.read_bytes(result.csv, MAX_CSV_TO_PACK_BYTES)
    except FileTooLargeError:
        return None, "not attached: too large to mail even gzipped; it is beside the report"
    except OSError as exc:  # loss_graphs/ changed under us (a link now): attach nothing
        return None, f"not attached: {exc}"
    if len(data) <= MAX_ATTACHMENT_BYTES:
        return (data, result.csv.name, "text", "csv"), f"attached: {result.csv.name}"
    packed = gzip.compress(data, compresslevel=6)
    if len(packed) <= MAX_ATTACHMENT_BYTES:
        name = result.csv.name + ".gz"
        return (packed, name, "application", "gzip"), f"attached, gzipped: {name}"
    size = len(packed) / 1024 / 1024
    return None, f"not attached: {size:.0f} MB even gzipped; it is beside the report"


NAMES = ("model", "hook", "run_id")  # shortened like a page's cells: the data files keep them


def _plain_text(result: RenderResult, link: str | None, attachment_note: str | None) -> str:
    run = result.run
    model, hook, run_id = (shortened(str(run[key] or ""), MAX_FULL_CHARS) for key in NAMES)
    lines = [
        model + (f" · {hook}" if hook else "") + f": {run['status']}",
        f"run {run_id}"
        + (f" · {run['architecture']} SAE" if run.get("architecture") else "")
        + (f" · {run['duration']}" if run.get("duration") else ""),
        "",
    ]
    if run.get("error"):
        label = "The run failed" if run["status"] == "failed" else "Note from the trainer"
        lines += [f"{label}: {run['error']}", ""]
    if result.anomalies:
        lines += ["Anomalies:", *(f"  - {note}" for note in result.anomalies), ""]
    lines += [stats.console_summary(result.stats), ""]
    if result.problems:
        lines += ["Skipped inputs:", *(f"  - {problem}" for problem in result.problems), ""]
    if link:
        lines.append(f"Report: {link}")
    lines.append(f"Report file: {result.report.absolute()}")
    if attachment_note:
        lines.append(f"Loss history: {attachment_note}")
    return "\n".join(lines) + "\n"


def _message_id(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<lossreport.{digest}@{socket.gethostname() or 'localhost'}>"


def header_text(text: str) -> str:
    """Header values from user strings: control characters (a newline would inject a header)
    become spaces."""
    return _CONTROL.sub(" ", text).strip()
