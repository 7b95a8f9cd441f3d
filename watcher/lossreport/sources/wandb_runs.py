"""W&B run folders, online (`wandb/run-DATE-ID/`) and offline (`wandb/offline-run-DATE-ID/`):
their transaction log `run-ID.wandb` (wandb_log.py) is the run, whatever else the folder holds.

Every `wandb.log` scalar is a series (wandb_history.py). W&B records a run's end: an exit
record with its exit code makes the run completed (0) or failed; a log without one is running,
and stalled once silent for --stale-after (a process killed before it could write its exit is
what W&B calls crashed). The run is named by its display name (else its W&B id), its model by
a model in the config (else the W&B project); the config is `wandb.config`, with the run's W&B
id, project, entity and group and its summary beside it under `wandb.*`.

The log only grows while the run trains, so a read keeps what it converted in the run's cache
folder (`cache/wandb/`): `state.json` (the log's inode, a hash of its first bytes, how far it
was read, what was left out) and the rows each read found as Parquet parts, so that the next
read parses only the records written since: the daemon's alerts and live renders follow a
training run at the cost of what it logged since the last look. A log that shrank or was
replaced is read again from its start; a state that cannot be read is started afresh. Parts
are written before the state, the state atomically, so a crash leaves at worst rows that are
read again.

A read that finds nothing new (the same log, nothing whole past where the last read ended)
maps the last read's wide table, kept beside the parts (widecache.py, as TensorBoard's
source does), instead of reading every part again: a few milliseconds whatever the run's
length. A log ending in a record still being written has its last bytes scanned again, and
nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..clock import utc_time
from ..errors import MalformedRunFileError, ReadBudgetError
from ..runformat import COMPLETED, FAILED, RUNNING, LossData, RunRecord
from . import longform, wandb_log, widecache
from .base import Inputs
from .wandb_history import History, Meta, StepMetrics

logger = logging.getLogger(__name__)

RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+)$")
CACHE_FOLDER = "wandb"
STATE_FILE = "state.json"
STATE_FORMAT = "lossreport.wandb-cache/1"
MAX_STATE_BYTES = 4 * 2**20
MAX_LOG_BYTES = 64 * 2**30  # a bigger log is not read (the read budget refuses it before)
# What a log's bytes not read yet take once read, at most, per byte (storage.budget): a
# chunk of them, and the rows they make (a scalar's history item is some 40 bytes of the log,
# its long row about as much in Python lists while read, then 28 and its name in Arrow).
SCANNED_BYTES_PER_BYTE = 2
HEAD_BYTES = 64  # hashed to tell a replaced log from a grown one
_PART_NAME = re.compile(r"^(\d{8,})\.parquet$")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_RUNNING_WORDS = "W&B exit record"


def is_log_name(name: str) -> bool:
    """Whether `name` is named as a W&B run's log (`run-ID.wandb`)."""
    return name.startswith("run-") and name.endswith(".wandb")


def log_name(run_dir: Path) -> str | None:
    """`run-ID.wandb`, for a folder named as W&B names its runs' folders; else None."""
    match = RUN_FOLDER.match(run_dir.name)
    return f"run-{match['id']}.wandb" if match else None


class WandbSource:
    name = "wandb"
    label = "W&B run log"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        """A real folder named `run-DATE-ID` or `offline-run-DATE-ID` holding a regular
        `run-ID.wandb` (a stat; `latest-run`, a link, is never one)."""
        name = log_name(path)
        return name is not None and longform.stat_file(path / name) is not None

    def inputs(self, run_dir: Path) -> Inputs:
        """The log's name, size and time; its status from an exit record near its end (read
        once per version of the log); the heartbeat is its last write."""
        log = _log_stat(run_dir)
        if log is None:
            return Inputs("", None, None)
        exit_code = _tail_exit(log.path, (log.inode, log.size, log.mtime_ns))
        status, rule = _status(exit_code)
        return Inputs(log.key, status, longform.last_written([log]), rule)

    def read_record(self, run_dir: Path) -> RunRecord:
        """The run's name, config, summary and end, from every record of its log but the
        history (decoded once per version of the log in a process). Raises
        MalformedRunFileError when the log cannot be read."""
        log = _log_stat(run_dir)
        if log is None:
            raise MalformedRunFileError(run_dir / (log_name(run_dir) or "run-ID.wandb"), "missing")
        meta = _meta(log.path)
        status, _ = _status(meta.exit_code)
        config: dict[str, Any] = dict(meta.config)
        config.update(
            {
                f"wandb.{name}": value
                for name, value in (
                    ("id", meta.run_id),
                    ("project", meta.project),
                    ("entity", meta.entity),
                    ("group", meta.group),
                    ("summary", meta.summary),
                )
                if value
            }
        )
        written = longform.last_written([log])
        record = longform.record_from(
            run_dir,
            config,
            status=status,
            started_at=utc_time(meta.started_at) if meta.started_at else None,
            heartbeat_at=written,
            finished_at=written if status != RUNNING else None,
            run_id=meta.name or meta.run_id or None,
            model=meta.project or None,
            error=f"exit code {meta.exit_code}" if status == FAILED else None,
        )
        return replace(record, host=meta.host)

    def read_new(self, run_dir: Path, tail: Tail) -> pa.Table:
        """The rows (a wide table) of the records written since `tail`, which moves past
        them: what the daemon's alerts follow while the run trains, at the cost of what was
        logged since the last look. From the log's start when it was replaced. Empty when
        the log cannot be read, the extra is missing, or the new bytes do not fit a run's
        read budget (then passed over: alerts are not worth more)."""
        codec = wandb_log.load_codec()
        name = log_name(run_dir)
        if codec is None or name is None:
            return longform.empty_wide()
        path = run_dir / name
        try:
            fd = _open_log(path)
        except OSError:
            return longform.empty_wide()
        try:
            info = os.fstat(fd)
            if info.st_ino != tail.inode or info.st_size < tail.offset:
                tail.inode, tail.offset, tail.steps = info.st_ino, 0, StepMetrics()
            if info.st_size <= tail.offset:
                return longform.empty_wide()
            try:
                unread = (info.st_size - tail.offset) * SCANNED_BYTES_PER_BYTE
                storage.ReadBudget().charge(path, unread, "once read")
            except ReadBudgetError as exc:
                logger.info("alerts pass over new records: %s", exc)
                tail.offset = info.st_size
                return longform.empty_wide()
            history = History(codec, tail.steps, tail.notes)
            scan = wandb_log.LogScan(path, tail.offset)
            for record in scan.records(fd, info.st_size):
                history.feed(record)
            tail.offset = info.st_size if scan.stopped else scan.end
        except OSError:
            return longform.empty_wide()
        finally:
            os.close(fd)
        return longform.wide_data(history.table(), []).table

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every scalar of the log, from `cache` and the records new since (module
        docstring); everything afresh without `cache`. Never raises for a broken run or
        cache: what could not be read is named in `skipped`."""
        codec = wandb_log.load_codec()
        if codec is None:
            return LossData(longform.empty_wide(), [wandb_log.missing_extra(run_dir)])
        budget = storage.ReadBudget()
        try:
            data = _Read(run_dir, codec, cache, budget).run()
        except OSError as exc:  # the folder or log is gone, a link, unreadable
            logger.warning("%s: not read: %s", run_dir, exc)
            return LossData(longform.empty_wide(), [f"{run_dir}: cannot be read ({exc})"])
        return replace(data, over_budget=budget.refused)


@dataclass
class Tail:
    """How far a follower of a run's log (the daemon's alerts) has read it."""

    inode: int = 0
    offset: int = 0
    steps: StepMetrics = field(default_factory=StepMetrics)
    notes: dict[str, str] = field(default_factory=dict)


def _log_stat(run_dir: Path) -> longform.FileStat | None:
    name = log_name(run_dir)
    return longform.stat_file(run_dir / name) if name else None


def _status(exit_code: int | None) -> tuple[str, str]:
    if exit_code is None:
        return RUNNING, (
            "no W&B exit record yet: running; stalled once silent for --stale-after "
            "(W&B calls a run whose process died crashed)"
        )
    if exit_code == 0:
        return COMPLETED, f"{_NOT_RUNNING_WORDS}: exit code 0"
    return FAILED, f"{_NOT_RUNNING_WORDS}: exit code {exit_code}"


def _open_log(path: Path) -> int:
    """The log opened read-only, without following a link or blocking; OSError when it is
    not a regular file or is over MAX_LOG_BYTES."""
    with storage.opened_dir(path.parent) as folder:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LOG_BYTES:
        os.close(fd)
        raise OSError(f"{path}: not a regular file of at most {MAX_LOG_BYTES:,} bytes")
    return fd


@lru_cache(maxsize=4096)
def _tail_exit(path: Path, version: tuple[int, int, int]) -> int | None:
    """The exit code in the last two blocks of the log, or None (none, or unreadable)."""
    codec = wandb_log.load_codec()
    if codec is None:
        return None
    try:
        fd = _open_log(path)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        scan = wandb_log.LogScan(path, wandb_log.tail_start(size), tail=True)
        meta = Meta()
        for record in scan.records(fd, size):
            if wandb_log.kind_of(record) not in (wandb_log.HISTORY, wandb_log.SUMMARY):
                meta.feed(record, codec)
        return meta.exit_code
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass
class _MetaRead:
    """What a process read of a log's other records: where it ended, and of which log."""

    inode: int
    head: bytes
    offset: int
    meta: Meta


_META_LOGS = 16  # logs whose other records a process remembers
_metas: OrderedDict[Path, _MetaRead] = OrderedDict()
_metas_lock = threading.Lock()


def _meta(path: Path) -> Meta:
    """Every record of the log but the history, decoded: those past where this process read
    the same log last (the same inode and first bytes, no shorter), so that a training run's
    renders follow it at the cost of what it logged since. MalformedRunFileError when the log
    cannot be read or the wandb extra is missing."""
    codec = wandb_log.load_codec()
    if codec is None:
        raise MalformedRunFileError(path, wandb_log.EXTRA_HINT)
    try:
        fd = _open_log(path)
    except OSError as exc:
        raise MalformedRunFileError(path, f"cannot be read ({exc})") from exc
    try:
        info = os.fstat(fd)
        head = os.pread(fd, HEAD_BYTES, 0)
        with _metas_lock:
            known = _metas.get(path)
        if (
            known is None
            or (known.inode, known.head) != (info.st_ino, head[: len(known.head)])
            or known.offset > info.st_size
        ):
            known = _MetaRead(info.st_ino, head, 0, Meta())  # another log: from its start
        meta = copy.deepcopy(known.meta)  # the kept one stays as read, should this read fail
        scan = wandb_log.LogScan(path, known.offset)
        for record in scan.records(fd, info.st_size):
            meta.feed(record, codec)
    except OSError as exc:
        raise MalformedRunFileError(path, f"cannot be read ({exc})") from exc
    finally:
        os.close(fd)
    if scan.stopped:
        raise MalformedRunFileError(path, "not a W&B transaction log (its header)")
    with _metas_lock:
        _metas[path] = _MetaRead(info.st_ino, head, scan.end, meta)
        _metas.move_to_end(path)
        while len(_metas) > _META_LOGS:
            _metas.popitem(last=False)
    return meta


@dataclass
class _State:
    """What the cache knows of the log, and of what its reads left out."""

    inode: int = 0
    offset: int = 0
    head: str = ""
    head_len: int = 0
    stopped: bool = False
    problems: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    system_records: int = 0
    undecodable: int = 0
    steps: dict[str, Any] = field(default_factory=lambda: StepMetrics().to_json())
    parts: list[str] = field(default_factory=list)
    next_part: int = 1
    wide: widecache.Kept | None = None  # the last read's table, and the parts it holds

    def to_json(self) -> bytes:
        return json.dumps({"format": STATE_FORMAT, **asdict(self)}, indent=1).encode()


def _parse_state(document: Any) -> _State:
    """A state.json document, checked (KeyError, TypeError, ValueError when it is off)."""
    if document.pop("format") != STATE_FORMAT:
        raise ValueError("another format")
    wide = document.pop("wide", None)  # none in a state written before it was kept
    state = _State(**document)
    for number in (state.inode, state.offset, state.head_len, state.next_part):
        if type(number) is not int or number < 0:
            raise TypeError("not a count")
    StepMetrics.from_json(state.steps)
    if not all(isinstance(line, str) for line in state.problems):
        raise TypeError("problems")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in state.notes.items()):
        raise TypeError("notes")
    for part in state.parts:
        match = _PART_NAME.match(part) if isinstance(part, str) else None
        if not match or int(match[1]) >= state.next_part:
            raise ValueError(f"not a part: {part!r}")
    state.wide = widecache.parse(wide, state.next_part)
    return state


class _Read:
    """One read of a run's log, with or without a cache folder."""

    def __init__(
        self, run_dir: Path, codec: wandb_log.Codec, cache: Path | None, budget: storage.ReadBudget
    ) -> None:
        self.run_dir = run_dir
        self.codec = codec
        self.cache = cache / CACHE_FOLDER if cache else None
        self.budget = budget
        self.skipped: list[str] = []
        self.whole = True  # every part's rows are in this read's table

    def run(self) -> LossData:
        name = log_name(self.run_dir)
        if name is None:
            raise FileNotFoundError(f"{self.run_dir}: not a W&B run folder")
        path = self.run_dir / name
        tables: list[pa.Table] = []
        fd = _open_log(path)
        try:
            info = os.fstat(fd)
            state = self._load(fd, info)
            saved = state.to_json()
            kept = self._kept(state)
            scanned = kept is not None  # the new bytes first: none, and the kept table will do
            new = self._scan(fd, path, info.st_size, state) if scanned else None
            table = self._mapped(kept) if kept and (new is None or not new.num_rows) else None
            if table is None:
                found = self._parts(state)
                if found is None:
                    state, scanned = _State(inode=info.st_ino, next_part=state.next_part), False
                tables = found or []
                if not scanned:
                    new = self._scan(fd, path, info.st_size, state)
        finally:
            os.close(fd)
        skipped = self.skipped + _left_out(path, state)
        if kept is not None and table is not None:  # nothing new
            if state.to_json() != saved:
                self._save(state)
            return LossData(table, skipped + kept.notes)
        if new is not None and new.num_rows:
            self._keep(state, new)
            tables.append(new)
        long = pa.concat_tables(tables) if tables else longform.LONG_SCHEMA.empty_table()
        data = longform.wide_data(long, skipped)
        self._keep_wide(state, data, data.skipped[len(skipped) :])
        self._save(state)
        return data

    def _kept(self, state: _State) -> widecache.Kept | None:
        """The kept table, when it holds the rows of every part of the state."""
        if self.cache is None or state.wide is None or state.wide.parts != state.parts:
            return None
        return state.wide

    def _mapped(self, kept: widecache.Kept) -> pa.Table | None:
        assert self.cache is not None  # a kept table came from the cache
        try:
            with storage.opened_dir(self.cache) as folder:
                return widecache.read_table(self.cache, folder, kept.name, self.budget)
        except OSError as exc:
            logger.warning("%s: unreadable (%s); reading the parts again", self.cache, exc)
            return None

    def _keep_wide(self, state: _State, data: LossData, notes: list[str]) -> None:
        """Keep the read's table for the reads that find nothing new (before the state)."""
        state.wide = None
        if self.cache is None or not self.whole or not data.table.num_rows:
            return  # (an empty log is read again at no cost)
        name = widecache.name_for(state.next_part)
        try:
            with storage.opened_dir(self.cache) as folder:
                widecache.write(self.cache, folder, name, data.table)
        except (OSError, pa.ArrowException) as exc:
            logger.warning("%s: not kept (%s)", self.cache / name, exc)
            return
        state.next_part += 1
        state.wide = widecache.Kept(name, list(state.parts), notes)

    def _load(self, fd: int, info: os.stat_result) -> _State:
        """The cache's state when it describes this log (the same inode and first bytes, no
        longer than it is now); a fresh one otherwise."""
        fresh = _State(inode=info.st_ino)
        if self.cache is None:
            return fresh
        try:
            storage.make_dir(self.cache.parent)
            with storage.opened_dir(self.cache.parent) as parent:
                storage.make_dir(self.cache, dir_fd=parent)
            with storage.opened_dir(self.cache) as folder, os.scandir(folder) as entries:
                numbers = [int(m[1]) for e in entries if (m := _cache_file(e.name))]
            fresh.next_part = max(numbers, default=0) + 1  # a part's name is never reused
            raw = storage.read_bytes(self.cache / STATE_FILE, MAX_STATE_BYTES)
            state = _parse_state(json.loads(raw))
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("%s: unreadable (%s); reading the log again", self.cache, exc)
            if isinstance(exc, OSError):
                self.cache = None
            return fresh
        if state.inode != info.st_ino or state.offset > info.st_size:
            return fresh
        if state.head_len and _hash(os.pread(fd, state.head_len, 0)) != state.head:
            return fresh
        state.next_part = max(state.next_part, fresh.next_part)
        return state

    def _parts(self, state: _State) -> list[pa.Table] | None:
        """The rows of earlier reads, charged to the budget; None when one cannot be read
        (the log is then read again)."""
        tables = []
        for part in state.parts:
            assert self.cache is not None  # a state with parts came from the cache
            path = self.cache / part
            try:
                data = storage.read_bytes(path, storage.MAX_SHARD_BYTES)
                with pq.ParquetFile(pa.BufferReader(data)) as reader:
                    if not reader.schema_arrow.equals(longform.LONG_SCHEMA):
                        raise ValueError("not long rows")
                    rows = reader.metadata.num_rows
                    self.budget.charge(path, len(data) + rows * (longform.LONG_ROW_BYTES + 16))
                    tables.append(reader.read())
            except ReadBudgetError as exc:
                self.skipped.append(str(exc))
                self.whole = False
                return []
            except (OSError, ValueError, pa.ArrowException) as exc:
                logger.warning("%s: unreadable (%s); reading the log again", path, exc)
                return None
        return tables

    def _scan(self, fd: int, path: Path, size: int, state: _State) -> pa.Table | None:
        """The rows of the records past the state's offset (the state moved past them)."""
        if state.stopped or size <= state.offset:
            return None
        try:
            unread = (size - state.offset) * SCANNED_BYTES_PER_BYTE
            self.budget.charge(path, unread, f"once read from byte {state.offset:,}")
        except ReadBudgetError as exc:
            self.skipped.append(str(exc))
            return None
        steps = StepMetrics.from_json(state.steps)
        history = History(self.codec, steps, state.notes)
        scan = wandb_log.LogScan(path, state.offset)
        for record in scan.records(fd, size):
            history.feed(record)
        for problem in scan.problems:
            logger.warning("%s", problem)
        if scan.more_problems:
            scan.problems.append(f"{path}: {scan.more_problems} more damaged fragments")
        state.problems = (state.problems + scan.problems)[: wandb_log.MAX_PROBLEMS + 1]
        state.offset, state.stopped = scan.end, scan.stopped
        state.steps = steps.to_json()
        state.system_records += history.system_records
        state.undecodable += history.undecodable
        head_len = min(HEAD_BYTES, scan.end)
        if head_len > state.head_len:
            state.head_len, state.head = head_len, _hash(os.pread(fd, head_len, 0))
        return history.table()

    def _keep(self, state: _State, new: pa.Table) -> None:
        """Write a read's rows as the next part (before the state)."""
        if self.cache is None:
            return
        name = f"{state.next_part:08d}.parquet"
        try:
            with (
                storage.opened_dir(self.cache) as folder,
                storage.atomic_file(self.cache / name, replace=False, dir_fd=folder) as out,
            ):
                pq.write_table(new, out, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            logger.warning("%s: not kept (%s)", self.cache / name, exc)
            self.cache = None  # keep no state that would miss these rows
            return
        state.next_part += 1
        state.parts.append(name)

    def _save(self, state: _State) -> None:
        if self.cache is None:
            return
        try:
            with storage.opened_dir(self.cache) as folder:
                storage.atomic_write(self.cache / STATE_FILE, state.to_json(), dir_fd=folder)
                with os.scandir(folder) as entries:
                    keep = {*state.parts, *([state.wide.name] if state.wide else [])}
                    stale = [
                        entry.name
                        for entry in entries
                        if _cache_file(entry.name) and entry.name not in keep
                    ]
                for name in stale:
                    storage.remove_at(name, folder)
        except OSError as exc:
            logger.warning("%s: not kept (%s)", self.cache / STATE_FILE, exc)


def _left_out(path: Path, state: _State) -> list[str]:
    """What the reads of the log left out, as the report names it."""
    lines = state.problems + [f"{path}: {key}: {why}; not read" for key, why in state.notes.items()]
    if state.system_records:
        lines.append(
            f"{path}: {state.system_records:,} records of system metrics (GPU, CPU, memory); "
            "not read"
        )
    if state.undecodable:
        lines.append(f"{path}: {state.undecodable:,} records not W&B's; skipped")
    return lines


def _cache_file(name: str) -> re.Match[str] | None:
    """A part's or a kept table's name, with its number."""
    return _PART_NAME.match(name) or widecache.NAME.match(name)


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
