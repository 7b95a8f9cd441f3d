"""Many runs' packed overview curves (packed.py's numbers) as JSON, decoded together.

A sweep's page shows 500 runs' curves, three of 60 points a run. Decoded a curve at a time,
the dozen numpy calls each took longer than writing the numbers; here the curves of one shape
(as many points, integral steps or not) are decoded in one numpy pass whatever run they are
from, and each curve's text is written by one formatting call (`POINT`).
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from ..runformat.packed import LEVELS

# A point as JSON: its step as it is, its value to 4 significant digits (the renderer's);
# repeated, a curve's points in one formatting call.
POINT = "[%s,%.4g],"


class Curve(NamedTuple):
    run: int  # which of the decoded runs
    name: str
    points: int
    integral: bool
    data: memoryview
    at: int  # where its numbers start in `data`


def curves_json(runs: list[tuple[Any, memoryview]], by_place: bool) -> list[str | None]:
    """Each run's curves (its shapes `[[name, count, "i" or "f"], ...]` and the numbers after
    them) as `{loss: [[step, value], ...]}` JSON, safe inside a <script> block (`script_json`'s
    rule); None for a run whose shapes or numbers are none of ours. `by_place`: schema 3's
    layout (packed.py), else schema 2's (legacy_curves.py)."""
    texts: list[dict[str, str] | None] = []
    curves: list[Curve] = []
    for run, (shapes, data) in enumerate(runs):
        try:
            found = _laid_out(run, shapes, data)
        except (ValueError, TypeError):
            texts.append(None)
            continue
        texts.append({curve.name: "[]" for curve in found})
        curves += (curve for curve in found if curve.points)
    groups: dict[tuple[int, bool], list[Curve]] = {}
    for curve in curves:
        groups.setdefault((curve.points, curve.integral), []).append(curve)
    for (count, integral), group in groups.items():
        for curve, text in zip(group, _written(group, count, integral, by_place), strict=True):
            named = texts[curve.run]
            if named is not None and text is not None:
                named[curve.name] = text
            else:
                texts[curve.run] = None
    return [
        None if named is None else "{" + ",".join(f"{script_json(name)}:{text}"
                                                  for name, text in named.items()) + "}"
        for named in texts
    ]  # fmt: skip


def script_json(value: Any) -> str:
    """`value` as JSON that is safe inside a <script> block (`pages.script_json`'s rule)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _laid_out(run: int, shapes: Any, data: memoryview) -> list[Curve]:
    """Where each of a run's curves is in `data`; ValueError if a shape is none of ours or
    the numbers end before its curves do."""
    curves: list[Curve] = []
    at = 0
    for name, count, kind in shapes:
        if not isinstance(name, str) or not isinstance(count, int) or count < 0:
            raise ValueError("not a curve")
        curves.append(Curve(run, name, count, kind == "i", data, at))
        if count:
            at += 10 * count + 16  # steps (8 bytes each), the range, levels (2 bytes each)
    if at > len(data):
        raise ValueError("the curves end past the numbers")
    return curves


def _numbers(
    parts: list[memoryview], dtype: str, count: int, by_place: bool
) -> np.ndarray[Any, Any]:
    """Each of `parts` (`count` numbers of `dtype`) as a row of a 2-d array."""
    size = np.dtype(dtype).itemsize
    joined = b"".join(parts)
    if not by_place:
        return np.frombuffer(joined, dtype).reshape(len(parts), count)
    # every number's first byte, then every second...: back to numbers
    planes = np.frombuffer(joined, np.uint8).reshape(len(parts), size, count)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dtype).reshape(len(parts), count)


def _written(group: list[Curve], count: int, integral: bool, by_place: bool) -> list[str | None]:
    """The JSON of each curve in `group` (all of `count` points, integral steps or not);
    None for one whose numbers are not JSON's (an infinite range or step)."""
    steps = _numbers(
        [c.data[c.at : c.at + 8 * count] for c in group],
        "<i8" if integral else "<f8",
        count,
        by_place,
    )
    if integral:
        steps = np.cumsum(steps, axis=1)
    ranges = np.frombuffer(
        b"".join(c.data[c.at + 8 * count : c.at + 8 * count + 16] for c in group), "<f8"
    ).reshape(len(group), 2)
    low, high = ranges[:, :1].copy(), ranges[:, 1:]
    with np.errstate(over="ignore", invalid="ignore"):  # a range past a float's: none
        span = high - low
    finite = np.isfinite(span[:, 0])
    low[~finite], span[~finite] = 0, 0  # written as none below, without a warning
    deltas = _numbers(
        [c.data[c.at + 8 * count + 16 : c.at + 10 * count + 16] for c in group],
        "<u2",
        count,
        by_place,
    )
    values = low + np.cumsum(deltas, axis=1, dtype=np.uint16) / LEVELS * span
    written: list[str | None] = []
    template = POINT * count
    for run_steps, run_values, ok in zip(
        steps.tolist(), values.tolist(), finite.tolist(), strict=True
    ):
        text = (template % tuple(chain.from_iterable(zip(run_steps, run_values, strict=True))))[:-1]
        # "inf" or "nan" (no number has an n) is not JSON: a blob that is none of ours
        written.append(f"[{text}]" if ok and "n" not in text else None)
    return written
