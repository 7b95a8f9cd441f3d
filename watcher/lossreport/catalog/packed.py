"""The blob a run's index details are packed in (`runformat.packed`, catalog schema 3), read
back: for the pages that show them, and, where a render marker carries one, checked before
the catalog stores it.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from typing import Any

from ..runformat.marker import MAX_CURVE_NAME, MAX_CURVE_POINTS, MAX_CURVES_BYTES
from ..runformat.packed import FIELDS, WORDS
from . import curve_json

MAX_DECODED = 1 << 20  # bytes a blob may expand to: a hand-made one cannot fill memory
# A blob a render marker carries, as base64: ours take about 600 characters; what its curves
# may hold is bounded as a marker's curves are (runformat.index_curves).
MAX_CARRIED_CHARS = 64 * 2**10
_LEAST_POINT_JSON = len("[1,2],")


def carried(text: Any, fields: Mapping[str, Any]) -> bytes | None:
    """The blob a render marker carries (base64, `pages.marker_entry`), if it is one of ours
    and holds `fields` (what `pages.index_row` read from the same marker: no query can sort by
    one value and the page show another) and curves within a marker's bounds; else None,
    and the row is packed from the marker's fields as they are."""
    if not isinstance(text, str) or len(text) > MAX_CARRIED_CHARS:
        return None
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error
        return None
    opened = _opened(blob)
    if opened is None or any(opened[0][name] != fields[name] for name in FIELDS):
        return None
    return blob if _bounded(opened[1][0]) else None


def _bounded(shapes: Any) -> bool:
    """Whether curve shapes (`[[name, count, kind], ...]`) could be a marker's curves as
    `runformat.index_curves` keeps them: names of `MAX_CURVE_NAME` characters, curves of
    `MAX_CURVE_POINTS` points, whose JSON would fit `MAX_CURVES_BYTES` at its shortest (a
    point `[1,2],`, a name's character a byte). Whether the numbers are there is checked
    when they are decoded (`curve_json`)."""
    if not isinstance(shapes, list):
        return False
    size = 2
    for shape in shapes:
        if not (isinstance(shape, list) and len(shape) == 3):
            return False
        name, count, _ = shape
        if not isinstance(name, str) or len(name) > MAX_CURVE_NAME:
            return False
        if type(count) is not int or not 0 <= count <= MAX_CURVE_POINTS:
            return False
        size += len(name) + 6 + count * _LEAST_POINT_JSON
    return size <= MAX_CURVES_BYTES


def unpack(blob: bytes | None) -> tuple[dict[str, Any], str]:
    """The fields and the curves as JSON, safe inside a <script> block as
    `pages.script_json` writes them; empty ones (`{}`, `[]`) for a blob that is none of ours
    or expands past `MAX_DECODED`."""
    return unpack_many([blob])[0]


def unpack_many(blobs: list[bytes | None]) -> list[tuple[dict[str, Any], str]]:
    """`unpack` of each of `blobs`, their curves decoded together (curve_json.py): a page of
    runs costs a numpy pass, not a dozen numpy calls a curve."""
    opened = [_opened(blob) for blob in blobs]
    texts = iter(curve_json.curves_json([found[1] for found in opened if found], by_place=True))
    unpacked: list[tuple[dict[str, Any], str]] = []
    for found in opened:
        text = next(texts) if found else None
        if found is None or text is None:
            unpacked.append(({name: kind() for name, kind in FIELDS.items()}, "{}"))
        else:
            unpacked.append((found[0], text))
    return unpacked


def _opened(blob: bytes | None) -> tuple[dict[str, Any], tuple[Any, memoryview]] | None:
    """A blob's fields, and its curves' shapes and numbers; None for one that is none of ours
    or expands past `MAX_DECODED`."""
    if not blob:
        return None
    try:
        unpacker = zlib.decompressobj(zdict=WORDS)
        data = unpacker.decompress(blob, MAX_DECODED)
        if unpacker.unconsumed_tail:
            return None
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        fields = {name: header[name] for name in FIELDS}
        if not all(isinstance(fields[name], kind) for name, kind in FIELDS.items()):
            return None
        return fields, (header["curves"], memoryview(data)[4 + size :])
    except (zlib.error, ValueError, TypeError, IndexError, KeyError):
        return None
