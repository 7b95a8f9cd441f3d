"""What the daemon and the renderer ask of a run, whatever wrote it.

A source knows one kind of run folder: lossreport's own format (native.py) or another tool's
logs (tensorboard.py, lightning.py, hf_trainer.py, mlflow.py). It answers three questions, and
nothing else in lossreport reads a run's inputs:

- is this folder a run of mine?
- what are its inputs now (a cheap fingerprint, and the status and heartbeat), without reading
  its losses: the daemon asks this of every run every few seconds;
- read it: its record (a `RunRecord`, as run.json holds one) and its losses (a `LossData`:
  `step` int64, `wall_time` float64, one float64 column per loss, one row per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ..runformat import COMPLETED, RUNNING, LossData, RunRecord

# How long a writer that records no end must be silent for its run to count as finished when
# no daemon says otherwise (`lossreport render`); the daemon's --stale-after defaults to it.
SILENCE_FINISHES_SECS = 600.0


@dataclass(frozen=True)
class Inputs:
    """A run's inputs as they are now, found without reading any losses."""

    fingerprint: str  # changes whenever an input does; the daemon re-renders on a change
    status: str | None  # running, completed or failed; None when the record cannot be read
    heartbeat: datetime | None  # when the writer last showed it was alive (or last wrote)
    # How `status` was decided, for the report: None where the writer records its own status.
    status_rule: str | None = None
    # For writers that record no end (TensorBoard, CSV logs): a running run whose heartbeat is
    # older than --stale-after is taken as finished (completed) rather than stalled, and is
    # rendered again if data arrives later.
    silence_finishes: bool = False


def quiet_status(inputs: Inputs, now: datetime, silence: float = SILENCE_FINISHES_SECS) -> str:
    """The status of a run whose writer records no end, for readers without a daemon's
    settings (`render`, `show`): finished once silent for `silence` seconds."""
    if inputs.heartbeat is None or (now - inputs.heartbeat).total_seconds() <= silence:
        return RUNNING
    return COMPLETED


class Source(Protocol):
    """One kind of run folder. Methods take the run's folder; none follows a link inside it
    or writes into it."""

    name: str  # a short id: "lossreport", "tensorboard", ...
    label: str  # what the report says wrote the run: "TensorBoard event files", ...
    # Whether a run folder of this kind may hold other runs in its subfolders (TensorBoard's
    # add_scalars writes one per tag): the discovery walk then goes on below it.
    nests_runs: bool

    def is_run(self, path: Path) -> bool:
        """Whether `path` is a run folder this source reads (cheap: stats, no reads)."""
        ...

    def inputs(self, run_dir: Path) -> Inputs:
        """The run's inputs now. Never raises for a broken run: that is the render's to report."""
        ...

    def read_record(self, run_dir: Path, cache: Path | None = None) -> RunRecord:
        """The run's metadata. Raises MalformedRunFileError (named, with why) when it cannot be
        read; the renderer then renders with defaults and names the problem.

        `cache`: as for `read_losses` (the same folder): a source whose record takes a long
        log to find (W&B) keeps it there, so that a new process reads only the new bytes."""
        ...

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every logged row; what could not be read is skipped and named in `skipped`.

        `cache`: a folder lossreport owns (`.lossreport-cache/` beside the report) where a
        source may keep what it has converted, so that the next read parses only new bytes;
        None to read everything afresh. A source that keeps nothing ignores it."""
        ...
