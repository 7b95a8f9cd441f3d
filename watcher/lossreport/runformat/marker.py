"""The render marker, `loss_graphs/.lossreport-rendered.json`: what the last render of a run saw
(its inputs' fingerprint and status) and made (the runs index's row for it).

The daemon compares it with a run's inputs to decide whether to render again; `lossreport
serve` and the daemon build the runs index from it. The run's owner can write it, so what it
brings to the index is bounded: a marker over `storage.MAX_MARKER_BYTES` is refused (logged,
naming the file, once per version of it), and the overview curves of its entry are cut to
`MAX_CURVE_POINTS` points a loss and `MAX_CURVES_BYTES` of JSON in all (`index_curves`), when
read and when written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..errors import FileTooLargeError, RunDirectoryError
from .layout import GRAPHS_DIR, MARKER

logger = logging.getLogger(__name__)

MAX_CURVE_POINTS = 100  # a loss's overview curve in an index row (the renderer keeps 60)
MAX_CURVES_BYTES = 32 * 2**10  # all of a row's curves, as JSON: losses past it are left out
MAX_CURVE_NAME = 200  # characters of a loss's name
# A point as JSON with its comma: `[` int of 20 characters `,` float of 24 `],`.
_MOST_POINT_JSON = 48
_LOGGED_REFUSALS = 1000  # refused markers remembered, so each version is logged once


@dataclass(frozen=True)
class RenderedMarker:
    """What the last render of a run saw and made (kept for the runs index)."""

    fingerprint: str
    status: str
    entry: dict[str, Any]
    # Made by a daemon's render job, which also queues the run's mail; a run rendered by any
    # other process (its trainer at close, `lossreport render`) may still need its mail.
    by_daemon: bool = False


def read_marker(run_dir: Path) -> RenderedMarker | None:
    """The last render's marker, or None when there is none or it is not one of ours (the run's
    owner can edit it: anything unexpected reads as "never rendered"). One over the size limit
    is logged; its entry's curves come back bounded (`index_curves`)."""
    graphs = run_dir / GRAPHS_DIR
    if not storage.is_real_dir(graphs):
        return None
    try:
        data = storage.read_bytes(graphs / MARKER, storage.MAX_MARKER_BYTES)
    except FileTooLargeError as exc:
        _log_refusal(graphs / MARKER, str(exc))
        return None
    except OSError:
        return None
    try:
        return _marker(storage.load_json(data))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def marker_refusal(run_dir: Path) -> str | None:
    """Why run `run_dir`'s marker was refused (it is over the size limit), or None: for a
    list of runs that shows such a run anyway."""
    path = run_dir / GRAPHS_DIR / MARKER
    try:
        size = os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return None
    if size <= storage.MAX_MARKER_BYTES:
        return None
    return (
        f"render marker {path.name} is {size:,} bytes, over the {storage.MAX_MARKER_BYTES:,} limit"
    )


def _marker(doc: Any) -> RenderedMarker:
    entry = dict(doc["entry"])
    if "curves" in entry:
        entry["curves"] = index_curves(entry["curves"])
    return RenderedMarker(
        str(doc["fingerprint"]), str(doc["status"]), entry, doc.get("daemon") is True
    )


def write_marker(run_dir: Path, run_fd: int, marker: RenderedMarker) -> None:
    """Record `marker` in the run whose folder `run_fd` holds (opened by the render lock)."""
    entry = marker.entry
    if "curves" in entry:
        entry = {**entry, "curves": index_curves(entry["curves"])}
    doc = {
        "fingerprint": marker.fingerprint,
        "status": marker.status,
        "entry": entry,
        "daemon": marker.by_daemon,
    }
    graphs = run_dir / GRAPHS_DIR
    try:
        with storage.opened_dir(graphs, dir_fd=run_fd) as graphs_fd:
            storage.atomic_write(graphs / MARKER, json.dumps(doc).encode(), dir_fd=graphs_fd)
    except OSError as exc:
        raise RunDirectoryError(run_dir, f"cannot record the render ({exc})") from exc


def index_curves(curves: Any) -> dict[str, list[list[float]]]:
    """A marker's overview curves as an index row may hold them: `{loss: [[step, value],
    ...]}` with finite numbers only, each loss thinned evenly to `MAX_CURVE_POINTS` (first and
    last kept), and losses kept in order while their JSON fits `MAX_CURVES_BYTES`. Anything
    else a hand-edited marker holds is left out."""
    if not isinstance(curves, dict):
        return {}
    valid = {
        str(name)[:MAX_CURVE_NAME]: _thinned([point for point in points if _is_point(point)])
        for name, points in curves.items()
        if isinstance(points, list)
    }
    if _most_json(valid) <= MAX_CURVES_BYTES:  # as always: no need to write them to count
        return valid
    kept: dict[str, list[list[float]]] = {}
    size = 2  # {}
    for name, points in curves.items():
        if not isinstance(points, list):
            continue
        curve = _thinned([point for point in points if _is_point(point)])
        text = json.dumps({str(name)[:MAX_CURVE_NAME]: curve}, separators=(",", ":"))
        if size + len(text) - 1 > MAX_CURVES_BYTES:  # the braces counted once, a comma added
            break
        kept[str(name)[:MAX_CURVE_NAME]] = curve
        size += len(text) - 1
    return kept


def _most_json(curves: dict[str, list[list[float]]]) -> int:
    """The most characters `curves` can take as compact JSON: a name's character escaped
    takes at most 12 (a surrogate pair), a point at most `_MOST_POINT_JSON` with its comma."""
    return 2 + sum(len(name) * 12 + 6 + len(points) * _MOST_POINT_JSON for name, points in
                   curves.items())  # fmt: skip


def _is_point(point: Any) -> bool:
    # Type checks first, isinstance only for the rare subclass: a daemon's first start bounds
    # 100,000 markers' 180 points each.
    return (
        (type(point) is list or isinstance(point, list))
        and len(point) == 2
        and _is_number(point[0])
        and _is_number(point[1])
    )


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return bool(-(2**63) < value < 2**63)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _thinned(points: list[list[float]]) -> list[list[float]]:
    if len(points) <= MAX_CURVE_POINTS:
        return points
    last = len(points) - 1
    return [points[round(i * last / (MAX_CURVE_POINTS - 1))] for i in range(MAX_CURVE_POINTS)]


_refusals: OrderedDict[tuple[str, int, int], None] = OrderedDict()
_refusals_lock = threading.Lock()


def _log_refusal(path: Path, reason: str) -> None:
    """Log that the marker at `path` was refused, once for each version of it (its size and
    modification time): `serve` reads every marker every few seconds."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return
    version = (str(path), info.st_size, info.st_mtime_ns)
    with _refusals_lock:
        if version in _refusals:
            return
        _refusals[version] = None
        while len(_refusals) > _LOGGED_REFUSALS:
            _refusals.popitem(last=False)
    logger.warning(
        "%s: refused, the run is listed without it", reason, extra={"event": "marker_refused"}
    )
