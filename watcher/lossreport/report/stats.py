"""Summary statistics of a loss history, as the feature document's API returns them.

Statistics are taken over finite values only; NaN and inf are counted instead, so one bad step
never turns a mean into NaN without saying so. Finite values give finite statistics, even near
float64's limit (1e308), except `change` and `percent_change` where the true result is beyond it:
those are null, and every formatter here shows a null or non-finite statistic as "n/a". Pure
functions of arrays: no I/O.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ..logformat import printable
from .history import FloatArray, LossHistory, LossSeries
from .shown import shortened


def loss_stats(series: LossSeries) -> dict[str, Any]:
    finite = np.isfinite(series.values)
    values = series.values[finite]
    counts = {
        "count": int(series.values.size),
        "nan_count": int(np.isnan(series.values).sum()),
        "inf_count": int(np.isinf(series.values).sum()),
    }
    if values.size == 0:
        empty = dict.fromkeys(
            (
                "mean",
                "std",
                "min",
                "max",
                "final",
                "initial",
                "change",
                "percent_change",
                "first_step",
                "final_step",
                "min_step",
                "max_step",
            )
        )
        return {**empty, **counts}
    steps = series.steps[finite]
    initial, final = float(values[0]), float(values[-1])
    change = final - initial  # Python floats: an overflow gives inf, nulled below, never raises
    mean, std = _mean_and_std(values)
    return {
        "mean": mean,
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "final": final,
        "initial": initial,
        "change": _finite(change),
        "percent_change": _percent_change(initial, final, change),
        "first_step": int(steps[0]),
        "final_step": int(steps[-1]),
        "min_step": int(steps[np.argmin(values)]),
        "max_step": int(steps[np.argmax(values)]),
        **counts,
    }


def _mean_and_std(values: FloatArray) -> tuple[float, float]:
    """Mean and standard deviation of finite values, finite themselves.

    Computed on the values scaled by a power of two that brings the largest magnitude into
    [0.5, 1), so neither the sum (1e308 + 1e308) nor the squares (1e200 ** 2 overflowing, or
    1e-200 ** 2 underflowing to 0) leave float64's range. Scaling by a power of two is exact, so
    ordinary values give the same bits as numpy unscaled. The results are then held to their
    mathematical bounds (the mean within [min, max], the deviation at most half the range) so a
    last rounding cannot step past the largest float.
    """
    exponent = int(np.frexp(np.max(np.abs(values)))[1])
    scaled = np.ldexp(values, -exponent)
    low, high = float(values.min()), float(values.max())
    mean = float(np.ldexp(scaled.mean(), exponent))
    std = float(np.ldexp(scaled.std(), exponent))
    return min(max(mean, low), high), min(std, high / 2 - low / 2)


def _percent_change(initial: float, final: float, change: float) -> float | None:
    """`change` as a percentage of `initial` (0 when it starts at 0, as the feature document
    has it); from the ratio when the change itself overflowed (1e308 to -1e308 is -200%)."""
    if initial == 0:
        return 0.0
    if math.isfinite(change):
        return _finite(change / initial * 100)
    return _finite((final / initial - 1) * 100)


def summary_stats(history: LossHistory, model_name: str, hook_name: str) -> dict[str, Any]:
    """`{"model_name", "hook_name", "total_steps", "losses": {name: loss_stats}}`."""
    return {
        "model_name": model_name,
        "hook_name": hook_name,
        "total_steps": history.total_steps,
        "losses": {series.name: loss_stats(series) for series in history.series()},
    }


DIVERGENCE_FACTOR = 2.0
MISSING = "n/a"
LARGE = 1e15  # from here on fixed-point notation is a wall of digits (1e308 has 309)


def anomalies(stats: dict[str, Any]) -> list[str]:
    """Plain-language notes on NaN/inf values and diverged losses, for reports and subjects;
    names shortened (shown.py)."""
    notes = []
    for whole, loss in stats["losses"].items():
        name = shortened(whole)
        if loss["nan_count"] or loss["inf_count"]:
            notes.append(f"{name}: {loss['nan_count']} NaN, {loss['inf_count']} inf")
        if diverged(loss):
            ratio = loss["final"] / loss["initial"]  # inf when beyond float64: 1e308 / 1e-300
            times = (
                _fixed(ratio, 1) if math.isfinite(ratio) else f"more than {sys.float_info.max:.1e}"
            )
            notes.append(
                f"{name}: diverged, final {_number(loss['final'], '.4g')} is "
                f"{times}x the initial {_number(loss['initial'], '.4g')}"
            )
    return notes


def diverged(loss: dict[str, Any]) -> bool:
    """A loss that ended well above where it started: training went the wrong way."""
    initial, final = loss["initial"], loss["final"]
    return bool(initial and final and initial > 0 and final > DIVERGENCE_FACTOR * initial)


def console_summary(stats: dict[str, Any]) -> str:
    """The feature document's "Loss Training Summary" block."""
    lines = [
        "Loss Training Summary:",
        f"  Model: {_named(stats['model_name'])}",
        f"  Hook: {_named(stats['hook_name'])}",
        f"  Total Steps: {stats['total_steps']}",
    ]
    for name, loss in stats["losses"].items():
        lines.append(f"  {_named(name)}:")
        if loss["final"] is None:
            lines.append("    no finite values")
        else:
            lines += [
                f"    Final: {_fixed(loss['final'], 6)}",
                f"    Mean: {_fixed(loss['mean'], 6)}",
                f"    Change: {_fixed(loss['change'], 6)} ({_percent(loss['percent_change'])})",
            ]
        if loss["nan_count"] or loss["inf_count"]:
            lines.append(f"    Non-finite: {loss['nan_count']} NaN, {loss['inf_count']} inf")
    return "\n".join(lines)


def _named(text: str) -> str:
    """A writer's name for a terminal, a log or a mail: shortened, and any control character
    escaped (`\\x1b`), so that a name cannot drive the terminal it is printed on."""
    return printable(shortened(text))


def _fixed(value: float | None, digits: int) -> str:
    """The feature document's fixed-point form, in exponent form for huge values."""
    return _number(value, f".{digits}{'f' if abs(value or 0) < LARGE else 'e'}")


def _percent(value: float | None) -> str:
    text = _fixed(value, 2)
    return text if text == MISSING else f"{text}%"


def _number(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`; "n/a" for a statistic that is null or not finite (one that
    overflowed, or a hand-edited summary), which a format spec would fail on or show raw."""
    if value is None or not math.isfinite(value):
        return MISSING
    return format(value, spec)


def _finite(value: float) -> float | None:
    """A statistic that overflowed (finite inputs near float64's limit) becomes null, not inf."""
    number = float(value)
    return number if math.isfinite(number) else None
