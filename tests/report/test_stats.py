from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lossreport import runformat
from lossreport.delivery.message import build_message
from lossreport.report.history import LossSeries, from_user
from lossreport.report.pages import MISSING, render_html
from lossreport.report.render import RenderResult, render_run
from lossreport.report.stats import anomalies, console_summary, loss_stats, summary_stats
from tests.support.procs import run_cli


def _series(values: list[float]) -> LossSeries:
    return LossSeries("mse_loss", np.arange(len(values)), np.array(values, dtype=float))


def test_statistics_of_a_plain_series() -> None:
    stats = loss_stats(_series([4.0, 2.0, 3.0, 1.0]))
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(np.std([4.0, 2.0, 3.0, 1.0]))
    assert (stats["min"], stats["max"], stats["initial"], stats["final"]) == (1.0, 4.0, 4.0, 1.0)
    assert stats["change"] == -3.0
    assert stats["percent_change"] == -75.0
    assert (stats["min_step"], stats["max_step"], stats["final_step"]) == (3, 0, 3)
    assert (stats["nan_count"], stats["inf_count"]) == (0, 0)


def test_non_finite_values_are_counted_not_averaged() -> None:
    stats = loss_stats(_series([1.0, math.nan, math.inf, 3.0, -math.inf]))
    assert stats["mean"] == 2.0
    assert stats["final"] == 3.0
    assert (stats["nan_count"], stats["inf_count"], stats["count"]) == (1, 2, 5)


def test_percent_change_is_zero_when_the_first_value_is_zero() -> None:
    assert loss_stats(_series([0.0, 2.0]))["percent_change"] == 0.0


def test_a_series_without_finite_values_has_null_statistics() -> None:
    stats = loss_stats(_series([math.nan, math.inf]))
    assert stats["mean"] is None and stats["final"] is None
    assert stats["nan_count"] == 1 and stats["inf_count"] == 1


def test_statistics_of_values_near_the_float_maximum_are_finite_and_right() -> None:
    values = [1e308, 1.5e308, -1e308, sys.float_info.max]
    stats = loss_stats(_series(values))
    assert stats["max"] == sys.float_info.max
    assert stats["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)  # exact fractions
    assert stats["std"] == pytest.approx(statistics.pstdev(values), rel=1e-12)
    same = loss_stats(_series([sys.float_info.max] * 5))  # unclamped: 1 ulp below
    assert same["mean"] == sys.float_info.max and same["std"] == 0.0


def test_statistics_of_tiny_values_do_not_underflow_to_zero() -> None:
    stats = loss_stats(_series([1e-200, 3e-200]))
    assert stats["mean"] == pytest.approx(2e-200, rel=1e-12, abs=0)
    assert stats["std"] == pytest.approx(
        1e-200, rel=1e-12, abs=0
    )  # squares of 1e-200 are 0 in float64


def test_ordinary_statistics_are_numpys_to_the_bit() -> None:
    values = np.random.default_rng(12).normal(3.0, 2.0, 10_001)
    stats = loss_stats(_series(values.tolist()))
    assert stats["mean"] == float(values.mean()) and stats["std"] == float(values.std())


def test_a_change_beyond_float64_is_null_and_its_percentage_is_still_given() -> None:
    stats = loss_stats(_series([1e308, -1e308]))
    assert stats["change"] is None  # -2e308 does not exist in float64
    assert stats["percent_change"] == -200.0
    assert loss_stats(_series([1e-300, 1e308]))["percent_change"] is None  # 1e610 %


def test_the_console_summary_shows_missing_or_non_finite_statistics_as_n_a() -> None:
    loss = loss_stats(_series([1.0, 1e308]))
    stats = {"model_name": "m", "hook_name": "h", "total_steps": 2, "losses": {"big": loss}}
    for name, value in [("mean", None), ("change", math.inf), ("percent_change", math.nan)]:
        loss[name] = value  # as in a summary another version (or a hand edit) left
    text = console_summary(stats)
    assert "    Final: 1.000000e+308" in text  # not 309 digits
    assert "    Mean: n/a" in text and "    Change: n/a (n/a)" in text


def test_a_divergence_beyond_float64_is_described_without_inf() -> None:
    history = from_user({"steps": [0, 1], "big": [1e-300, 1e308]})
    (note,) = anomalies(summary_stats(history, "m", "h"))
    assert note == "big: diverged, final 1e+308 is more than 1.8e+308x the initial 1e-300"


def test_summary_and_console_output_follow_the_feature_document() -> None:
    history = from_user(
        {
            "steps": [0, 1, 2],
            "mse_loss": [0.3, 0.2, 0.123456],
            "l1_loss": [0.03, math.nan, 0.045678],
        }
    )
    stats = summary_stats(history, "tiny-stories-1L-21M", "blocks.0.hook_mlp_out")
    assert stats["model_name"] == "tiny-stories-1L-21M"
    assert stats["total_steps"] == 3
    assert stats["losses"]["mse_loss"]["final"] == 0.123456
    text = console_summary(stats)
    assert text.splitlines()[:7] == [
        "Loss Training Summary:",
        "  Model: tiny-stories-1L-21M",
        "  Hook: blocks.0.hook_mlp_out",
        "  Total Steps: 3",
        "  mse_loss:",
        "    Final: 0.123456",
        "    Mean: 0.207819",
    ]
    assert "    Change: -0.176544 (-58.85%)" in text
    assert "    Non-finite: 1 NaN, 0 inf" in text
    assert anomalies(stats) == ["l1_loss: 1 NaN, 0 inf"]


def _run(runs_dir: Path, run_id: str, **losses: list[float]) -> Path:
    """A finished run directory as any writer of the format leaves it."""
    run_dir = runs_dir / run_id
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    runformat.write_run_file(
        run_dir, runformat.RunRecord(run_id, "m", "h", status=runformat.COMPLETED)
    )
    steps = len(next(iter(losses.values())))
    columns = {
        "step": pa.array(range(steps), pa.int64()),
        **{k: pa.array(v) for k, v in losses.items()},
    }
    runformat.write_shard(run_dir, 1, pa.table(columns))
    return run_dir


def _mail(result: RenderResult) -> tuple[str, str]:
    """The plain-text and HTML parts of the run's message."""
    message = build_message(
        result, recipients=["a@example.com"], sender="lossreport@example.com", run_name="run"
    )
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def test_a_run_logging_values_near_the_float_maximum_renders_prints_and_mails(
    runs_dir: Path,
) -> None:
    huge = [1.7e308 - step * 1e306 for step in range(50)]
    run_dir = _run(runs_dir, "huge", mse_loss=huge, l1_loss=[0.1] * 50)
    result = render_run(run_dir)
    mse = json.loads(result.summary.read_text())["losses"]["mse_loss"]
    assert mse["mean"] == pytest.approx(statistics.mean(huge)) and math.isfinite(mse["std"])
    assert "    Mean: 1.455000e+308" in console_summary(result.stats)
    plain, html = _mail(result)
    assert "    Mean: 1.455000e+308" in plain
    assert ">1.455e+308<" in html
    printed = run_cli("render", str(run_dir))  # the command prints the summary
    assert printed.returncode == 0, printed.stderr
    assert "    Mean: 1.455000e+308" in printed.stdout


def test_mail_and_report_show_a_null_or_non_finite_statistic_as_missing(runs_dir: Path) -> None:
    result = render_run(_run(runs_dir, "odd", mse_loss=[1.0 / (step + 1) for step in range(10)]))
    mse = result.stats["losses"]["mse_loss"]
    mse.update(mean=None, std=math.inf, change=math.nan, percent_change=None)
    plain, html = _mail(result)
    assert "    Mean: n/a" in plain and "    Change: n/a (n/a)" in plain
    assert f">{MISSING}<" in html and "None" not in html
    page = render_html(
        run=result.run,
        stats=result.stats,
        charts=[],
        combined_chart="",
        files={},
        problems=[],
        anomalies=[],
    )
    assert f">{MISSING}<" in page and "None" not in page
