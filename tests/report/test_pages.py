"""The pages' shared pieces: one status badge rule for the report, the index and the mail."""

from __future__ import annotations

from lossreport.report import pages
from tests.support.procs import ROOT


def test_each_status_has_one_badge_colour_shared_by_every_page() -> None:
    partial = (ROOT / "report_templates" / "_status.css.j2").read_text()
    for status in [*pages.STATUS_CLASSES, "unknown"]:
        assert partial.count(f"span.status-{status} ") == 1
    for template in ("report.html.j2", "index.html.j2", "email.html.j2"):
        page = (ROOT / "report_templates" / template).read_text()
        assert '{% include "_status.css.j2" %}' in page and ".status-completed" not in page


def test_statuses_without_a_colour_show_as_unknown() -> None:
    assert [pages.status_class(s) for s in ("completed", "stalled", "not rendered", "")] == [
        "completed",
        "stalled",
        "unknown",
        "unknown",
    ]
    row = pages.index_row({"status": "<b>odd</b>", "rendered_at": "now"}, "r")
    assert row["status_class"] == "unknown"
