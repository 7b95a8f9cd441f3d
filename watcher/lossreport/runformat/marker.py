"""The render marker, `loss_graphs/.lossreport-rendered.json`: what the last render of a run saw
(its inputs' fingerprint and status) and made (the runs index's row for it).

The daemon compares it with a run's inputs to decide whether to render again; `lossreport
serve` and the daemon build the runs index from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..errors import RunDirectoryError
from .layout import GRAPHS_DIR, MARKER


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
    owner can edit it: anything unexpected reads as "never rendered")."""
    graphs = run_dir / GRAPHS_DIR
    if not storage.is_real_dir(graphs):
        return None
    return storage.read_json_or(graphs / MARKER, storage.MAX_MARKER_BYTES, _marker, None)


def _marker(doc: Any) -> RenderedMarker | None:
    return RenderedMarker(
        str(doc["fingerprint"]), str(doc["status"]), dict(doc["entry"]), doc.get("daemon") is True
    )


def write_marker(run_dir: Path, run_fd: int, marker: RenderedMarker) -> None:
    """Record `marker` in the run whose folder `run_fd` holds (opened by the render lock)."""
    doc = {
        "fingerprint": marker.fingerprint,
        "status": marker.status,
        "entry": marker.entry,
        "daemon": marker.by_daemon,
    }
    graphs = run_dir / GRAPHS_DIR
    try:
        with storage.opened_dir(graphs, dir_fd=run_fd) as graphs_fd:
            storage.atomic_write(graphs / MARKER, json.dumps(doc).encode(), dir_fd=graphs_fd)
    except OSError as exc:
        raise RunDirectoryError(run_dir, f"cannot record the render ({exc})") from exc
