"""A run's losses at full resolution, for the zoomable charts: any step range, reduced to what
a chart of `width` pixel columns can show.

Each pixel column gets the lowest and the highest value in it, in step order, so a spike in a
million steps is drawn however far out the chart is; a range of at most two points per
column comes back whole, every step. A run is read once (its source's `read_losses`) and kept
as numpy arrays in a cache bounded by bytes (`serve --cache-mb`), least recently used dropped
first; it is read again when its inputs change, looked at no more than every few seconds. A
run with a file past its read budget (storage.budget) is not shown at all (ReadBudgetError,
remembered until its inputs change): part of a run's curve would pass for all of it. A
request on a cached run is a binary search and one reduction: milliseconds for a million
steps.

Reading a run can take seconds and, for a big JSON log, many times its size in memory while
it lasts: requests for a run being read wait for that read instead of starting their own,
and at most `MAX_LOADS` runs are read at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import runformat, sources
from ..errors import ReadBudgetError
from ..runformat import STEP

logger = logging.getLogger(__name__)

CACHE_BYTES = 512 * 2**20
RECHECK_SECONDS = 2.0  # a growing run's inputs are looked at no more often than this
MAX_LOADS = 2  # runs read at once; requests for others wait


@dataclass(frozen=True)
class Series:
    """One loss: the steps it was logged at (sorted) and its values there, NaN kept."""

    steps: np.ndarray
    values: np.ndarray


@dataclass
class RunColumns:
    """One run's losses as arrays: `steps`, every step of the run (sorted), and each loss's
    own steps: a loss that starts late is not NaN before, it is absent."""

    fingerprint: str
    steps: np.ndarray
    losses: dict[str, Series]
    checked: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        arrays = {id(self.steps): self.steps}  # a loss logged at every step shares `steps`
        for series in self.losses.values():
            arrays |= {id(series.steps): series.steps, id(series.values): series.values}
        return int(sum(array.nbytes for array in arrays.values()))


def columns_of(table: pa.Table, fingerprint: str) -> RunColumns:
    steps = table.column(STEP).to_numpy().astype(np.int64)
    losses = {}
    for name in table.column_names:
        if name in runformat.RESERVED_COLUMNS:
            continue
        column = table.column(name)
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if column.null_count:  # steps where this loss was not logged (null, not NaN)
            logged = pc.is_valid(column).to_numpy(zero_copy_only=False)
            losses[name] = Series(steps[logged], values[logged])
        else:
            losses[name] = Series(steps, values)
    return RunColumns(fingerprint, steps, losses)


@dataclass
class _Load:
    """A run being read: the requests that want it wait for `done`, then take its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    columns: RunColumns | None = None
    error: BaseException | None = None


class SeriesCache:
    """Loaded runs, least recently used dropped first once over `max_bytes` (a run bigger
    than that on its own is still kept, alone: its page must work). One read of a run at a
    time, shared by every request that wants it."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._runs: OrderedDict[Path, RunColumns] = OrderedDict()
        self._loading: dict[Path, _Load] = {}
        self._refused: dict[Path, tuple[str, ReadBudgetError]] = {}  # by inputs' fingerprint
        self._lock = threading.Lock()
        self._loads = threading.BoundedSemaphore(MAX_LOADS)

    def columns(self, run_dir: Path) -> RunColumns | None:
        """The run's columns, read now if not cached or changed; None when no source reads
        it. The caller checks that what was read was the run's (run_view.read_run). Raises
        ReadBudgetError, naming a file and the budget, for a run that cannot be read whole
        within its read budget."""
        with self._lock:
            cached = self._runs.get(run_dir)
            if cached is not None and time.monotonic() - cached.checked < RECHECK_SECONDS:
                self._runs.move_to_end(run_dir)
                return cached
            load = self._loading.get(run_dir)
            reading = load is None
            if load is None:
                load = self._loading[run_dir] = _Load()
        if not reading:
            load.done.wait()
            if load.error is not None:
                raise load.error
            return load.columns
        try:
            load.columns = self._read(run_dir, cached)
        except BaseException as exc:
            load.error = exc
            raise
        finally:
            with self._lock:
                del self._loading[run_dir]
            load.done.set()
        return load.columns

    def _read(self, run_dir: Path, cached: RunColumns | None) -> RunColumns | None:
        source = sources.find(run_dir)
        if source is None:
            return None
        fingerprint = source.inputs(run_dir).fingerprint
        if cached is not None and cached.fingerprint == fingerprint:
            cached.checked = time.monotonic()
            return cached
        refused = self._refused.get(run_dir)
        if refused is not None and refused[0] == fingerprint:
            raise refused[1]
        with self._lock:  # changed: its old columns go now, not after the new are read
            self._runs.pop(run_dir, None)
        with self._loads:
            started = time.monotonic()
            data = source.read_losses(run_dir)
            if data.over_budget:
                more = len(data.over_budget) - 1
                error = ReadBudgetError(
                    run_dir,
                    f"not shown: {data.over_budget[0]}"
                    + (f" (and {more} more files)" if more else ""),
                )
                with self._lock:
                    self._refused[run_dir] = (fingerprint, error)
                raise error
            loaded = columns_of(data.table, fingerprint)
        logger.debug("read %s for charts in %.2fs", run_dir, time.monotonic() - started)
        with self._lock:
            self._runs[run_dir] = loaded
            self._runs.move_to_end(run_dir)
            while len(self._runs) > 1 and self.nbytes > self.max_bytes:
                self._runs.popitem(last=False)
        return loaded

    @property
    def nbytes(self) -> int:
        return sum(run.nbytes for run in self._runs.values())

    def __contains__(self, run_dir: Path) -> bool:
        return run_dir in self._runs

    def forget(self, run_dir: Path) -> None:
        with self._lock:
            self._runs.pop(run_dir, None)
            self._refused.pop(run_dir, None)


def window(
    steps: np.ndarray, values: np.ndarray, start: float, end: float, width: int
) -> dict[str, Any]:
    """The points of one loss between steps `start` and `end` (inclusive) for a chart `width`
    columns wide: all of them when there are at most 2 per column, else each column's minimum
    and maximum in step order. NaN and infinities are left out and counted (`nonfinite`)."""
    first = int(np.searchsorted(steps, start, side="left"))
    last = int(np.searchsorted(steps, end, side="right"))
    in_range_steps = steps[first:last]
    in_range = values[first:last]
    finite = np.isfinite(in_range)
    nonfinite = int(in_range.size - np.count_nonzero(finite))
    if nonfinite:  # else no copy
        in_range_steps, in_range = in_range_steps[finite], in_range[finite]
    exact = in_range.size <= 2 * width
    if exact:
        picked = np.arange(in_range.size)
    else:
        # Column of each point; the first point of each column starts a segment.
        span = max(float(end) - float(start), 1.0)
        column = np.minimum(((in_range_steps - start) / span * width).astype(np.int64), width - 1)
        starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
        lowest = _arg_reduce(in_range, starts, np.minimum)
        highest = _arg_reduce(in_range, starts, np.maximum)
        picked = np.unique(np.concatenate([lowest, highest]))  # sorted: step order
    return {
        "steps_in_range": int(last - first),
        "exact": bool(exact),
        "nonfinite": nonfinite,
        "points": [
            [step, value]
            for step, value in zip(
                in_range_steps[picked].tolist(), in_range[picked].tolist(), strict=True
            )
        ],
    }


def _arg_reduce(values: np.ndarray, starts: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """For each segment beginning at `starts`, the index of its reduced (min or max) value."""
    extreme = reduce.reduceat(values, starts)
    segment = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, values.size]))
    hits = np.flatnonzero(values == extreme[segment])
    # The first hit of each segment.
    first_hit = np.r_[True, segment[hits][1:] != segment[hits][:-1]]
    return hits[first_hit]
