"""What the daemon knows about one run, and the pure decision of whether to render it.

A run's source (sources/) gives a fingerprint of its inputs. After each render the daemon
stores the fingerprint it rendered in the run's render marker (runformat/marker.py), so a scan
(at start-up, or every --rescan-every seconds) re-renders only runs whose inputs changed,
however many there are and however often the daemon restarts.

`watch --once` is a one-shot command: the user asks for reports of what exists. A run whose
writer records no end (TensorBoard, Lightning, ...: `silence_finishes`) never says it completed,
so waiting for --stale-after of silence, as the daemon does, would render nothing of fresh logs.
With `--once-foreign live` (the default) such a run is rendered as it is now, as running (and
rendered again, as completed, by a later `--once` once it has been silent for --stale-after),
unless its files were written in the last WRITING_SECONDS: it is being written now, and is
left for the next `--once`. Every run `--once` leaves is named in a log line saying why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import runformat, sources, storage
from ..clock import format_duration
from ..runformat import RUNNING, STALLED, UNKNOWN, RenderedMarker
from ..sources.native import stat_fingerprint
from .options import ONCE_FINISHED, ONCE_LIVE

# A run of another tool's whose files changed this recently is being written now: a --once
# pass leaves it (a half-written CSV or JSON reads as damaged) for the next one.
WRITING_SECONDS = 2.0


@dataclass(frozen=True)
class RunState:
    """A snapshot of a run directory's inputs, taken without reading any shard."""

    run_dir: Path
    status: str | None  # None when run.json is missing or malformed
    heartbeat: datetime | None
    fingerprint: str
    silence_finishes: bool = False  # a writer with no end of its own (sources.Inputs)
    writer: str = sources.NATIVE.name  # the source's name: "tensorboard", "lightning", ...

    def display_status(
        self, now: datetime, stale_after: float, once_foreign: str | None = None
    ) -> str | None:
        """completed/failed; "stalled" for a silent running run (completed, for a writer that
        records no end); None while it runs. `once_foreign`: `watch --once`'s rule for
        writers with no end (module docstring); None for the daemon."""
        if self.status in runformat.FINISHED_STATUSES:
            return self.status
        if self.status is None:
            return UNKNOWN
        silent = self.silent_for(now)
        if silent is not None and silent > stale_after:
            return runformat.COMPLETED if self.silence_finishes else STALLED
        if once_foreign == ONCE_LIVE and self.silence_finishes:
            return RUNNING if silent is None or silent > WRITING_SECONDS else None
        return None

    def silent_for(self, now: datetime) -> float | None:
        """Seconds since the writer last showed it was alive; None if it never did."""
        return None if self.heartbeat is None else (now - self.heartbeat).total_seconds()


def read_state(run_dir: Path, source: sources.Source | None = None) -> RunState:
    """The run's inputs as its source (found unless given) sees them; never raises for a
    broken run: whatever is wrong is for the render to report."""
    source = source or sources.source_of(run_dir)
    inputs = source.inputs(run_dir)
    return RunState(
        run_dir,
        inputs.status,
        inputs.heartbeat,
        inputs.fingerprint,
        inputs.silence_finishes,
        source.name,
    )


def as_rendered(
    run_dir: Path, marker: RenderedMarker | None, marker_file: os.stat_result | None
) -> RunState | None:
    """A finished run of lossreport's own as its last render (`marker`; `marker_file`, the
    lstat of its file taken before it was read) saw it, where its inputs are still those
    (their fingerprint: names, sizes and modification times, from lstats alone), run.json has
    not changed in any way since the marker was written (its change time, which no one can
    set back: an edit in place with its time put back by `touch -r` is seen) and not too
    recently for its stat to be trusted (`storage.RACY_NS`): then run.json says what it said
    then and is not read again. None otherwise, and the run is read as usual. A scan asks
    this of each run with a marker: a first start parses no run.json of a run rendered as it
    is (100,000 of them)."""
    if marker is None or marker_file is None or marker.status not in runformat.FINISHED_STATUSES:
        return None
    fingerprint, run_file = stat_fingerprint(run_dir)
    if run_file is None or fingerprint != marker.fingerprint:
        return None
    changed = run_file.st_ctime_ns
    if changed > marker_file.st_mtime_ns or storage.changed_too_recently(changed):
        return None
    return RunState(run_dir, marker.status, None, fingerprint)


def render_reason(
    state: RunState,
    marker: RenderedMarker | None,
    now: datetime,
    stale_after: float,
    once_foreign: str | None = None,
) -> str | None:
    """Why this run needs a render now, or None. Pure: a function of the two snapshots."""
    status = state.display_status(now, stale_after, once_foreign)
    if status is None:
        return None
    if marker is None:
        return f"{status}, never rendered"
    if marker.fingerprint != state.fingerprint:
        return f"{status}, inputs changed"
    if marker.status != status:
        return f"{status}, was {marker.status}"
    return None


def once_left(state: RunState, now: datetime, stale_after: float, once_foreign: str) -> str:
    """Why `watch --once` leaves a run it does not render (display_status None), for the
    run's log line: what wrote it, when, and what would render it."""
    silent = state.silent_for(now)
    if not state.silence_finishes:
        beat = "" if silent is None else f", heartbeat {silent:.0f} s ago"
        return (
            f"running{beat}; rendered once it completes, fails or is silent for --stale-after "
            f"({format_duration(stale_after)})"
        )
    written = f"written by {state.writer}" + (
        "" if silent is None else f", last write {silent:.0f} s ago"
    )
    if once_foreign == ONCE_FINISHED:
        return (
            f"{written}; treated as running until --stale-after ({format_duration(stale_after)}) "
            f"passes; --once-foreign={ONCE_LIVE} renders it now"
        )
    return f"{written}: being written now; not rendered, run --once again when it is quiet"
