"""TensorBoard run folders: `events.out.tfevents.*` files, written by PyTorch's SummaryWriter,
tensorboardX or TensorFlow; their scalar summaries are the run's series (tfrecord.py reads
them).

Every event file in a folder is read and merged (restarts, two writers): of a tag logged twice
at one step the later wall time wins (longform.to_wide). Event files only grow, and can reach
gigabytes, so what was converted is kept in the run's cache folder (`cache/tensorboard/`):

```
state.json                 per event file: its inode, how far it was read, a hash of its first
                           bytes, what was wrong in it, its Parquet parts; the tags' plugins
NNNNNNNN-ID.parquet        the LONG_SCHEMA rows one read found in file ID, NNNNNNNN counting
                           reads, so names sort in the order written
wide-NNNNNNNN.arrow        the last read's result, the wide table (Arrow IPC, uncompressed)
```

The next read parses only the bytes past each file's offset. A file that shrank, has another
inode or other first bytes was replaced: its rows are dropped and it is read from its start;
a file that is gone loses its rows. Parts are written before the state, the state atomically
and last, so a crash leaves at worst rows that are read again, never wrong ones; a state that
cannot be read is started afresh.

A read that finds nothing new (every file the one read before, no longer than read) returns
the last read's wide table, memory-mapped, not parsed: a few milliseconds whatever the run's
length (widecache.py). It is written after every read that found something, named in the
state with the parts it was made from, and used only while they are still the state's parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import storage
from ..errors import ReadBudgetError
from ..runformat import RUNNING, LossData, RunRecord
from . import longform, tfrecord, widecache
from .base import Inputs
from .longform import SERIES

logger = logging.getLogger(__name__)

EVENTS_PREFIX = "events.out.tfevents."
CACHE_FOLDER = "tensorboard"
STATE_FILE = "state.json"
STATE_FORMAT = "lossreport.tensorboard-cache/1"
MAX_STATE_BYTES = 16 * 2**20
# What an event file's bytes not read yet take once scanned, at most, per byte (storage.budget):
# a scalar's record is some 35 bytes and its tag; its row, while scanned and then as a long row,
# some 65 and its tag.
SCANNED_BYTES_PER_BYTE = 2
HEAD_BYTES = 64  # hashed to tell a replaced file from a grown one
MAX_PROBLEMS = 20  # named per file; beyond them, counted
# A part as read: its series names as a dictionary.
_PART_SCHEMA = pa.schema(
    [(SERIES, pa.dictionary(pa.int32(), pa.string())), *list(longform.LONG_SCHEMA)[1:]]
)
_PART_NAME = re.compile(r"^(\d{8,})-(\d+)\.parquet$")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_event_file_name(name: str) -> bool:
    return name.startswith(EVENTS_PREFIX)


class TensorBoardSource:
    name = "tensorboard"
    label = "TensorBoard event files"
    nests_runs = True  # add_scalars writes one run per tag in subfolders

    def is_run(self, path: Path) -> bool:
        """A real folder directly holding a regular events.out.tfevents.* file (one listing)."""
        if not storage.is_real_dir(path):
            return False
        try:
            with os.scandir(path) as entries:
                return any(
                    is_event_file_name(entry.name) and entry.is_file(follow_symlinks=False)
                    for entry in entries
                )
        except OSError:
            return False

    def inputs(self, run_dir: Path) -> Inputs:
        """The event files' names, sizes and times; TensorBoard records no status, so a run
        is running until it has been silent long enough."""
        files = longform.regular_files(run_dir, is_event_file_name)
        return Inputs(
            longform.fingerprint(files),
            RUNNING,
            longform.last_written(files),
            status_rule=longform.silence_rule("TensorBoard logs"),
            silence_finishes=True,
        )

    def read_record(self, run_dir: Path, cache: Path | None = None) -> RunRecord:
        """Event files record no config: the run is named by its folder, the model by the
        folder that groups it (`logs/EXPERIMENT/RUN`; Lightning's `NAME/version_3`)."""
        files = longform.regular_files(run_dir, is_event_file_name)
        return longform.record_from(
            run_dir,
            {},
            status=RUNNING,
            started_at=longform.first_written(files),
            heartbeat_at=longform.last_written(files),
            model=longform.group_name(run_dir),
        )

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every scalar of every event file, from `cache` and the bytes new since (module
        docstring); everything afresh, in memory, without `cache`. Never raises for a broken
        run or cache: what could not be read is named in `skipped`."""
        codec = tfrecord.load_codec()
        if codec is None:
            return LossData(longform.empty_wide(), [tfrecord.missing_extra(run_dir)])
        budget = storage.ReadBudget()
        try:
            with storage.opened_dir(run_dir) as run_fd, _opened_cache(cache) as store:
                data = _Read(run_dir, run_fd, codec, store, budget).run()
        except OSError as exc:  # the run folder is gone, a link, unreadable
            logger.warning("%s: not read: %s", run_dir, exc)
            return LossData(longform.empty_wide(), [f"{run_dir}: cannot be read ({exc})"])
        return replace(data, over_budget=budget.refused)


@dataclass
class _Entry:
    """What the cache knows of one event file."""

    id: int
    inode: int
    offset: int = 0  # read up to here
    head: str = ""  # sha256 of the first `head_len` bytes
    head_len: int = 0
    stopped: bool = False  # a length failed its checksum at `offset`: never read further
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0
    parts: list[str] = field(default_factory=list)

    def note(self, problems: list[str]) -> None:
        room = MAX_PROBLEMS - len(self.problems)
        self.problems += problems[:room]
        self.more_problems += max(0, len(problems) - room)

    def report(self, path: Path) -> list[str]:
        more = [f"{path}: {self.more_problems} more damaged records skipped"]
        return self.problems + (more if self.more_problems else [])


@dataclass
class _State:
    files: dict[str, _Entry] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)  # tag -> plugin, first seen
    next_id: int = 1
    next_part: int = 1
    wide: widecache.Kept | None = None

    def all_parts(self) -> list[str]:
        return [part for name in sorted(self.files) for part in self.files[name].parts]

    def new_entry(self, inode: int) -> _Entry:
        self.next_id += 1
        return _Entry(self.next_id - 1, inode)

    def to_json(self) -> bytes:
        document = {
            "format": STATE_FORMAT,
            "next_id": self.next_id,
            "next_part": self.next_part,
            "plugins": self.plugins,
            "files": {name: asdict(entry) for name, entry in self.files.items()},
            "wide": asdict(self.wide) if self.wide else None,
        }
        return json.dumps(document, indent=1, sort_keys=True).encode()


def _parse_state(document: Any) -> _State:
    """A state.json document, checked field by field (KeyError, TypeError, ValueError)."""
    if document["format"] != STATE_FORMAT:
        raise ValueError("another format")
    state = _State(
        plugins={
            widecache.text(tag): widecache.text(plugin)
            for tag, plugin in document["plugins"].items()
        },
        next_id=_count(document["next_id"]),
        next_part=_count(document["next_part"]),
    )
    for name, raw in document["files"].items():
        if not is_event_file_name(name) or "/" in name or "\0" in name:
            raise ValueError(f"not an event file's name: {name!r}")
        entry = _Entry(
            id=_count(raw["id"]),
            inode=_count(raw["inode"]),
            offset=_count(raw["offset"]),
            head=widecache.text(raw["head"]),
            head_len=_count(raw["head_len"]),
            stopped=_flag(raw["stopped"]),
            problems=[widecache.text(line) for line in raw["problems"]],
            more_problems=_count(raw["more_problems"]),
            parts=[widecache.text(part) for part in raw["parts"]],
        )
        for part in entry.parts:
            match = _PART_NAME.match(part)
            if not match or int(match[2]) != entry.id or int(match[1]) >= state.next_part:
                raise ValueError(f"not a part of file {entry.id}: {part!r}")
        if entry.id >= state.next_id or entry.head_len > HEAD_BYTES:
            raise ValueError("inconsistent")
        state.files[name] = entry
    if len({entry.id for entry in state.files.values()}) != len(state.files):
        raise ValueError("an id used twice")
    state.wide = widecache.parse(document.get("wide"), state.next_part)
    return state


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"not a count: {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not true or false: {value!r}")
    return value


class _Cache:
    """The cache folder, reached through a descriptor opened without following a link."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self.fd = fd

    def load(self) -> _State:
        """The state, or a fresh one when it is missing or anything about it is off. Its next
        part number is past every part in the folder, kept or left by a crash, so a part's name
        is never used twice."""
        path = self.folder / STATE_FILE
        try:
            state = _parse_state(
                json.loads(storage.read_bytes(path, MAX_STATE_BYTES, dir_fd=self.fd))
            )
        except FileNotFoundError:
            state = _State()
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            logger.warning("%s: unreadable (%s); converting the event files again", path, exc)
            state = _State()
        numbers = [
            int(match[1])
            for name in self.part_names()
            if (match := _PART_NAME.match(name) or widecache.NAME.match(name))
        ]
        state.next_part = max([state.next_part, *(number + 1 for number in numbers)])
        return state

    def part_names(self) -> list[str]:
        try:
            with os.scandir(self.fd) as entries:
                return [
                    entry.name
                    for entry in entries
                    if _PART_NAME.match(entry.name) or widecache.NAME.match(entry.name)
                ]
        except OSError:
            return []

    def read_parts(self, names: list[str], budget: storage.ReadBudget) -> list[pa.Table] | None:
        """The parts' rows, or None when one cannot be read (the file is then read again).
        Each is charged to `budget` before it is decoded (its series names read as a
        dictionary, so that they are counted before they are spelled out once per row):
        ReadBudgetError when one does not fit."""
        tables = []
        for name in names:
            path = self.folder / name
            try:
                data = storage.read_bytes(path, storage.MAX_SHARD_BYTES, dir_fd=self.fd)
                with pq.ParquetFile(pa.BufferReader(data), read_dictionary=[SERIES]) as part:
                    if not part.schema_arrow.equals(_PART_SCHEMA):
                        raise ValueError("not rows of scalars")
                    rows = part.metadata.num_rows
                    budget.charge(path, rows * longform.LONG_ROW_BYTES)
                    read = part.read()
                series = read.column(SERIES)
                budget.charge(path, sum(_spelled_out(chunk) for chunk in series.chunks))
                table = read.set_column(0, SERIES, series.cast(pa.string()))
            except ReadBudgetError:
                raise
            except (OSError, ValueError, pa.ArrowException) as exc:
                logger.warning("%s: unreadable (%s); converting its event file again", name, exc)
                return None
            tables.append(table)
        return tables

    def write_part(self, name: str, table: pa.Table) -> None:
        with storage.atomic_file(self.folder / name, replace=False, dir_fd=self.fd) as handle:
            pq.write_table(table, handle, compression="zstd")

    def save(self, state: _State) -> None:
        storage.atomic_write(self.folder / STATE_FILE, state.to_json(), dir_fd=self.fd)

    def remove_parts_but(self, keep: set[str]) -> None:
        """Remove the parts no file holds any more (replaced, gone, or left by a crash), and
        the wide tables but the one kept."""
        for name in self.part_names():
            if name not in keep:
                with suppress(FileNotFoundError):
                    storage.remove_at(name, self.fd)


def _spelled_out(names: pa.DictionaryArray) -> int:
    """The bytes of a dictionary-encoded string column's values, once spelled out per row."""
    lengths = pc.take(pc.binary_length(names.dictionary), names.indices)
    return int(pc.sum(lengths).as_py() or 0)


@contextmanager
def _opened_cache(cache: Path | None) -> Iterator[_Cache | None]:
    """`cache/tensorboard/` (widecache.opened); None without one: the run is read whole."""
    with widecache.opened(cache, CACHE_FOLDER) as fd:
        yield _Cache(cache / CACHE_FOLDER, fd) if cache is not None and fd is not None else None


@dataclass
class _File:
    """One event file in this read: its entry, its rows read before, what is new."""

    name: str
    entry: _Entry
    tables: list[pa.Table]
    scan: tfrecord.FileScan | None = None


class _Read:
    """One read of a run's event files, with or without a cache."""

    def __init__(
        self,
        run_dir: Path,
        run_fd: int,
        codec: tfrecord.Codec,
        store: _Cache | None,
        budget: storage.ReadBudget,
    ) -> None:
        self.run_dir = run_dir
        self.budget = budget
        self.run_fd = run_fd
        self.codec = codec
        self.store = store
        self.state = store.load() if store else _State()
        self.saved = self.state.to_json() if store else b""
        self.plugins = dict(self.state.plugins)
        self.skipped: list[str] = []
        self.whole = True  # every kept file's rows are in this read's table

    def run(self) -> LossData:
        names = self._names()
        unchanged = self._unchanged(names)
        if unchanged is not None:
            return unchanged
        files = [found for name in names if (found := self._read(name))]
        tables: list[pa.Table] = []
        for file in files:
            if file.scan is not None:
                new = file.scan.scalars.table(self.plugins)
                if new.num_rows:
                    file.tables.append(new)
                    self._keep(file, new)
            tables += file.tables
            self.skipped += file.entry.report(self.run_dir / file.name)
        self.state.files = {file.name: file.entry for file in files}
        self.state.plugins = self.plugins
        long = pa.concat_tables(tables) if tables else longform.LONG_SCHEMA.empty_table()
        data = longform.wide_data(long, self.skipped)
        self._keep_wide(data, data.skipped[len(self.skipped) :])
        self._save()
        return data

    def _unchanged(self, names: list[str]) -> LossData | None:
        """The last read's table when nothing is new since: the same event files, each the
        one read before (inode, first bytes) and no longer than read. None otherwise."""
        wide = self.state.wide
        if self.store is None or wide is None or names != sorted(self.state.files):
            return None
        if wide.parts != self.state.all_parts():
            return None
        for name in names:
            entry = self.state.files[name]
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=self.run_fd)
            except OSError:
                return None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or not _same_file(fd, info, entry):
                    return None
                if not entry.stopped and info.st_size > entry.offset:
                    return None
            finally:
                os.close(fd)
        table = widecache.read_table(self.store.folder, self.store.fd, wide.name, self.budget)
        if table is None:
            return None
        reports = [
            line for name in names for line in self.state.files[name].report(self.run_dir / name)
        ]
        return LossData(table, self.skipped + reports + wide.notes)

    def _keep_wide(self, data: LossData, notes: list[str]) -> None:
        """Keep the read's table for the reads that find nothing new (before the state)."""
        self.state.wide = None
        if self.store is None or not self.whole or not data.table.num_rows:
            return  # (an empty run is read again at no cost)
        name = widecache.name_for(self.state.next_part)
        try:
            widecache.write(self.store.folder, self.store.fd, name, data.table)
        except (OSError, pa.ArrowException) as exc:
            logger.warning("%s: not kept (%s)", self.store.folder / name, exc)
            return
        self.state.next_part += 1
        self.state.wide = widecache.Kept(name, self.state.all_parts(), notes)

    def _names(self) -> list[str]:
        """The regular event files, by name; anything else by such a name is named, unread."""
        names = []
        with os.scandir(self.run_fd) as entries:
            for entry in entries:
                if not is_event_file_name(entry.name):
                    continue
                if entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
                else:
                    what = storage.kind_of(self.run_dir / entry.name, dir_fd=self.run_fd)
                    self.skipped.append(f"{self.run_dir / entry.name}: is {what}; not read")
        return sorted(names)

    def _read(self, name: str) -> _File | None:
        """Open one event file (no link, no FIFO) and read what is new in it. A file that
        cannot be opened now keeps what was read of it before."""
        path = self.run_dir / name
        entry = self.state.files.get(name)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.run_fd)
        except OSError as exc:
            return self._unreadable(name, entry, exc)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                what = storage.kind_of(path, dir_fd=self.run_fd)
                self.skipped.append(f"{path}: is {what}; not read")
                return None
            if entry is not None and not _same_file(fd, info, entry):
                logger.info("%s: replaced; reading it again", path)
                entry = None
            try:
                tables = self._parts(entry)
            except ReadBudgetError as exc:  # kept for a larger budget, unread now
                self.skipped.append(str(exc))
                self.whole = False
                return _File(name, entry, []) if entry else None
            if entry is None or tables is None:
                entry, tables = self.state.new_entry(info.st_ino), []
            file = _File(name, entry, tables)
            if not entry.stopped and info.st_size > entry.offset:
                try:
                    unread = (info.st_size - entry.offset) * SCANNED_BYTES_PER_BYTE
                    self.budget.charge(path, unread, f"once scanned from byte {entry.offset:,}")
                except ReadBudgetError as exc:  # what was read before, and no more
                    self.skipped.append(str(exc))
                    return file
                scan = tfrecord.scan_file(
                    fd, path, entry.offset, info.st_size, self.codec, self.plugins
                )
                head_len = max(entry.head_len, min(HEAD_BYTES, scan.end))
                if head_len != entry.head_len:  # the last read: the entry changes only below
                    entry.head_len, entry.head = head_len, _hash(os.pread(fd, head_len, 0))
                for problem in scan.problems:
                    logger.warning("%s", problem)
                entry.note(scan.problems)
                entry.offset, entry.stopped = scan.end, scan.stopped
                file.scan = scan
            return file
        except OSError as exc:
            return self._unreadable(name, self.state.files.get(name), exc)
        finally:
            os.close(fd)

    def _parts(self, entry: _Entry | None) -> list[pa.Table] | None:
        """The rows kept of a file read before (none without a cache), charged to the run's
        budget; None when they cannot be read."""
        return self.store.read_parts(entry.parts, self.budget) if self.store and entry else []

    def _unreadable(self, name: str, entry: _Entry | None, exc: OSError) -> _File | None:
        self.skipped.append(f"{self.run_dir / name}: cannot be read ({exc.strerror or exc})")
        if entry is None:
            return None
        try:
            tables = self._parts(entry)
        except ReadBudgetError as budget_exc:
            self.skipped.append(str(budget_exc))
            self.whole = False
            tables = []
        return _File(name, entry, tables) if tables is not None else None

    def _keep(self, file: _File, new: pa.Table) -> None:
        """Write a read's new rows of one file as its next part (before the state)."""
        if self.store is None:
            return
        name = f"{self.state.next_part:08d}-{file.entry.id}.parquet"
        try:
            self.store.write_part(name, new)
        except (OSError, pa.ArrowException) as exc:
            logger.warning("%s: not kept (%s)", self.store.folder / name, exc)
            self.store = None  # keep no state that would miss these rows
            return
        self.state.next_part += 1
        file.entry.parts.append(name)

    def _save(self) -> None:
        if self.store is None or self.state.to_json() == self.saved:
            return
        try:
            self.store.save(self.state)
            keep = {part for entry in self.state.files.values() for part in entry.parts}
            self.store.remove_parts_but(
                keep | ({self.state.wide.name} if self.state.wide else set())
            )
        except OSError as exc:
            logger.warning("%s: not kept (%s)", self.store.folder / STATE_FILE, exc)


def _same_file(fd: int, info: os.stat_result, entry: _Entry) -> bool:
    """Whether the open file is the one `entry` describes, grown or not: the same inode, at
    least as long as read, and the same first bytes."""
    if info.st_ino != entry.inode or info.st_size < entry.offset:
        return False
    return not entry.head_len or _hash(os.pread(fd, entry.head_len, 0)) == entry.head


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
