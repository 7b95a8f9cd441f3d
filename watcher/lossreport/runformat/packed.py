"""What the runs index shows of a run and no query reads, packed in one blob (catalog schema 3):
its final and minimum loss values, config and alerts as JSON, and its overview curves,
compressed together. A render marker carries its run's blob (as base64, `pages.marker_entry`),
and the catalog stores it: so a daemon that lists many rendered runs copies each blob instead
of checking and packing every point again. Decoded by `catalog.packed`.

Apart, as JSON and a blob of curves, they took about 730 bytes a realistic run; together about
400: the loss names the values, the curves and the config share are written once, and the
numbers are laid out so that zlib finds what repeats.

The curves only draw the small charts of the runs index and the sweep page: each value is kept
to 1/65,535 of its curve's range (16 bits, below a pixel of any chart and below the 4
significant digits the renderer keeps, where a curve spans less than a decade), then given back
rounded to 4 significant digits. Steps are kept exactly (as 64-bit integers; any step that is
not one keeps its curve's steps as 64-bit floats). Steps and levels are delta-coded, and each
array's bytes are stored by place (every first byte, then every second...): the high bytes of
small deltas are zeros that compress to nothing.
"""

from __future__ import annotations

import json
import math
import operator
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

LEVELS = 65_535  # a value's place in its curve's range, 16 bits
INTEGRAL = 2**53  # steps below this are exact as floats, so checked as integers
FIELDS = {"final": dict, "minimum": dict, "config": dict, "alerts": list}  # and their type
# Words nearly every run's blob holds, given to zlib as a dictionary to refer back to: the
# first copy of each in a blob then costs a reference, not its letters (about 60 bytes a run).
WORDS = (
    b'{"final":{"minimum":{"config":{"alerts":[],"curves":[["overall_loss",60,"i"],'
    b'["l1_loss",60,"i"],["mse_loss",60,"i"],"train_batch_size_tokens":"4096",'
    b'"context_size":"1024","l1_coefficient":"d_sae":"lr":"seed":"dead_features'
)


Curves = Mapping[str, Sequence[Sequence[float]]]  # {loss: [[step, value], ...]}


def pack(fields: dict[str, Any], curves: Curves) -> bytes:
    """`fields` (final, minimum, config, alerts as `pages.index_row` has them) and the curves
    (`{loss: [[step, value], ...]}` as `runformat.index_curves` gives them), packed."""
    header: dict[str, Any] = {name: fields[name] for name in FIELDS}
    header["curves"], parts = encode_curves(curves, by_place=True)
    head = json.dumps(header, separators=(",", ":")).encode()
    packer = zlib.compressobj(9, zdict=WORDS)
    data = len(head).to_bytes(4, "little") + head + b"".join(parts)
    return packer.compress(data) + packer.flush()


def encode_curves(curves: Curves, by_place: bool) -> tuple[list[list[Any]], list[bytes]]:
    """Each curve's shape `[name, count, "i" or "f"]` and its numbers: steps (delta-coded
    integers, or floats), the value range, and the delta-coded levels; stored by place
    (`_places`) for schema 3, as they are for schema 2 (legacy_curves.py). In plain Python:
    a curve has at most a few hundred points, where each numpy call costs more than the
    arithmetic (a daemon's first start packs 100,000 runs' curves)."""
    arrange = _places if by_place else _as_given
    shapes: list[list[Any]] = []
    parts: list[bytes] = []
    for name, points in curves.items():
        if not points:
            shapes.append([name, 0, "i"])
            continue
        steps, integral = _steps(points)  # a point that is no pair: ValueError
        values = [float(value) for _, value in points]
        if integral:
            deltas = [steps[0], *map(operator.sub, steps[1:], steps)]
            parts.append(arrange(struct.pack(f"<{len(deltas)}q", *deltas), 8))
        else:
            parts.append(arrange(struct.pack(f"<{len(steps)}d", *steps), 8))
        low, high = min(values), max(values)
        span = high - low
        if 0 < span < math.inf:
            levels = [round((value - low) / span * LEVELS) for value in values]
        else:  # all one value (or a range past a float's)
            levels = [0] * len(values)
        ups = [levels[0], *(up % 65_536 for up in map(operator.sub, levels[1:], levels))]
        parts.append(struct.pack("<2d", low, high))
        parts.append(arrange(struct.pack(f"<{len(ups)}H", *ups), 2))
        shapes.append([name, len(points), "i" if integral else "f"])
    return shapes, parts


def _steps(points: Sequence[Sequence[float]]) -> tuple[list[Any], bool]:
    """A curve's steps, and whether they are integral: exact integers then (below
    `INTEGRAL`, as floats of that size are), else floats. Integers as JSON gives them are
    taken as they are, without a conversion a step."""
    steps = [step for step, _ in points]
    if all(type(step) is int for step in steps) and -INTEGRAL < min(steps) <= max(steps) < INTEGRAL:
        return steps, True
    floats = [float(step) for step in steps]
    if all(map(float.is_integer, floats)) and max(map(abs, floats)) < INTEGRAL:
        return [int(step) for step in floats], True
    return floats, False


def _places(data: bytes, size: int) -> bytes:
    """`data`, numbers of `size` bytes each, by place: every number's first byte, then every
    second..."""
    return b"".join(data[place::size] for place in range(size))


def _as_given(data: bytes, size: int) -> bytes:
    return data
