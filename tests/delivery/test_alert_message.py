"""What an alert says, built as the daemon builds it: numbers a person reads at a glance, Slack's
control sequences from user strings escaped, lossreport's own link kept, and no filesystem path
in a webhook post."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lossreport import runformat
from lossreport.alerts import NON_FINITE, Alert, words
from lossreport.delivery import alerting

RUNS = Path("/scratch/alice/runs")
KEY = "sweep-3/pythia-70m_blocks.3.hook_resid_post_20260301-091500_a1b2c3"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (0.2134, "0.213"),
        (214.3, "214"),
        (1017.2, "1,020"),
        (1_234_567.0, "1,230,000"),
        (4.5e-6, "4.5e-06"),
        (0.0012345, "0.00123"),
        (1.0, "1"),
        (-3.14159, "-3.14"),
        (2e20, "2e+20"),
        (math.nan, "NaN"),
        (-math.inf, "-inf"),
    ],
)
def test_numbers_have_three_significant_digits_and_thousands_separators(
    value: float, written: str
) -> None:
    assert words.number(value) == written


def _raised(model: str, hook: str, report_url: str | None) -> alerting.RaisedAlert:
    record = runformat.RunRecord("a1b2c3", model, hook, started_at="2026-03-01T09:15:00+00:00")
    alert = Alert(NON_FINITE, "mse_loss", 11_500, math.nan, "mse_loss is NaN at step 11,500.")
    return alerting.raised(RUNS / KEY, KEY, record, alert, report_url)


def test_user_strings_cannot_ping_a_channel_or_plant_a_link() -> None:
    raised = _raised("<!channel> & <!here>", "<https://evil.example|Open the report>", None)
    text = raised.text()
    assert text == (
        f"lossreport alert for run {KEY} (&lt;!channel&gt; &amp; &lt;!here&gt; · "
        "&lt;https://evil.example|Open the report&gt;): mse_loss is NaN at step 11,500."
    )


def test_the_report_is_linked_through_the_served_url() -> None:
    raised = _raised("gpt2", "blocks.0.hook_mlp_out", "https://reports.example.com/lr/")
    url = (
        "https://reports.example.com/lr/sweep-3/pythia-70m_blocks.3.hook_resid_post_20260301"
        "-091500_a1b2c3/loss_graphs/loss_report_gpt2_blocks.0.hook_mlp_out_20260301_091500.html"
    )
    assert raised.text().endswith(f"mse_loss is NaN at step 11,500. <{url}|Open the report>")
    assert raised.payload()["report"] == url


def test_a_post_without_a_served_url_names_the_run_and_holds_no_path() -> None:
    payload = _raised("gpt2", "blocks.0.hook_mlp_out", None).payload()
    assert payload["run"] == KEY and payload["report"] is None
    assert str(RUNS) not in json.dumps(payload)
