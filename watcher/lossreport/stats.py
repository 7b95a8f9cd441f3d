"""Summary statistics of a loss history, as the feature document's API returns them.

Statistics are taken over finite values only; NaN and inf are counted instead, so one bad step
never turns a mean into NaN without saying so. Pure functions of arrays: no I/O.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .history import LossHistory, LossSeries


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
    change = final - initial
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> null below, not a warning
        mean, std = values.mean(), values.std()
    return {
        "mean": _finite(mean),
        "std": _finite(std),
        "min": float(values.min()),
        "max": float(values.max()),
        "final": final,
        "initial": initial,
        "change": _finite(change),
        "percent_change": _finite(change / initial * 100) if initial != 0 else 0.0,
        "first_step": int(steps[0]),
        "final_step": int(steps[-1]),
        "min_step": int(steps[np.argmin(values)]),
        "max_step": int(steps[np.argmax(values)]),
        **counts,
    }


def summary_stats(history: LossHistory, model_name: str, hook_name: str) -> dict[str, Any]:
    """`{"model_name", "hook_name", "total_steps", "losses": {name: loss_stats}}`."""
    return {
        "model_name": model_name,
        "hook_name": hook_name,
        "total_steps": history.total_steps,
        "losses": {series.name: loss_stats(series) for series in history.series()},
    }


DIVERGENCE_FACTOR = 2.0


def anomalies(stats: dict[str, Any]) -> list[str]:
    """Plain-language notes on NaN/inf values and diverged losses, for reports and subjects."""
    notes = []
    for name, loss in stats["losses"].items():
        if loss["nan_count"] or loss["inf_count"]:
            notes.append(f"{name}: {loss['nan_count']} NaN, {loss['inf_count']} inf")
        if diverged(loss):
            notes.append(
                f"{name}: diverged, final {loss['final']:.4g} is "
                f"{loss['final'] / loss['initial']:.1f}x the initial {loss['initial']:.4g}"
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
        f"  Model: {stats['model_name']}",
        f"  Hook: {stats['hook_name']}",
        f"  Total Steps: {stats['total_steps']}",
    ]
    for name, loss in stats["losses"].items():
        lines.append(f"  {name}:")
        if loss["final"] is None:
            lines.append("    no finite values")
        else:
            lines += [
                f"    Final: {loss['final']:.6f}",
                f"    Mean: {loss['mean']:.6f}",
                f"    Change: {loss['change']:.6f} ({loss['percent_change']:.2f}%)",
            ]
        if loss["nan_count"] or loss["inf_count"]:
            lines.append(f"    Non-finite: {loss['nan_count']} NaN, {loss['inf_count']} inf")
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    """A statistic that overflowed (finite inputs near float64's limit) becomes null, not inf."""
    number = float(value)
    return number if math.isfinite(number) else None
