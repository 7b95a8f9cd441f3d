"""Vega-Lite specs (built with Altair) for the per-loss and combined charts.

Charts draw a downsampled copy of each series (downsample.py), so a chart of a million steps
costs what a chart of ten thousand does; NaN/inf steps are drawn as marks of their own.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import altair as alt
import numpy as np

from . import theme
from .downsample import minmax, thin_steps
from .history import FloatArray, IntArray, LossSeries
from .shown import distinct_shortened, shortened

WIDTH = 560
HEIGHT = 240
COMBINED_BUCKETS = 500
NON_FINITE_LABEL = "NaN / inf step"
RAW_LABEL = "raw"
# Chart shapes (a loss name, axis kind and set of layers) kept built per process, a few KB each.
CHART_SHAPES = 256
SMOOTH_POINTS = 600  # the moving average is smooth: this many points draw it exactly enough
LOG_RANGE_RATIO = 100.0
# Names are shortened further than shown.py's budget to fit where a chart draws them: a title
# line as wide as the chart, the y axis's title, a line of the legend (theme's labelLimit).
TITLE_LINE_CHARS, AXIS_TITLE_CHARS, LEGEND_LABEL_CHARS = 56, 34, 48
_UNDRAWABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# 0, 500, 20k, 1.5M: short step labels that never read "0M".
STEP_AXIS = alt.Axis(
    labelExpr=(
        "datum.value >= 1e6 ? format(datum.value / 1e6, '~g') + 'M' : "
        "datum.value >= 1e4 ? format(datum.value / 1e3, '~g') + 'k' : format(datum.value, '~g')"
    )
)  # a loss spanning more than this many times is drawn on a log axis


def chart_text(text: str) -> str:
    """User text as the chart engine can draw it. A control character (a newline in a model
    name, a stray byte in a column name) makes vl-convert abort the whole process, so each one
    becomes U+FFFD. Names in it are shortened already (shown.py); titles are still held to the
    chart's width, so no text can widen a chart."""
    return _UNDRAWABLE.sub("\ufffd", text)


def title_lines(what: str, model: str, hook: str) -> list[str]:
    """A chart's title, `what — model · hook`, on one line where it fits the chart's width and
    otherwise on two or three, each part shortened to fit a line: no part is cut off by
    another, and no line by the chart engine (names of narrow letters, the most). A run
    without a hook (other tools record none) is named by its model alone."""
    names = [name for name in (model, hook) if name]
    run = " · ".join(names)
    one = f"{what} — {run}" if run else what
    if len(one) <= TITLE_LINE_CHARS:
        return [one]
    if len(run) <= TITLE_LINE_CHARS:
        return [shortened(what, TITLE_LINE_CHARS), run]
    return [shortened(text, TITLE_LINE_CHARS) for text in (what, *names)]


def _title(title: str | list[str], subtitle: str) -> alt.TitleParams:
    """Held to the chart's width: Vega ends a line of wide letters with an ellipsis."""
    lines = [title] if isinstance(title, str) else title
    return alt.TitleParams([chart_text(line) for line in lines], subtitle=[subtitle], limit=WIDTH)


def moving_average(values: FloatArray, window: int, at: IntArray) -> FloatArray:
    """Centred mean over `window` positions around each index in `at`, skipping NaN/inf.

    Centred rather than trailing so the smooth line does not lag the curve it summarises;
    near either end the window shrinks symmetrically, so the line starts and ends on the data.
    Evaluated only where it is drawn: one cumulative sum, then two lookups a point.
    """
    finite = np.isfinite(values)
    # Values near the float limit overflow the running sum: those points come out NaN and are
    # not drawn, which is all a chart can do with them.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if finite.all():
            sums = np.concatenate([[0.0], np.cumsum(values)])
            counts = np.arange(values.size + 1)
        else:
            sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
            counts = np.concatenate([[0], np.cumsum(finite)])
        half = np.minimum(np.minimum(at, values.size - 1 - at), window // 2)
        starts, ends = at - half, at + half + 1
        totals, numbers = sums[ends] - sums[starts], counts[ends] - counts[starts]
        return np.where(numbers > 0, totals / np.maximum(numbers, 1), np.nan)


def smoothing_window(total_steps: int) -> int:
    return max(1, total_steps // 20)


def loss_chart(series: LossSeries, stats: dict[str, Any], title: str | list[str]) -> dict[str, Any]:
    """Raw curve, moving average, mean rule, min/max/final marks and NaN/inf ticks; `title`: a
    line or lines (`title_lines`)."""
    finite = np.isfinite(series.values)
    steps, values = series.steps[finite], series.values[finite]
    window = smoothing_window(series.values.size)
    positions = np.unique(np.linspace(0, series.values.size - 1, SMOOTH_POINTS).astype(np.int64))
    smooth_steps = series.steps[positions]
    smooth_values = moving_average(series.values, window, positions)
    raw_steps, raw_values = minmax(steps, values)
    log_axis = _wants_log_axis(values)
    smooth_label = f"moving average (window {window:,})"
    records = _records(raw_steps, raw_values, RAW_LABEL) + _records(
        smooth_steps, smooth_values, smooth_label
    )
    non_finite = _non_finite_records(series)
    name = shortened(
        series.name, AXIS_TITLE_CHARS - len(" (log scale)") if log_axis else AXIS_TITLE_CHARS
    )
    y_title = f"{chart_text(name)}{' (log scale)' if log_axis else ''}"
    datasets: dict[str, list[dict[str, Any]]] = {"curves": records}
    mean = stats["mean"] is not None and (not log_axis or stats["mean"] > 0)
    if mean:
        datasets["mean"] = [{"value": stats["mean"], "series": "mean"}]
    if stats["final"] is not None:
        datasets["extremes"] = _extremes(stats)
    if non_finite:
        datasets["non_finite"] = non_finite
    spec = json.loads(
        _loss_layers(
            smooth_label, y_title, log_axis, mean, stats["final"] is not None, bool(non_finite)
        )
    )
    spec["title"] = _title(title, _stats_line(stats, series.values.size)).to_dict(validate=False)
    return _finish(spec, datasets)


@lru_cache(maxsize=CHART_SHAPES)
def _loss_layers(
    smooth_label: str, y_title: str, log_axis: bool, mean: bool, extremes: bool, non_finite: bool
) -> str:
    """A loss chart's layers as Vega-Lite JSON, without its title and data. Built with Altair
    once per shape (20 ms): the charts of a sweep's runs share a few shapes."""
    legend_domain = [RAW_LABEL, smooth_label, "mean"]
    legend_range = [theme.RAW_COLOUR, theme.SMOOTH_COLOUR, theme.MEAN_COLOUR]
    if non_finite:
        legend_domain.append(NON_FINITE_LABEL)
        legend_range.append(theme.NAN_COLOUR)
    y = alt.Y("value:Q", title=y_title, scale=_y_scale(log_axis), axis=alt.Axis(titleLimit=HEIGHT))
    x = alt.X("step:Q", title="step", axis=STEP_AXIS)
    colour = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=legend_domain, range=legend_range),
        legend=alt.Legend(orient="top", direction="horizontal"),
    )
    base = alt.Chart(alt.NamedData("curves"))
    layers: list[Any] = [
        base.mark_line(strokeWidth=1.0)
        .encode(x, y, colour)
        .transform_filter(alt.datum.series == RAW_LABEL),
        base.mark_line(strokeWidth=2.4)
        .encode(x, y, colour)
        .transform_filter(alt.datum.series == smooth_label),
    ]
    if mean:
        layers.append(
            alt.Chart(alt.NamedData("mean"))
            .mark_rule(strokeDash=[6, 4], strokeWidth=1.4)
            .encode(y=alt.Y("value:Q"), color=colour)
        )
    if extremes:
        layers += _extreme_marks(log_axis)
    if non_finite:
        layers.append(
            alt.Chart(alt.NamedData("non_finite"))
            .mark_rule(strokeWidth=1.2, strokeDash=[2, 2])
            .encode(x=alt.X("step:Q"), color=colour)
        )
    chart = alt.layer(*layers).properties(width=WIDTH, height=HEIGHT)
    return json.dumps(chart.to_dict(validate=False))


def combined_chart(all_series: list[LossSeries], title: str | list[str]) -> dict[str, Any]:
    """Every loss together: a linear panel and a log panel (positive values only)."""
    labels = distinct_shortened((series.name for series in all_series), LEGEND_LABEL_CHARS)
    records: list[dict[str, Any]] = []
    for series in all_series:
        finite = np.isfinite(series.values)
        steps, values = minmax(series.steps[finite], series.values[finite], COMBINED_BUCKETS)
        records += _records(steps, values, chart_text(labels[series.name]))
    names = tuple(chart_text(labels[series.name]) for series in all_series)
    spec = json.loads(_combined_panels(names))
    spec["title"] = _title(
        title, "all losses; lower panel on a log axis (positive values)"
    ).to_dict(validate=False)
    return _finish(spec, {"curves": records})


@lru_cache(maxsize=CHART_SHAPES)
def _combined_panels(names: tuple[str, ...]) -> str:
    """The combined chart's panels as Vega-Lite JSON, without its title and data: built once
    per set of loss names, as `_loss_layers`."""
    colour = alt.Color(
        "series:N",
        title="loss",
        sort=list(names),
        scale=alt.Scale(domain=list(names), range=theme.colours(len(names))),
    )
    x = alt.X("step:Q", title="step", axis=STEP_AXIS)
    base = alt.Chart(alt.NamedData("curves")).mark_line(strokeWidth=1.4)
    linear = base.encode(
        x, alt.Y("value:Q", title="loss (linear scale)", scale=alt.Scale(zero=False)), colour
    )
    log = base.transform_filter(alt.datum.value > 0).encode(
        x,
        # Not "nice": a nice log domain runs to the next power of ten, which left the top
        # third of the panel empty when the largest loss was 1.6.
        alt.Y(
            "value:Q", title="loss (log scale)", scale=alt.Scale(type="log", nice=False, padding=8)
        ),
        colour,
    )
    chart = alt.vconcat(
        linear.properties(width=WIDTH, height=HEIGHT - 40),
        log.properties(width=WIDTH, height=HEIGHT - 40),
        spacing=18,
    )
    return json.dumps(chart.to_dict(validate=False))


def _finish(spec: dict[str, Any], datasets: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The spec with its data as named datasets: Altair never walks the records."""
    spec["datasets"] = datasets
    spec["config"] = theme.CONFIG
    return spec


def _records(steps: IntArray, values: FloatArray, series: str) -> list[dict[str, Any]]:
    return [
        {"step": s, "value": v, "series": series}
        for s, v in zip(steps.tolist(), values.tolist(), strict=True)
    ]


def _y_scale(log_axis: bool) -> alt.Scale:
    """Padded so the labels of points at the top or bottom stay inside the plot."""
    if log_axis:
        return alt.Scale(type="log", nice=False, padding=14)  # see combined_chart
    return alt.Scale(zero=False, padding=14)


def _wants_log_axis(values: FloatArray) -> bool:
    if values.size < 2 or values.min() <= 0:
        return False
    with np.errstate(over="ignore"):  # 1e308 / 1e-5 is inf: a log axis, rightly
        return bool(values.max() / values.min() >= LOG_RANGE_RATIO)


def _extremes(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Min, max and final points. Points at one place share a label; min labels sit below,
    the others above, and labels in the right half of the chart run leftwards."""
    points: dict[tuple[int, float], list[str]] = {}
    for name in ("max", "final", "min"):
        points.setdefault((stats[f"{name}_step"], stats[name]), []).append(name)
    span = max(stats["final_step"] - stats["first_step"], 1)
    return [
        {
            "step": step,
            "value": value,
            "label": f"{' = '.join(names)} {_fmt(value)}",
            "below": names == ["min"] or ("min" in names and "max" not in names),
            "right_half": (step - stats["first_step"]) / span > 0.5,
        }
        for (step, value), names in points.items()
    ]


def _extreme_marks(log_axis: bool) -> list[Any]:
    """A dot on each point and its label, placed by the label's datum, over a white halo so it
    stays legible where it crosses the curve."""
    y = alt.Y("value:Q", scale=_y_scale(log_axis))
    x = alt.X("step:Q")
    base = alt.Chart(alt.NamedData("extremes"))
    dot = base.mark_point(filled=True, size=46, color=theme.TEXT_COLOUR, opacity=1)

    def labels(**paint: Any) -> Any:
        return base.mark_text(
            align=alt.expr("datum.right_half ? 'right' : 'left'"),
            dx=alt.expr("datum.right_half ? -8 : 8"),
            dy=alt.expr("datum.below ? 12 : -10"),
            fontSize=11,
            **paint,
        ).encode(x, y, alt.Text("label:N"))

    halo = labels(color="#ffffff", stroke="#ffffff", strokeWidth=4)
    return [dot.encode(x, y), halo, labels(color=theme.TEXT_COLOUR)]


def _non_finite_records(series: LossSeries) -> list[dict[str, Any]]:
    bad = ~np.isfinite(series.values)
    steps = thin_steps(series.steps[bad]).tolist()
    return [{"step": step, "series": NON_FINITE_LABEL} for step in steps]


def _stats_line(stats: dict[str, Any], count: int) -> str:
    if stats["final"] is None:
        return f"{count:,} values, none finite"
    parts = [
        f"mean {_fmt(stats['mean'])}",
        f"final {_fmt(stats['final'])}",
        f"min {_fmt(stats['min'])}",
        f"max {_fmt(stats['max'])}",
        f"{count:,} steps",
    ]
    if stats["nan_count"] or stats["inf_count"]:
        bad = stats["nan_count"] + stats["inf_count"]
        plural = "s" if bad != 1 else ""
        parts.append(f"{bad:,} NaN/inf step{plural} marked in {theme.NAN_COLOUR_NAME}")
    return "   ·   ".join(parts)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
