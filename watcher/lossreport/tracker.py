"""The trainer-side API: `start_run` and the `Run` it returns.

`Run.log` is on the training loop's hot path, so it checks names once, converts only what is
not already a float, appends one tuple to a lock-free buffer and returns; writing is the
flusher's job (flusher.py) and file formats are rundir.py's.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from time import time as _now
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import rundir
from .errors import InvalidLossError, LossReportError, RunClosedError, RunDirectoryError
from .flusher import DEFAULT_MAX_UNWRITTEN_ROWS, ShardFlusher
from .rundir import STEP, WALL_TIME
from .values import check_loss_name, check_step, coerce_loss_value

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_EVERY = 1000
DEFAULT_FLUSH_SECS = 10.0
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def start_run(
    runs_dir: str | os.PathLike[str],
    *,
    model: str,
    hook: str,
    architecture: str | None = None,
    config: dict[str, Any] | None = None,
    run_id: str | None = None,
    flush_every: int = DEFAULT_FLUSH_EVERY,
    flush_secs: float = DEFAULT_FLUSH_SECS,
    all_ranks: bool = False,
    max_unwritten_rows: int = DEFAULT_MAX_UNWRITTEN_ROWS,
) -> Run:
    """Create (or resume, when `run_id` names an existing run) a run directory under `runs_dir`.

    Args:
        model, hook, architecture, config: recorded in run.json and shown in reports.
        run_id: the directory name; by default `{model}_{hook}_{UTC time}_{random}`.
        flush_every, flush_secs: write a shard after this many steps or seconds.
        all_ranks: under torch.distributed, let every rank write (shards carry the rank);
            by default only rank 0 writes and the other ranks' `log` does nothing.
        max_unwritten_rows: while shards cannot be written (a full disk, a lost mount), rows
            wait in memory up to this many; older ones are dropped past it and counted.

    Raises:
        RunDirectoryError: `runs_dir` or the run directory cannot be written, now rather than
            at the first flush.
    """
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
        raise ValueError(f"flush_every must be a positive integer, got {flush_every!r}")
    if not flush_secs > 0:
        raise ValueError(f"flush_secs must be positive, got {flush_secs!r}")
    settings: dict[str, Any] = {
        "flush_every": flush_every,
        "flush_secs": flush_secs,
        "max_unwritten_rows": max_unwritten_rows,
    }
    rank = _distributed_rank()
    run_id = rundir.clean_name(run_id if run_id is not None else _agreed_run_id(model, hook))
    path = Path(runs_dir) / run_id
    if rank not in (None, 0) and not all_ranks:
        return Run(path, None, rank=rank, **settings)
    _prepare_directory(path)
    if rank not in (None, 0):  # every rank writes shards; rank 0 alone owns run.json
        return Run(path, None, rank=rank, writes_shards=True, **settings)
    record = _new_or_resumed_record(path, run_id, model, hook, architecture, config or {})
    try:
        rundir.write_run_file(path, record)
    except OSError as exc:
        raise RunDirectoryError(path, f"cannot write run.json ({exc.strerror or exc})") from exc
    shard_rank = rank if all_ranks and rank is not None else None
    return Run(path, record, rank=shard_rank, writes_shards=True, **settings)


class Run:
    """One training run's loss log. Use it as a context manager so it is always closed."""

    def __init__(
        self,
        path: Path,
        record: rundir.RunRecord | None,
        *,
        flush_every: int,
        flush_secs: float,
        rank: int | None,
        writes_shards: bool = False,
        max_unwritten_rows: int = DEFAULT_MAX_UNWRITTEN_ROWS,
    ) -> None:
        self.path = path
        self._record = record
        self._flush_every = flush_every
        self._names: set[str] = set()
        self._closed = False
        self._stop_reason: str | None = None
        self._previous_sigterm: Any = None
        self._flusher: ShardFlusher | None = None
        if writes_shards:
            self._flusher = ShardFlusher(
                path,
                rank=rank,
                flush_secs=flush_secs,
                heartbeat=self._write_heartbeat,
                max_unwritten_rows=max_unwritten_rows,
            )
            self._rows = self._flusher.rows
            self._flusher.start()
            self._install_sigterm_hook()
            atexit.register(self._close_at_exit)
        self._tracking = writes_shards

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def tracking_enabled(self) -> bool:
        return self._tracking

    def log(self, step: int, /, **losses: Any) -> None:
        """Record this step's losses: floats, ints, NumPy scalars or 0-d tensors on any device.

        Never waits for a GPU and never keeps an autograd graph alive.
        """
        if not self._tracking:
            if self._closed:
                raise RunClosedError(self.path)
            return
        if type(step) is not int or not _INT64_MIN <= step <= _INT64_MAX:
            step = check_step(step)
        if not losses or not losses.keys() <= self._names:
            self._admit_names(losses)
        for value in losses.values():
            if type(value) is not float:
                # A new row rather than an update in place: the call's dict held tensors, so
                # the garbage collector tracks it, and a thousand tracked rows waiting for a
                # flush made full collections cost more than the logging itself.
                coerce = coerce_loss_value
                losses = {k: v if type(v) is float else coerce(k, v) for k, v in losses.items()}
                break
        losses[STEP] = step
        losses[WALL_TIME] = _now()
        rows = self._rows
        rows.append(losses)
        if len(rows) == self._flush_every:  # once per crossing: the flusher drains it all
            self._flusher.wake()  # type: ignore[union-attr]  # set whenever tracking is on

    @property
    def unwritten_rows(self) -> int:
        """Rows logged but not on disk yet: the buffer, plus any a failing disk holds back."""
        return 0 if self._flusher is None else self._flusher.unwritten_rows

    @property
    def dropped_rows(self) -> int:
        """Rows given up because more than `max_unwritten_rows` could not be written."""
        return 0 if self._flusher is None else self._flusher.dropped_rows

    def flush(self) -> None:
        """Write everything logged so far to disk now."""
        if self._flusher is not None and not self._closed:
            self._flusher.flush()

    def disable_loss_tracking(self) -> None:
        """Make `log` do nothing until tracking is enabled again."""
        self._tracking = False

    def enable_loss_tracking(self) -> None:
        if self._flusher is not None and not self._closed:
            self._tracking = True

    def get_loss_history(self) -> pd.DataFrame:
        """Every step logged so far: a `step` column, then one column per loss."""
        self.flush()
        table = rundir.read_losses(self.path).table
        history: pd.DataFrame = table.drop_columns([rundir.WALL_TIME]).to_pandas()
        return history

    def close(self, status: str = rundir.COMPLETED, error: str | None = None) -> None:
        """Write what is buffered and mark the run finished. Closing twice does nothing.

        Raises:
            RunDirectoryError: run.json could not be written. Rows that could not be written
                are counted in its `error` and logged, not raised: training has finished.
        """
        if self._closed:
            return
        self._closed = True
        self._tracking = False
        if self._flusher is None:
            return
        atexit.unregister(self._close_at_exit)
        self._restore_sigterm()
        if self._stop_reason is not None:
            status, error = rundir.FAILED, self._stop_reason
        self._flusher.stop()
        lost = self._flusher.unwritten_rows + self._flusher.dropped_rows
        if lost:  # recorded for the report; training itself is not interrupted for it
            note = f"{lost} logged rows could not be written (the disk was full or unwritable)"
            logger.error("%s: %s", self.path, note)
            error = f"{error}; {note}" if error else note
        if self._record is not None:
            self._record.status = status
            self._record.error = error
            self._record.finished_at = self._record.heartbeat_at = rundir.utc_now()
            try:
                rundir.write_run_file(self.path, self._record)
            except OSError as exc:
                raise RunDirectoryError(self.path, f"cannot write run.json ({exc})") from exc

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close(rundir.FAILED, _describe(exc))
        except LossReportError:
            logger.exception("%s: closing after %s", self.path, type(exc).__name__)

    def _admit_names(self, losses: dict[str, Any]) -> None:
        if not losses:
            raise InvalidLossError(
                "log() needs at least one loss, e.g. log(step, mse_loss=x)", key=""
            )
        for name in losses:
            if name not in self._names:
                self._names.add(check_loss_name(name))
                self._flusher.add_column(name)  # type: ignore[union-attr]

    def _write_heartbeat(self) -> None:
        if self._record is not None:
            self._record.heartbeat_at = rundir.utc_now()
            rundir.write_run_file(self.path, self._record)

    def _install_sigterm_hook(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _restore_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Flush and record why the run stopped, then do what SIGTERM would have done."""
        self._stop_reason = "terminated by SIGTERM"
        previous = self._previous_sigterm
        if callable(previous):
            self.flush()
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            self.flush()
        else:
            try:
                self.close()
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

    def _close_at_exit(self) -> None:
        """A run left open at interpreter exit: failed if an uncaught exception ended it."""
        uncaught = getattr(sys, "last_value", None)
        try:
            if uncaught is None:
                self.close()
            else:
                self.close(rundir.FAILED, _describe(uncaught))
        except LossReportError:
            logger.exception("%s: closing at exit", self.path)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _prepare_directory(path: Path) -> None:
    losses = path / rundir.LOSSES_DIR
    try:
        losses.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=losses):
            pass
    except OSError as exc:
        raise RunDirectoryError(path, f"cannot be written ({exc.strerror or exc})") from exc


def _new_or_resumed_record(
    path: Path,
    run_id: str,
    model: str,
    hook: str,
    architecture: str | None,
    config: dict[str, Any],
) -> rundir.RunRecord:
    now = rundir.utc_now()
    host, pid = socket.gethostname(), os.getpid()
    if not (path / rundir.RUN_FILE).exists():
        return rundir.RunRecord(
            run_id,
            model,
            hook,
            architecture,
            config,
            started_at=now,
            heartbeat_at=now,
            host=host,
            pid=pid,
        )
    record = rundir.read_run_file(path)  # a resume: keep started_at so report names stay put
    logger.info("%s: resuming run started at %s", path, record.started_at)
    record.model, record.hook, record.architecture, record.config = (
        model,
        hook,
        architecture,
        config,
    )
    record.status, record.finished_at, record.error = rundir.RUNNING, None, None
    record.heartbeat_at, record.host, record.pid = now, host, pid
    return record


def _process_group() -> Any:
    """torch.distributed when a process group is up (never imports torch itself), else None."""
    distributed = getattr(sys.modules.get("torch"), "distributed", None)
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return distributed
    return None


def _distributed_rank() -> int | None:
    group = _process_group()
    if group is not None:
        return int(group.get_rank())
    env_rank = os.environ.get("RANK")
    return int(env_rank) if env_rank and env_rank.isdigit() else None


def _agreed_run_id(model: str, hook: str) -> str:
    """A fresh run id; under torch.distributed every rank takes rank 0's (one broadcast)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_id = f"{model}_{hook}_{stamp}_{secrets.token_hex(3)}"
    group = _process_group()
    if group is not None:
        shared = [run_id]
        group.broadcast_object_list(shared, src=0)
        run_id = shared[0]
    return run_id
