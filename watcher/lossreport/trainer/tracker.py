"""The trainer-side API: `start_run` and the `Run` it returns.

`Run.log` is on the training loop's hot path, so it checks names once, converts only what is
not already a float, appends one tuple to a lock-free buffer and returns; writing is the
flusher's job (flusher.py) and file formats are runformat's.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from time import time as _now
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .. import runformat, storage
from ..clock import utc_time
from ..errors import (
    InvalidLossError,
    LossReportError,
    MalformedRunFileError,
    RunClosedError,
    RunDirectoryError,
    UnsafePathError,
)
from ..processes import pid_alive
from ..runformat import STEP, WALL_TIME
from . import closing_report
from .closing_report import AUTO, ReportOnClose
from .flusher import DEFAULT_MAX_UNWRITTEN_ROWS, ShardFlusher
from .values import check_loss_name, check_step, coerce_loss_value

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_FLUSH_EVERY = 1000
DEFAULT_FLUSH_SECS = 10.0
# A running run whose heartbeat is younger than this (or than three of the resuming run's
# flush_secs, if longer) may still have a live writer: resuming it warns.
LIVE_WRITER_SECS = 60.0
MAX_CONFIG_DEPTH = runformat.MAX_RUN_FILE_DEPTH - 1  # run.json's own object is one level
_HASH_DIGITS = 8
_MAX_DIRECTORY_NAME = 100  # runformat.clean_name's limit
_GENERATED_PREFIX = _MAX_DIRECTORY_NAME - len("_20250101-000000_abcdef")
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
    report_on_close: ReportOnClose = AUTO,
) -> Run:
    """Create (or resume, when `run_id` names an existing run) a run directory under `runs_dir`.

    Args:
        model, hook, architecture, config: recorded in run.json and shown in reports. `config`
            must be storable as JSON: string keys, finite floats, at most
            `MAX_CONFIG_DEPTH` levels of dicts and lists; other values are stored as `str()`.
        run_id: the run's id, recorded in run.json; by default
            `{model}_{hook}_{UTC time}_{random}`. It is also the directory name when it is one
            already (`[A-Za-z0-9._-]`, at most 100 characters, no leading or trailing `.-_`);
            otherwise the directory is its cleaned form plus a hash of the id
            (`exp/1` -> `exp_1-3f9a2c1b`), so distinct ids never share a directory. So is an
            id that is a name lossreport reserves (`index.html`, `loss_graphs`, `losses`,
            `run.json`, `runs.sqlite`, in any case): it cannot take their place.
        flush_every, flush_secs: write a shard after this many steps or seconds.
        all_ranks: under torch.distributed, let every rank write (shards carry the rank);
            by default only rank 0 writes and the other ranks' `log` does nothing.
        max_unwritten_rows: while shards cannot be written (a full disk, a lost mount), rows
            wait in memory up to this many; older ones are dropped past it and counted.
        report_on_close: render the run's report into `RUN/loss_graphs/` when it is closed
            (completed or failed, not when stopped by SIGTERM) and print the console summary,
            as the feature document has it. True always; False never; "auto" unless a live
            `lossreport watch` daemon follows `runs_dir` (it renders the run instead) or the
            environment variable LOSSREPORT_REPORT_ON_CLOSE says 0 or 1. The render runs in a
            child process; a failed one is printed and logged, never raised. Under
            torch.distributed only the rank that writes run.json renders.

    Raises:
        RunDirectoryError: `runs_dir` or the run directory cannot be written, now rather than
            at the first flush; or the directory holds another run id's run.json.
        ValueError: a bad argument, such as a config value run.json cannot store (named by its
            dotted key); nothing is created then.

    Resuming a run whose run.json shows another process still writing it (a fresh heartbeat,
    and on this host a live pid) logs a warning naming that process: both keep their rows.
    """
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
        raise ValueError(f"flush_every must be a positive integer, got {flush_every!r}")
    if not flush_secs > 0:
        raise ValueError(f"flush_secs must be positive, got {flush_secs!r}")
    if run_id is not None and not isinstance(run_id, str):
        raise ValueError(f"run_id must be a string, got {type(run_id).__name__}")
    config = _checked_config(config)
    report_on_close = closing_report.checked_setting(report_on_close)
    settings: dict[str, Any] = {
        "flush_every": flush_every,
        "flush_secs": flush_secs,
        "max_unwritten_rows": max_unwritten_rows,
    }
    rank = _distributed_rank()
    run_id = run_id if run_id is not None else _agreed_run_id(model, hook)
    folder = storage.folder_at(os.path.join(os.fspath(runs_dir), directory_name(run_id)))
    if rank not in (None, 0) and not all_ranks:
        return Run(folder, None, run_id=run_id, rank=rank, **settings)
    record, warned = None, False
    if rank in (None, 0):  # rank 0 alone owns run.json
        live_secs = max(LIVE_WRITER_SECS, 3 * flush_secs)
        record, warned = _patiently(
            folder,
            lambda: _new_or_resumed_record(
                folder, run_id, model, hook, architecture, config, live_secs
            ),
        )
    _patiently(folder, lambda: _prepare_directory(folder))
    if record is None:  # every rank writes shards
        return Run(folder, None, run_id=run_id, rank=rank, writes_shards=True, **settings)
    try:
        _patiently(folder, lambda: runformat.write_run_file(folder, record))
    except OSError as exc:
        raise RunDirectoryError(
            str(folder), f"cannot write run.json ({exc.strerror or exc})"
        ) from exc
    shard_rank = rank if all_ranks and rank is not None else None
    return Run(
        folder,
        record,
        run_id=run_id,
        rank=shard_rank,
        writes_shards=True,
        other_writer_warned=warned,
        report_on_close=report_on_close,
        **settings,
    )


class Run:
    """One training run's loss log. Use it as a context manager so it is always closed."""

    def __init__(
        self,
        folder: storage.RunFolder,
        record: runformat.RunRecord | None,
        *,
        run_id: str,
        flush_every: int,
        flush_secs: float,
        rank: int | None,
        writes_shards: bool = False,
        max_unwritten_rows: int = DEFAULT_MAX_UNWRITTEN_ROWS,
        other_writer_warned: bool = False,
        report_on_close: ReportOnClose = False,
    ) -> None:
        self.folder = folder
        # The run's folder: a Path, or for a run on an object store its s3:// URL.
        self.path: Path | str = (
            folder.path if isinstance(folder, storage.LocalFolder) else str(folder)
        )
        self._report_on_close = report_on_close
        self._run_id = run_id
        self._record = record
        self._other_writer_seen = other_writer_warned  # a second writer is warned about once
        self._flush_every = flush_every
        self._names: set[str] = set()
        self._closed = False
        self._stop_reason: str | None = None
        self._previous_sigterm: Any = None
        self._flusher: ShardFlusher | None = None
        if writes_shards:
            self._flusher = ShardFlusher(
                folder,
                rank=rank,
                flush_secs=flush_secs,
                heartbeat=self._write_heartbeat,
                max_unwritten_rows=max_unwritten_rows,
            )
            self._rows = self._flusher.rows
            self._flusher.start()
            self._install_sigterm_hook()
            atexit.register(self._close_at_exit)
            _OPEN_RUNS.add(self)
        self._tracking = writes_shards

    @property
    def run_id(self) -> str:
        """The id given to `start_run` (or generated), as run.json records it; `path.name` is
        its directory, which differs when the id had to be cleaned into a file name."""
        return self._run_id

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
            self._log_with_new_names(step, losses)
            return
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

    def flush(self) -> bool:
        """Write everything logged so far to disk now.

        Returns False when rows could not be written (a full disk, a lost mount): training
        goes on, and they are kept for the next flush, up to `max_unwritten_rows`. After
        `close`, whether close wrote them all.
        """
        if self._flusher is None:
            return True
        if self._closed:
            return self._flusher.unwritten_rows == 0
        return self._flusher.flush()

    def disable_loss_tracking(self) -> None:
        """Make `log` do nothing until tracking is enabled again."""
        self._tracking = False

    def enable_loss_tracking(self) -> None:
        if self._flusher is not None and not self._closed:
            self._tracking = True

    def get_loss_history(self) -> pd.DataFrame:
        """Every step logged so far: a `step` column, then one column per loss."""
        self.flush()
        if isinstance(self.path, Path):
            table = runformat.read_losses(self.path).table
        else:  # on an object store: its shards, copied into a temporary folder
            with tempfile.TemporaryDirectory(prefix="lossreport-") as copy:
                url = storage.s3.StoreUrl.parse(self.path)
                storage.mirror.Mirror(url, Path(copy), runformat.MIRROR_RULES).sync()
                table = runformat.read_losses(Path(copy)).table
        history: pd.DataFrame = table.drop_columns([runformat.WALL_TIME]).to_pandas()
        return history

    def close(self, status: str = runformat.COMPLETED, error: str | None = None) -> None:
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
        _OPEN_RUNS.discard(self)
        self._restore_sigterm()
        if self._stop_reason is not None:
            status, error = runformat.FAILED, self._stop_reason
        self._flusher.stop()
        lost = self._flusher.unwritten_rows + self._flusher.dropped_rows
        if lost:  # recorded for the report; training itself is not interrupted for it
            note = (
                f"{lost} logged rows could not be written "
                "(their disk or store was full, unwritable or unreachable)"
            )
            logger.error("%s: %s", self.path, note)
            error = f"{error}; {note}" if error else note
        if self._record is not None:
            self._record.status = status
            self._record.error = error
            self._record.finished_at = self._record.heartbeat_at = runformat.utc_now()
            try:
                runformat.write_run_file(self.folder, self._record)
            except OSError as exc:
                raise RunDirectoryError(self.path, f"cannot write run.json ({exc})") from exc
            if self._stop_reason is None:  # stopped by SIGTERM: the job must end now
                self._render_report()

    def _disown(self) -> None:
        """In a forked child (a DataLoader worker): the run is the parent's, which writes and
        closes it. Here `log`, `flush` and `close` do nothing from now on, and neither the
        inherited atexit handler nor the SIGTERM handler touches run.json or the shards (the
        flusher thread was not forked; its buffer is a copy of rows the parent writes)."""
        self._flusher = None
        self._record = None
        self._tracking = False

    def _render_report(self) -> None:
        """The report at close, if `report_on_close` asks for it here; never raises: training
        has finished, whatever becomes of its report."""
        try:
            if isinstance(self.path, Path):
                wanted = closing_report.wanted(self._report_on_close, self.path.parent)
            else:  # no daemon's presence can be seen on a store: "auto" leaves it to one
                wanted = self._report_on_close is True
            if wanted:
                closing_report.render_in_child(self.path)
        except Exception:
            logger.exception("%s: the report at close failed", self.path)

    def clear_loss_history(self) -> None:
        """Start the loss history afresh, as SAELens's trainer method of this name did:
        `get_loss_history()` and reports show only what is logged from now on.

        Nothing is deleted: every shard written so far (after writing what is buffered) is
        moved to `losses/cleared/TIME/`, where readers do not look.

        Raises:
            RunClosedError: the run is closed.
            RunDirectoryError: the shards could not be moved, or buffered rows could not be
                written (a full disk): then nothing was cleared.
        """
        if self._closed:
            raise RunClosedError(self.path)
        if self._flusher is None:
            return
        stamp = utc_time().strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            moved = self._flusher.set_aside(stamp)
        except OSError as exc:
            raise RunDirectoryError(self.path, f"loss history not cleared: {exc}") from exc
        logger.info("%s: loss history cleared (%d shards set aside in %s)", self.path, moved, stamp)

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
            self.close(runformat.FAILED, _describe(exc))
        except LossReportError:
            logger.exception("%s: closing after %s", self.path, type(exc).__name__)

    def _log_with_new_names(self, step: int, losses: dict[str, Any]) -> None:
        """`log` for a call that names a loss for the first time, off the hot path.

        Every name and value is checked before any name becomes a column, so a refused call
        leaves no empty column behind in shards, CSV or report.
        """
        if not losses:
            raise InvalidLossError(
                "log() needs at least one loss, e.g. log(step, mse_loss=x)", key=""
            )
        new = [check_loss_name(name) for name in losses if name not in self._names]
        row = {k: v if type(v) is float else coerce_loss_value(k, v) for k, v in losses.items()}
        flusher: ShardFlusher = self._flusher  # type: ignore[assignment]  # set when tracking
        for name in new:  # the columns before the row: a flush in between must not drop it
            self._names.add(name)
            flusher.add_column(name)
        row[STEP] = step
        row[WALL_TIME] = _now()
        self._rows.append(row)
        if len(self._rows) == self._flush_every:
            flusher.wake()

    def _write_heartbeat(self) -> None:
        if self._record is not None:
            if not self._other_writer_seen:
                self._notice_other_writer()
            self._record.heartbeat_at = runformat.utc_now()
            runformat.write_run_file(self.folder, self._record)

    def _notice_other_writer(self) -> None:
        """Warn, once, if run.json was rewritten by another process since this one wrote it."""
        try:
            on_disk = runformat.read_run_file(self.folder)
        except OSError:  # missing or damaged: the heartbeat about to be written replaces it
            return
        record: runformat.RunRecord = self._record  # type: ignore[assignment]  # checked by caller
        if (on_disk.host, on_disk.pid) != (record.host, record.pid):
            self._other_writer_seen = True
            logger.warning(
                "%s: run.json was rewritten by %s: two jobs are logging this run at once? "
                "Both keep their rows, but a step both log keeps only one of the two writes",
                self.path,
                _process(on_disk),
            )

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
                self.close(runformat.FAILED, _describe(uncaught))
        except LossReportError:
            logger.exception("%s: closing at exit", self.path)


# The runs this process writes: a forked child disowns them (only their starter closes them).
_OPEN_RUNS: weakref.WeakSet[Run] = weakref.WeakSet()


def _disown_in_child() -> None:
    for run in list(_OPEN_RUNS):
        run._disown()
    _OPEN_RUNS.clear()


os.register_at_fork(after_in_child=_disown_in_child)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _patiently(folder: storage.RunFolder, action: Callable[[], T]) -> T:
    """On a store, a start waits out an outage of up to a minute; a disk is asked once."""
    if isinstance(folder, storage.LocalFolder):
        return action()
    return storage.s3.patiently(action, str(folder))


def _prepare_directory(folder: storage.RunFolder) -> None:
    """The run directory and its losses/ folder, made or checked writable now. The runs
    directory may be reached through a link; a run directory or losses/ that is a link (or
    anything but a folder) is refused: shards are never written through one. On an object
    store, a listing checks the endpoint, the bucket and the credentials."""
    try:
        folder.prepare(runformat.LOSSES_DIR)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise RunDirectoryError(str(folder), f"cannot be written ({exc.strerror or exc})") from exc


def directory_name(run_id: str) -> str:
    """The run directory's name for `run_id`: the id itself when it is already a clean name
    that lossreport does not reserve, else its cleaned form plus a stable hash of the id, so
    that ids which clean alike (`exp/1` and `exp_1`, two non-Latin names) never share a
    directory, and no run takes the place of the runs index or hides as a report folder
    (`index.html` -> `index.html-0eb54730`, runformat.RESERVED_NAMES)."""
    cleaned = runformat.clean_name(run_id)
    if cleaned == run_id and not runformat.is_reserved(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    stem = cleaned[: _MAX_DIRECTORY_NAME - _HASH_DIGITS - 1].rstrip("._-")
    return f"{stem}-{digest}"


def _checked_config(config: object) -> dict[str, Any]:
    """`config` if run.json can store it; else ValueError naming the first key that it cannot.

    Checked before anything is created, so a refused config leaves no run directory behind.
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    pending: list[tuple[object, str, int]] = [(config, "", 1)]
    while pending:  # a walk, not recursion: a config nested past the stack is refused too
        value, key, depth = pending.pop()
        if isinstance(value, dict | list | tuple):
            if depth > MAX_CONFIG_DEPTH:
                raise ValueError(
                    f"config key {key!r} is nested more than {MAX_CONFIG_DEPTH} levels deep "
                    "(or contains itself); run.json allows no deeper"
                )
            if isinstance(value, dict):
                for name, item in value.items():
                    inner = f"{key}.{name}" if key else str(name)
                    if not isinstance(name, str):
                        raise ValueError(
                            f"config key {inner!r} is {_article(name)}; "
                            "run.json (JSON) needs string keys"
                        )
                    pending.append((item, inner, depth + 1))
            else:
                pending.extend((item, f"{key}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config key {key!r} is {value!r}; run.json (JSON) has no NaN or inf")
        elif not isinstance(value, str | bool | None):
            try:  # what RunRecord.to_json will do with it: ints as they are, the rest as str()
                json.dumps(value, default=str)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"config key {key!r} cannot be stored in run.json: {exc}") from exc
    return config


def _article(value: object) -> str:
    kind = type(value).__name__
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _new_or_resumed_record(
    folder: storage.RunFolder,
    run_id: str,
    model: str,
    hook: str,
    architecture: str | None,
    config: dict[str, Any],
    live_secs: float,
) -> tuple[runformat.RunRecord, bool]:
    """The record to write, and whether another live writer of the run was warned about."""
    now = runformat.utc_now()
    host, pid = _this_process()
    try:
        record = runformat.read_run_file(folder)  # a resume: keep started_at, so report names
    except MalformedRunFileError as exc:  # stay put
        if exc.reason != runformat.RUN_FILE_MISSING:
            raise
        record = runformat.RunRecord(
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
        return record, False
    if record.run_id != run_id:
        raise RunDirectoryError(
            str(folder),
            f"holds run {record.run_id!r}, not {run_id!r} (their ids clean to one directory "
            f"name); choose another run_id",
        )
    logger.info("%s: resuming run started at %s", folder, record.started_at)
    warned = _warn_if_still_written(folder, record, live_secs)
    record.model, record.hook, record.architecture, record.config = (
        model,
        hook,
        architecture,
        config,
    )
    record.status, record.finished_at, record.error = runformat.RUNNING, None, None
    record.heartbeat_at, record.host, record.pid = now, host, pid
    return record, warned


def _warn_if_still_written(
    folder: storage.RunFolder, record: runformat.RunRecord, live_secs: float
) -> bool:
    """Warn when run.json says another process is writing this run now: it says running, its
    heartbeat is younger than `live_secs`, and (on this host, where it can be checked) that
    process is alive. Both writers keep their rows; a step both log keeps only one write."""
    if record.status != runformat.RUNNING or (record.host, record.pid) == _this_process():
        return False
    age = (utc_time() - runformat.parse_time(record.heartbeat_at)).total_seconds()
    if age >= live_secs:
        return False
    if record.host == _this_process()[0] and not pid_alive(record.pid):
        return False
    logger.warning(
        "%s: %s was logging this run %.0f s ago and may still be: two jobs logging one run? "
        "Both keep their rows, but a step both log keeps only one of the two writes",
        folder,
        _process(record),
        max(age, 0.0),
    )
    return True


def _this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _process(record: runformat.RunRecord) -> str:
    return f"another process (host {record.host or 'unknown'}, pid {record.pid})"


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
    stamp = utc_time().strftime("%Y%m%d-%H%M%S")
    # Clean and short enough to be its own directory name, random part included.
    prefix = runformat.clean_name(f"{model}_{hook}")[:_GENERATED_PREFIX].rstrip("._-")
    run_id = f"{prefix}_{stamp}_{secrets.token_hex(3)}"
    group = _process_group()
    if group is not None:
        shared = [run_id]
        group.broadcast_object_list(shared, src=0)
        run_id = shared[0]
    return run_id
