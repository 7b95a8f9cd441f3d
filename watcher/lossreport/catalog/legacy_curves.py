"""A run's overview curves as catalog schema 2 kept them (a blob of their own, quantised and
compressed): read to upgrade such a catalog, and made by tests that build one. Schema 3 keeps
them with the run's other details (`runformat.packed`), laid out to compress better.

Each value was kept to 1/65,535 of its curve's range (16 bits) and is given back rounded to
4 significant digits; steps exactly (as 64-bit integers, or 64-bit floats for a curve with a
step that is not one). The blob is zlib of a small JSON header (the loss names, what each curve
holds) and the numbers, delta-coded.
"""

from __future__ import annotations

import json
import zlib

from ..runformat.packed import Curves, encode_curves
from . import curve_json
from .packed import MAX_DECODED


def encode(curves: Curves) -> bytes:
    """`{loss: [[step, value], ...]}` (`pages.index_row`'s curves), packed."""
    shapes, parts = encode_curves(curves, by_place=False)
    head = json.dumps(shapes, separators=(",", ":")).encode()
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
    except (zlib.error, ValueError, TypeError, IndexError):
        return "{}"
    (text,) = curve_json.curves_json([(header, memoryview(data)[4 + size :])], by_place=False)
    return "{}" if text is None else text
