"""JSON documents read from a shared tree (run.json, render markers, mail records, alert
logs): read whole and bounded, and as text everything downstream can take.

Python's `json` reads what no other reader of ours will: a lone surrogate escape (`"\\ud800"`,
half a character) that UTF-8, SQLite and the chart engine refuse, so one run's name stopped
the daemon's catalog writes; and, by default, numbers no float holds (`1e400`, read as inf)
and the `NaN`/`Infinity` that strict JSON has not, which the report's strict JSON then refused.
Here a lone surrogate reads as U+FFFD, and such numbers, where asked, as their own text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .local import read_bytes

T = TypeVar("T")
REPLACEMENT = "\ufffd"
# A surrogate escape: where none is, no string needs looking at (a daemon's start reads
# 100,000 markers).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_json_or(path: Path, limit: int, parse: Callable[[Any], T], fallback: T) -> T:
    """`parse(document)` for the JSON file at `path` (read as `read_bytes` reads: a regular
    file, not through a link, at most `limit` bytes), or `fallback` when it is missing,
    unreadable, not JSON, nested past the interpreter's recursion limit, or not what `parse`
    expects (it raised KeyError, TypeError or ValueError). For lossreport's own records, which
    anyone who can write the run can edit or break: those read as never written."""
    try:
        return parse(load_json(read_bytes(path, limit)))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return fallback


def load_json(data: bytes, *, numbers_as_text: bool = False) -> Any:
    """`data` parsed (raises as `json.loads` does), lone surrogates read as U+FFFD.
    `numbers_as_text`: a number past a float's range and NaN/Infinity are kept as the text
    they were written as (a config value shows as written); else read as Python does (a
    marker's hundreds of curve points are checked where they are used)."""
    if numbers_as_text:
        doc = json.loads(data, parse_float=_finite_or_text, parse_constant=str)
    else:
        doc = json.loads(data)
    return _without_surrogates(doc) if _SURROGATE_ESCAPE.search(data) else doc


def clean_text(text: str) -> str:
    """`text` with any lone surrogate (from a JSON escape, or a file name's undecodable byte)
    as U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub(REPLACEMENT, text)
    return text


def _finite_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _without_surrogates(doc: Any) -> Any:
    """`doc` with every string, keys too, cleaned (a pair of surrogates was read as the one
    character it makes: only lone ones are left)."""
    if isinstance(doc, str):
        return clean_text(doc)
    if isinstance(doc, list):
        return [_without_surrogates(item) for item in doc]
    if isinstance(doc, dict):
        return {clean_text(key): _without_surrogates(value) for key, value in doc.items()}
    return doc
