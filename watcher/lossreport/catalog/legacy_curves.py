"""A run's overview curves as catalog schema 2 kept them (a blob of their own, quantised and
compressed): read to upgrade such a catalog, and made by tests that build one. Schema 3 keeps
them with the run's other details (packed.py), laid out to compress better.

Each value was kept to 1/65,535 of its curve's range (16 bits) and is given back rounded to
4 significant digits; steps exactly (as 64-bit integers, or 64-bit floats for a curve with a
step that is not one). The blob is zlib of a small JSON header (the loss names, what each curve
holds) and the numbers, delta-coded.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

LEVELS = 65_535  # a value's place in its curve's range, 16 bits
MAX_DECODED = 1 << 20  # bytes a blob may expand to: a hand-made one cannot fill memory
INTEGRAL = 2**53  # steps below this are exact as floats, so checked as integers


def encode(curves_json: str) -> bytes:
    """`{loss: [[step, value], ...]}` as JSON (`pages.index_row`'s curves_json), packed."""
    curves = json.loads(curves_json)
    header: list[list[Any]] = []
    parts: list[bytes] = []
    for name, points in curves.items():
        if not points:
            header.append([name, 0, "i"])
            continue
        pairs = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        steps, values = pairs[:, 0], pairs[:, 1]
        integral = bool(np.all(steps == np.round(steps)) and np.all(np.abs(steps) < INTEGRAL))
        if integral:
            exact = np.asarray([point[0] for point in points], dtype=np.int64)
            parts.append(np.diff(exact, prepend=np.int64(0)).astype("<i8").tobytes())
        else:
            parts.append(steps.astype("<f8").tobytes())
        low, high = float(values.min()), float(values.max())
        span = high - low
        flat = not (0 < span < np.inf)  # all one value (or a range past a float's)
        levels = np.zeros(len(values)) if flat else np.round((values - low) / span * LEVELS)
        quantised = levels.astype(np.uint16)
        parts.append(np.array([low, high], dtype="<f8").tobytes())
        parts.append(np.diff(quantised, prepend=np.uint16(0)).astype("<u2").tobytes())
        header.append([name, len(points), "i" if integral else "f"])
    head = json.dumps(header, separators=(",", ":")).encode()
    return zlib.compress(len(head).to_bytes(4, "little") + head + b"".join(parts), 9)


def decode(blob: bytes | None) -> str:
    """The curves as JSON, safe inside a <script> block as `pages.script_json` writes them;
    `{}` for a blob that is none of ours or expands past `MAX_DECODED`."""
    if not blob:
        return "{}"
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(blob, MAX_DECODED)
        if inflater.unconsumed_tail:
            return "{}"
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        curves = _curves(header, memoryview(data)[4 + size :])
    except (zlib.error, ValueError, TypeError, IndexError):
        return "{}"
    text = json.dumps(curves, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _curves(header: Any, data: memoryview) -> dict[str, list[list[Any]]]:
    curves: dict[str, list[list[Any]]] = {}
    at = 0
    for name, count, kind in header:
        if not isinstance(name, str) or not isinstance(count, int) or count < 0:
            raise ValueError("not a curve")
        if count == 0:
            curves[name] = []
            continue
        raw = np.frombuffer(data, dtype="<i8" if kind == "i" else "<f8", count=count, offset=at)
        steps: list[Any] = np.cumsum(raw).tolist() if kind == "i" else raw.tolist()
        at += 8 * count
        low, high = np.frombuffer(data, dtype="<f8", count=2, offset=at).tolist()
        at += 16
        deltas = np.frombuffer(data, dtype="<u2", count=count, offset=at)
        at += 2 * count
        levels = np.cumsum(deltas, dtype=np.uint16).astype(np.float64)
        values = low + levels / LEVELS * (high - low)
        curves[name] = [
            [step, float(f"{value:.4g}")] for step, value in zip(steps, values, strict=True)
        ]
    return curves
