"""JSON documents lossreport keeps for itself in a shared tree (render markers, mail records):
read whole and bounded, and read as "none" when anything about them is unexpected."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .local import read_bytes

T = TypeVar("T")


def read_json_or(path: Path, limit: int, parse: Callable[[Any], T], fallback: T) -> T:
    """`parse(document)` for the JSON file at `path` (read as `read_bytes` reads: a regular
    file, not through a link, at most `limit` bytes), or `fallback` when it is missing,
    unreadable, not JSON, nested past the interpreter's recursion limit, or not what `parse`
    expects (it raised KeyError, TypeError or ValueError). For lossreport's own records, which
    anyone who can write the run can edit or break: those read as never written."""
    try:
        return parse(json.loads(read_bytes(path, limit)))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return fallback
