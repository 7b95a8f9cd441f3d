from __future__ import annotations

import colorsys
import math
import re

import numpy as np

from lossreport.report import charts, theme
from lossreport.report.downsample import DEFAULT_BUCKETS
from lossreport.report.history import LossSeries
from lossreport.report.stats import loss_stats
from tests.support.procs import ROOT


def _spec(values: np.ndarray) -> dict:
    series = LossSeries("mse_loss", np.arange(values.size), values)
    return charts.loss_chart(series, loss_stats(series), "mse_loss — m · h")


def test_moving_average_is_a_centred_mean_that_skips_non_finite_values() -> None:
    values = np.array([1.0, 2.0, math.nan, 4.0, 5.0, 6.0, math.inf, 8.0])
    positions = np.arange(values.size)
    got = charts.moving_average(values, 4, positions)
    for index, value in enumerate(got):
        half = min(index, values.size - 1 - index, 2)
        window = values[index - half : index + half + 1]
        assert value == np.mean(window[np.isfinite(window)])


def test_a_million_step_chart_draws_a_bounded_number_of_points_and_keeps_its_spike() -> None:
    values = np.full(1_000_000, 0.25)
    values[777_777] = 50.0
    spec = _spec(values)
    curves = spec["datasets"]["curves"]
    assert len(curves) <= 2 * DEFAULT_BUCKETS + charts.SMOOTH_POINTS
    assert {"step": 777_777, "value": 50.0, "series": "raw"} in curves


def test_nan_and_inf_steps_are_marked_on_the_chart_and_in_the_legend() -> None:
    values = np.linspace(1, 2, 100)
    values[[10, 60]] = [math.nan, math.inf]
    spec = _spec(values)
    assert [row["step"] for row in spec["datasets"]["non_finite"]] == [10, 60]
    assert charts.NON_FINITE_LABEL in spec["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert "2 NaN/inf steps marked in red" in spec["title"]["subtitle"][0]


def hue_name(colour: str) -> str:
    """The everyday name of a saturated `#rrggbb` colour's hue."""
    red, green, blue = (int(colour[index : index + 2], 16) / 255 for index in (1, 3, 5))
    hue, _, saturation = colorsys.rgb_to_hls(red, green, blue)
    assert saturation > 0.5, f"{colour} is too grey to name"
    names = [(15, "red"), (45, "orange"), (70, "yellow"), (170, "green"), (260, "blue")]
    names += [(330, "purple"), (360, "red")]
    return next(name for bound, name in names if hue * 360 < bound)


def test_the_nan_marker_is_the_colour_the_caption_and_the_docs_name() -> None:
    values = np.linspace(1, 2, 100)
    values[10] = math.nan
    spec = _spec(values)
    (marker,) = [layer for layer in spec["layer"] if layer["data"]["name"] == "non_finite"]
    scale = marker["encoding"]["color"]["scale"]
    drawn = scale["range"][scale["domain"].index(charts.NON_FINITE_LABEL)]
    assert drawn == theme.NAN_COLOUR
    said = re.search(r"1 NaN/inf step marked in (\w+)", spec["title"]["subtitle"][0])
    assert said is not None and said[1] == theme.NAN_COLOUR_NAME == hue_name(drawn)
    files_table = (ROOT / "docs" / "reports.md").read_text()
    assert f"NaN/inf steps in {theme.NAN_COLOUR_NAME} |" in files_table


def test_a_loss_spanning_orders_of_magnitude_gets_a_log_axis() -> None:
    steep = _spec(np.geomspace(30, 0.01, 500))
    flat = _spec(np.linspace(0.3, 0.2, 500))
    assert steep["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    assert "type" not in flat["layer"][0]["encoding"]["y"]["scale"]


def test_the_moving_average_window_is_labelled() -> None:
    spec = _spec(np.linspace(1, 0, 2000))
    assert "moving average (window 100)" in spec["layer"][0]["encoding"]["color"]["scale"]["domain"]


def test_the_combined_chart_has_a_linear_and_a_log_panel_with_a_legend() -> None:
    all_series = [
        LossSeries(name, np.arange(50), np.linspace(1, 0.1, 50) * (i + 1))
        for i, name in enumerate(["mse_loss", "l1_loss"])
    ]
    spec = charts.combined_chart(all_series, "All losses")
    linear, log = spec["vconcat"]
    assert "type" not in linear["encoding"]["y"]["scale"]
    assert log["encoding"]["y"]["scale"]["type"] == "log"
    assert linear["encoding"]["color"]["scale"]["domain"] == ["mse_loss", "l1_loss"]


def test_a_run_without_a_hook_is_titled_by_its_model_alone() -> None:
    """Other tools record no hook: no dangling separator where it would go."""
    assert charts.title_lines("train/loss", "gelu-1l", "") == ["train/loss — gelu-1l"]
    assert charts.title_lines("mse_loss", "gelu-1l", "blocks.0.hook_mlp_out") == [
        "mse_loss — gelu-1l · blocks.0.hook_mlp_out"
    ]
    long_model = "m" * 60
    assert charts.title_lines("loss", long_model, "") == ["loss", charts.shortened(long_model, 56)]
