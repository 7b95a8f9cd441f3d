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


def test_a_config_is_flattened_and_bounded_the_same_whether_flat_already_or_not() -> None:
    """A marker's config is flat and bounded already, and a first start takes it as it is
    (no walk): what is not so, just past each bound, still comes back bounded."""
    most_keys, name, value = pages.MAX_CONFIG_KEYS, pages.MAX_CONFIG_NAME, pages.MAX_CONFIG_VALUE
    flat = {"lr": "3e-05", "Ωmega.β": "1", "n" * name: "v" * value}
    assert pages.flat_config(flat) == flat and pages.flat_config(flat) is not flat
    assert pages.flat_config({"n" * (name + 1): "v"}) == {"n" * name: "v"}
    assert pages.flat_config({"lr": "v" * (value + 1)}) == {"lr": "v" * value}
    assert pages.flat_config({"": "dropped", "kept": "1"}) == {"kept": "1"}
    assert len(pages.flat_config({str(i): "v" for i in range(most_keys + 1)})) == most_keys
    nested = {"lr": 3e-05, "optimizer": {"beta1": 0.9, "name": "adam"}, "tags": ["a"]}
    expected = {"lr": "3e-05", "optimizer.beta1": "0.9", "optimizer.name": "adam"}
    assert pages.flat_config(nested) == {**expected, "tags": '["a"]'}
