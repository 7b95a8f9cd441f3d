"""The background half of a run: a buffer of logged rows and the thread that writes them out.

`Run.log` appends `{loss: value, "step": step, "wall_time": t}` rows to `rows`, a deque whose
appends and pops are atomic, so the hot path takes no lock. The flusher thread drains it
every `flush_every` rows (when woken) or `flush_secs` seconds, turns the batch into an Arrow
table (copying accelerator tensors to the host in one transfer per device), writes one shard
and refreshes the heartbeat (every runformat.IDLE_HEARTBEAT_SECS when there is nothing to write). A
failed write (a full disk, a lost mount) never stops training: the table is kept and written
with the next flush, up to `max_unwritten_rows`.

Each flusher names its shards with a random writer token, so two processes writing one run at
once (a job started twice) each keep all their rows instead of replacing each other's shards.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from .. import runformat, storage
from .values import DeviceTensors

logger = logging.getLogger(__name__)

Row = dict[str, Any]

DEFAULT_MAX_UNWRITTEN_ROWS = 2_000_000


class ShardFlusher:
    def __init__(
        self,
        folder: storage.RunFolder,
        *,
        rank: int | None,
        flush_secs: float,
        heartbeat: Callable[[], None],
        max_unwritten_rows: int = DEFAULT_MAX_UNWRITTEN_ROWS,
    ) -> None:
        self.rows: deque[Row] = deque()
        self._columns: list[str] = []
        self.dropped_rows = 0
        self._run_dir = folder
        self._rank = rank
        self._flush_secs = flush_secs
        self._heartbeat = heartbeat
        self._max_unwritten_rows = max_unwritten_rows
        self._seq = runformat.next_shard_seq(folder, rank)
        self._writer = new_writer_token()
        self._unwritten: list[pa.Table] = []
        self._failing = False
        self._last_beat = time.monotonic()  # start_run has just written run.json
        # Re-entrant: a SIGTERM handler runs on the main thread and may interrupt a flush there.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lossreport-flusher", daemon=True)
        # pyarrow imports pandas lazily on its first array build; do it here, not mid-training
        # or in an atexit flush, where importing fails once the interpreter is shutting down.
        pa.array([0.0])

    def start(self) -> None:
        self._thread.start()

    def add_column(self, name: str) -> None:
        """Called by the hot path the first time it sees a loss name."""
        self._columns.append(name)

    def wake(self) -> None:
        """Ask the thread to flush now (called by the hot path once the buffer is full)."""
        self._wake.set()

    def flush(self) -> bool:
        """Write every buffered row and refresh the heartbeat; False if rows are still unwritten."""
        return self._flush(beat=True)

    def _flush(self, *, beat: bool) -> bool:
        """Write what is buffered; refresh the heartbeat with a shard, when `beat`, or when the
        last one is runformat.IDLE_HEARTBEAT_SECS old. A trainer with nothing to write
        (evaluating, paused) rewrites run.json every 30 s, not every `flush_secs`: 200 idle
        runs beating every 10 s kept a daemon at 2% of a core, and a shared filesystem busy."""
        with self._lock:
            pending = bool(self.rows or self._unwritten)
            written = self._write_pending()
            idle_for = time.monotonic() - self._last_beat
            if beat or pending or idle_for >= runformat.IDLE_HEARTBEAT_SECS:
                try:
                    self._heartbeat()
                    self._last_beat = time.monotonic()
                except OSError as exc:
                    logger.warning("%s: could not refresh run.json: %s", self._run_dir, exc)
            return written

    def set_aside(self, stamp: str) -> int:
        """Write every buffered row, then move this rank's shards aside (runformat's
        `set_aside_shards`), with no flush in between. Returns how many were moved.

        Raises:
            OSError: the shards could not be moved, or rows could not be written (then
                nothing is moved: a cleared history never leaves older rows behind).
        """
        with self._lock:
            if not self._write_pending():
                raise OSError(f"{self.unwritten_rows} logged rows cannot be written")
            return runformat.set_aside_shards(self._run_dir, stamp, self._rank)

    def stop(self) -> bool:
        """Stop the thread and flush what is left; False if rows could not be written."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            return self._write_pending()

    @property
    def unwritten_rows(self) -> int:
        return len(self.rows) + sum(int(table.num_rows) for table in self._unwritten)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._flush_secs)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._flush(beat=False)
            except Exception:  # the thread must outlive any one bad batch
                logger.exception("%s: flush failed", self._run_dir)

    def _write_pending(self) -> bool:
        rows = self.rows
        batch = [rows.popleft() for _ in range(len(rows))]
        if batch:
            if DeviceTensors.logged:
                _copy_device_values_to_host(batch)
            self._unwritten.append(rows_to_table(batch, list(self._columns)))
        if not self._unwritten:
            return True
        table = pa.concat_tables(self._unwritten, promote_options="permissive")
        try:
            self._write_shard(table)
        except OSError as exc:
            self._keep_unwritten(table, exc)
            return False
        if self._failing:
            logger.warning("%s: writing shards again after an error", self._run_dir)
            self._failing = False
        self._seq += 1
        self._unwritten = []
        return True

    def _write_shard(self, table: pa.Table) -> None:
        try:
            runformat.write_shard(self._run_dir, self._seq, table, self._rank, self._writer)
        except FileExistsError as exc:  # another writer drew the same token: take a new one
            self._writer = new_writer_token()
            logger.warning("%s; writing as %s instead", exc, self._writer)
            runformat.write_shard(self._run_dir, self._seq, table, self._rank, self._writer)

    def _keep_unwritten(self, table: pa.Table, exc: OSError) -> None:
        if not self._failing:
            logger.error("%s: cannot write losses, keeping them in memory: %s", self._run_dir, exc)
            self._failing = True
        excess = table.num_rows - self._max_unwritten_rows
        if excess > 0:
            self.dropped_rows += excess
            logger.error(
                "%s: %d rows dropped: more than %d rows could not be written",
                self._run_dir,
                excess,
                self._max_unwritten_rows,
            )
            table = table.slice(excess)
        self._unwritten = [table]


def new_writer_token() -> str:
    """Eight random hex digits: two writers of one run draw the same with odds of 1 in 2**32."""
    return secrets.token_hex(4)


def rows_to_table(batch: list[Row], loss_names: list[str]) -> pa.Table:
    """One table for a batch of float rows: a loss missing from a row is null, NaN stays NaN."""
    schema = pa.schema(
        [(runformat.STEP, pa.int64()), (runformat.WALL_TIME, pa.float64())]
        + [(name, pa.float64()) for name in loss_names]
    )
    return pa.Table.from_pylist(batch, schema=schema)


def _copy_device_values_to_host(batch: list[Row]) -> None:
    """Replace accelerator tensors by floats: one stack and one copy per device and dtype."""
    groups: dict[tuple[Any, Any], list[tuple[Row, str]]] = {}
    for row in batch:
        for name, value in row.items():
            if type(value) is not float and type(value) is not int and value is not None:
                groups.setdefault((value.device, value.dtype), []).append((row, name))
    if not groups:
        return
    torch: Any = sys.modules["torch"]
    for (device, _dtype), places in groups.items():
        stacked = torch.stack([row[name] for row, name in places]).to(torch.float64)
        numbers = _to_host(torch, device, stacked).tolist()
        for (row, name), number in zip(places, numbers, strict=True):
            row[name] = number


def _to_host(torch: Any, device: Any, stacked: Any) -> Any:
    if device.type != "cuda":
        return stacked.cpu()
    host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
    host.copy_(stacked, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()  # waits in this thread only; the training loop never blocks on it
    return host
