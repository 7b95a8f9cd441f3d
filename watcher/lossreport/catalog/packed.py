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
import zlib
from itertools import chain
from typing import Any

import numpy as np

LEVELS = 65_535  # a value's place in its curve's range, 16 bits
MAX_DECODED = 1 << 20  # bytes a blob may expand to: a hand-made one cannot fill memory
# A point as JSON: its step as it is, its value to 4 significant digits (the renderer's);
# repeated, a curve's points in one formatting call.
POINT = "[%s,%.4g],"
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
    (`_by_place`) for schema 3, as they are for schema 2 (legacy_curves.py)."""
    arrange = _by_place if by_place else _as_is
    shapes: list[list[Any]] = []
    parts: list[bytes] = []
    for name, points in json.loads(curves_json).items():
        if not points:
            shapes.append([name, 0, "i"])
            continue
        pairs = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        steps, values = pairs[:, 0], pairs[:, 1]
        integral = bool(np.all(steps == np.round(steps)) and np.all(np.abs(steps) < INTEGRAL))
        if integral:
            exact = np.asarray([point[0] for point in points], dtype=np.int64)
            parts.append(arrange(np.diff(exact, prepend=np.int64(0)).astype("<i8")))
        else:
            parts.append(arrange(steps.astype("<f8")))
        low, high = float(values.min()), float(values.max())
        span = high - low
        flat = not (0 < span < np.inf)  # all one value (or a range past a float's)
        levels = np.zeros(len(values)) if flat else np.round((values - low) / span * LEVELS)
        quantised = levels.astype(np.uint16)
        parts.append(np.array([low, high], dtype="<f8").tobytes())
        parts.append(arrange(np.diff(quantised, prepend=np.uint16(0)).astype("<u2")))
        shapes.append([name, len(points), "i" if integral else "f"])
    return shapes, parts


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
    return fields, curves


def _by_place(numbers: np.ndarray[Any, Any]) -> bytes:
    """The bytes of `numbers` by place: every number's first byte, then every second..."""
    return np.frombuffer(numbers.tobytes(), np.uint8).reshape(-1, numbers.itemsize).T.tobytes()


def _read(data: memoryview, at: int, dtype: str, count: int) -> np.ndarray[Any, Any]:
    """`count` numbers of `dtype` stored by place at `at` (`_by_place`)."""
    size = np.dtype(dtype).itemsize
    planes = np.frombuffer(data, np.uint8, count=count * size, offset=at).reshape(size, count)
    return np.frombuffer(planes.T.tobytes(), dtype=dtype)


def script_json(value: Any) -> str:
    """`value` as JSON that is safe inside a <script> block (`pages.script_json`'s rule)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _as_is(numbers: np.ndarray[Any, Any]) -> bytes:
    return numbers.tobytes()


def _read_as_is(data: memoryview, at: int, dtype: str, count: int) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype=dtype, count=count, offset=at)


def decode_curves(shapes: Any, data: memoryview, by_place: bool) -> str:
    """The curves `encode_curves` made as `{loss: [[step, value], ...]}` JSON, safe inside a
    <script> block (`script_json`'s rule), each value to 4 significant digits. The text is
    written from the arrays in one formatting call a curve (`POINT`), not through lists of
    Python floats dumped as JSON: a sweep's page unpacks 500 runs' curves, and that took
    four times as long."""
    read = _read if by_place else _read_as_is
    curves: dict[str, str] = {}
    at = 0
    for name, count, kind in shapes:
        if not isinstance(name, str) or not isinstance(count, int) or count < 0:
            raise ValueError("not a curve")
        if count == 0:
            curves[name] = "[]"
            continue
        raw = read(data, at, "<i8" if kind == "i" else "<f8", count)
        steps = np.cumsum(raw) if kind == "i" else raw
        at += 8 * count
        low, high = np.frombuffer(data, dtype="<f8", count=2, offset=at).tolist()
        at += 16
        deltas = read(data, at, "<u2", count)
        at += 2 * count
        if not math.isfinite(high - low):
            raise ValueError("not a finite range")
        values = low + np.cumsum(deltas, dtype=np.uint16) / LEVELS * (high - low)
        points = chain.from_iterable(zip(steps.tolist(), values.tolist(), strict=True))
        text = (POINT * count % tuple(points))[:-1]
        if "n" in text:  # "inf" or "nan" (no number has an n): not JSON, a blob not ours
            raise ValueError("not a finite curve")
        curves[name] = f"[{text}]"
    return "{" + ",".join(f"{script_json(name)}:{text}" for name, text in curves.items()) + "}"
