"""What a page shows of a run and no query reads, packed in one blob (schema 3): its final and
minimum loss values, config and alerts as JSON, and its overview curves, compressed together.

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
from typing import Any

import numpy as np

LEVELS = 65_535  # a value's place in its curve's range, 16 bits
MAX_DECODED = 1 << 20  # bytes a blob may expand to: a hand-made one cannot fill memory
INTEGRAL = 2**53  # steps below this are exact as floats, so checked as integers
FIELDS = {"final": dict, "minimum": dict, "config": dict, "alerts": list}  # and their type
# Words nearly every run's blob holds, given to zlib as a dictionary to refer back to: the
# first copy of each in a blob then costs a reference, not its letters (about 60 bytes a run).
WORDS = (
    b'{"final":{"minimum":{"config":{"alerts":[],"curves":[["overall_loss",60,"i"],'
    b'["l1_loss",60,"i"],["mse_loss",60,"i"],"train_batch_size_tokens":"4096",'
    b'"context_size":"1024","l1_coefficient":"d_sae":"lr":"seed":"dead_features'
)


def pack(fields: dict[str, Any], curves_json: str) -> bytes:
    """`fields` (final, minimum, config, alerts as `pages.index_row` has them) and the curves
    (`{loss: [[step, value], ...]}` as JSON, index_row's curves_json), packed."""
    header: dict[str, Any] = {name: fields[name] for name in FIELDS}
    header["curves"], parts = encode_curves(curves_json, by_place=True)
    head = json.dumps(header, separators=(",", ":")).encode()
    packer = zlib.compressobj(9, zdict=WORDS)
    data = len(head).to_bytes(4, "little") + head + b"".join(parts)
    return packer.compress(data) + packer.flush()


def encode_curves(curves_json: str, by_place: bool) -> tuple[list[list[Any]], list[bytes]]:
    """Each curve's shape `[name, count, "i" or "f"]` and its numbers: steps (delta-coded
    integers, or floats), the value range, and the delta-coded levels; stored by place
    (`_places`) for schema 3, as they are for schema 2 (legacy_curves.py). In plain Python:
    a curve has at most a few hundred points, where each numpy call costs more than the
    arithmetic (a daemon's first start packs 100,000 runs' curves)."""
    arrange = _places if by_place else _as_given
    shapes: list[list[Any]] = []
    parts: list[bytes] = []
    for name, points in json.loads(curves_json).items():
        if not points:
            shapes.append([name, 0, "i"])
            continue
        steps = [float(step) for step, _ in points]  # a point that is no pair: ValueError
        values = [float(value) for _, value in points]
        integral = all(map(float.is_integer, steps)) and max(map(abs, steps)) < INTEGRAL
        if integral:
            exact = [int(step) for step, _ in points]
            deltas = [exact[0], *map(operator.sub, exact[1:], exact)]
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


def _places(data: bytes, size: int) -> bytes:
    """`data`, numbers of `size` bytes each, by place: every number's first byte, then every
    second..."""
    return b"".join(data[place::size] for place in range(size))


def _as_given(data: bytes, size: int) -> bytes:
    return data


def unpack(blob: bytes | None) -> tuple[dict[str, Any], str]:
    """The fields and the curves as JSON, safe inside a <script> block as
    `pages.script_json` writes them; empty ones (`{}`, `[]`) for a blob that is none of ours
    or expands past `MAX_DECODED`."""
    empty: dict[str, Any] = {name: kind() for name, kind in FIELDS.items()}
    if not blob:
        return empty, "{}"
    try:
        unpacker = zlib.decompressobj(zdict=WORDS)
        data = unpacker.decompress(blob, MAX_DECODED)
        if unpacker.unconsumed_tail:
            return empty, "{}"
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        fields = {name: header[name] for name in FIELDS}
        if not all(isinstance(fields[name], kind) for name, kind in FIELDS.items()):
            return empty, "{}"
        curves = decode_curves(header["curves"], memoryview(data)[4 + size :], by_place=True)
    except (zlib.error, ValueError, TypeError, IndexError, KeyError):
        return empty, "{}"
    return fields, script_json(curves)


def _read(data: memoryview, at: int, dtype: str, count: int) -> np.ndarray[Any, Any]:
    """`count` numbers of `dtype` stored by place at `at` (`_by_place`)."""
    size = np.dtype(dtype).itemsize
    planes = np.frombuffer(data, np.uint8, count=count * size, offset=at).reshape(size, count)
    return np.frombuffer(planes.T.tobytes(), dtype=dtype)


def script_json(curves: dict[str, list[list[Any]]]) -> str:
    """`curves` as JSON that is safe inside a <script> block (`pages.script_json`'s rule)."""
    text = json.dumps(curves, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _read_as_is(data: memoryview, at: int, dtype: str, count: int) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype=dtype, count=count, offset=at)


def decode_curves(shapes: Any, data: memoryview, by_place: bool) -> dict[str, list[list[Any]]]:
    """The curves `encode_curves` made, as `{loss: [[step, value], ...]}`."""
    read = _read if by_place else _read_as_is
    curves: dict[str, list[list[Any]]] = {}
    at = 0
    for name, count, kind in shapes:
        if not isinstance(name, str) or not isinstance(count, int) or count < 0:
            raise ValueError("not a curve")
        if count == 0:
            curves[name] = []
            continue
        raw = read(data, at, "<i8" if kind == "i" else "<f8", count)
        steps: list[Any] = np.cumsum(raw).tolist() if kind == "i" else raw.tolist()
        at += 8 * count
        low, high = np.frombuffer(data, dtype="<f8", count=2, offset=at).tolist()
        at += 16
        deltas = read(data, at, "<u2", count)
        at += 2 * count
        levels = np.cumsum(deltas, dtype=np.uint16).astype(np.float64)
        values = low + levels / LEVELS * (high - low)
        curves[name] = [
            [step, float(f"{value:.4g}")] for step, value in zip(steps, values, strict=True)
        ]
    return curves
