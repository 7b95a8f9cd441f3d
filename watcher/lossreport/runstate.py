"""What the daemon knows about one run, and the pure decision of whether to render it.

A run's *inputs* are run.json and its shards; their names, sizes and modification times make a
fingerprint. After each render the daemon stores the fingerprint it rendered in a marker inside
`loss_graphs/`, so a scan (at start-up, or every --rescan-every seconds) re-renders only runs
whose inputs changed, however many there are and however often the daemon restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import rundir, storage
from .errors import RunDirectoryError

MARKER = ".lossreport-rendered.json"
STALLED = "stalled"


@dataclass(frozen=True)
class RunState:
    """A snapshot of a run directory's inputs, taken without reading any shard."""

    run_dir: Path
    status: str | None  # None when run.json is missing or malformed
    heartbeat: datetime | None
    fingerprint: str

    def display_status(self, now: datetime, stale_after: float) -> str | None:
        """completed/failed; "stalled" for a silent running run; None while it runs."""
        if self.status in rundir.FINISHED_STATUSES:
            return self.status
        if self.status is None:
            return "unknown"
        if self.heartbeat is not None and (now - self.heartbeat).total_seconds() > stale_after:
            return STALLED
        return None


def read_state(run_dir: Path) -> RunState:
    """Stat the inputs (never following a link) and read run.json (bounded); never raises for
    a broken run: whatever is wrong is for the render to report."""
    entries: list[str] = []
    status: str | None = None
    heartbeat: datetime | None = None
    try:
        run_file = os.lstat(run_dir / rundir.RUN_FILE)
    except OSError:
        pass
    else:
        entries.append(f"run.json:{run_file.st_size}:{run_file.st_mtime_ns}")
        key = (run_file.st_ino, run_file.st_size, run_file.st_mtime_ns)
        status, heartbeat = _status_and_heartbeat(run_dir, key)
    losses = run_dir / rundir.LOSSES_DIR
    if storage.is_real_dir(losses):
        try:
            for entry in sorted(os.scandir(losses), key=lambda e: e.name):
                if rundir.parse_shard_name(entry.name) is not None:
                    info = entry.stat(follow_symlinks=False)
                    entries.append(f"{entry.name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            pass
    elif storage.lexists(losses):
        entries.append("losses:not-a-folder")
    return RunState(run_dir, status, heartbeat, "|".join(entries))


@lru_cache(maxsize=16384)
def _status_and_heartbeat(
    run_dir: Path, key: tuple[int, int, int]
) -> tuple[str | None, datetime | None]:
    """run.json's status and heartbeat, parsed once per version of the file (`key`: inode,
    size, mtime): a daemon looks at every running run every few seconds, and a run.json can
    be megabytes."""
    try:
        record = rundir.read_run_file(run_dir)
        return record.status, rundir.parse_time(record.heartbeat_at)
    except (OSError, ValueError):  # RunDirectoryError (a malformed run.json) is an OSError
        return None, None


@dataclass(frozen=True)
class RenderedMarker:
    """What the last render of a run saw and made (kept for the runs index)."""

    fingerprint: str
    status: str
    entry: dict[str, Any]


def read_marker(run_dir: Path) -> RenderedMarker | None:
    """The last render's marker, or None when there is none or it is not one of ours (the run's
    owner can edit it: anything unexpected reads as "never rendered")."""
    graphs = run_dir / rundir.GRAPHS_DIR
    if not storage.is_real_dir(graphs):
        return None
    try:
        doc = json.loads(storage.read_bytes(graphs / MARKER, storage.MAX_MARKER_BYTES))
        return RenderedMarker(str(doc["fingerprint"]), str(doc["status"]), dict(doc["entry"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def write_marker(run_dir: Path, run_fd: int, marker: RenderedMarker) -> None:
    """Record `marker` in the run whose folder `run_fd` holds (opened by the render lock)."""
    doc = {"fingerprint": marker.fingerprint, "status": marker.status, "entry": marker.entry}
    graphs = run_dir / rundir.GRAPHS_DIR
    try:
        with storage.opened_dir(graphs, dir_fd=run_fd) as graphs_fd:
            storage.atomic_write(graphs / MARKER, json.dumps(doc).encode(), dir_fd=graphs_fd)
    except OSError as exc:
        raise RunDirectoryError(run_dir, f"cannot record the render ({exc})") from exc


def render_reason(
    state: RunState, marker: RenderedMarker | None, now: datetime, stale_after: float
) -> str | None:
    """Why this run needs a render now, or None. Pure: a function of the two snapshots."""
    status = state.display_status(now, stale_after)
    if status is None:
        return None
    if marker is None:
        return f"{status}, never rendered"
    if marker.fingerprint != state.fingerprint:
        return f"{status}, inputs changed"
    if marker.status != status:
        return f"{status}, was {marker.status}"
    return None
