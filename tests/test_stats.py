from __future__ import annotations

import math

import numpy as np
import pytest

from lossreport.history import LossSeries, from_user
from lossreport.stats import anomalies, console_summary, loss_stats, summary_stats


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


def test_overflowing_statistics_become_null_not_inf() -> None:
    stats = loss_stats(_series([1e308, 1e308, -1e308]))
    assert stats["max"] == 1e308
    assert stats["std"] is None or math.isfinite(stats["std"])


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
