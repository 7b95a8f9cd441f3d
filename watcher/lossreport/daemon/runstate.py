"""What the daemon knows about one run, and the pure decision of whether to render it.

A run's source (sources/) gives a fingerprint of its inputs. After each render the daemon
stores the fingerprint it rendered in the run's render marker (runformat/marker.py), so a scan
(at start-up, or every --rescan-every seconds) re-renders only runs whose inputs changed,
however many there are and however often the daemon restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .. import runformat, sources
from ..runformat import STALLED, UNKNOWN, RenderedMarker


@dataclass(frozen=True)
class RunState:
    """A snapshot of a run directory's inputs, taken without reading any shard."""

    run_dir: Path
    status: str | None  # None when run.json is missing or malformed
    heartbeat: datetime | None
    fingerprint: str
    silence_finishes: bool = False  # a writer with no end of its own (sources.Inputs)

    def display_status(self, now: datetime, stale_after: float) -> str | None:
        """completed/failed; "stalled" for a silent running run (completed, for a writer that
        records no end); None while it runs."""
        if self.status in runformat.FINISHED_STATUSES:
            return self.status
        if self.status is None:
            return UNKNOWN
        if self.heartbeat is not None and (now - self.heartbeat).total_seconds() > stale_after:
            return runformat.COMPLETED if self.silence_finishes else STALLED
        return None


def read_state(run_dir: Path, source: sources.Source | None = None) -> RunState:
    """The run's inputs as its source (found unless given) sees them; never raises for a
    broken run: whatever is wrong is for the render to report."""
    inputs = (source or sources.source_of(run_dir)).inputs(run_dir)
    return RunState(
        run_dir, inputs.status, inputs.heartbeat, inputs.fingerprint, inputs.silence_finishes
    )


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
