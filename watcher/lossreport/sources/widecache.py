"""A source's last read, kept whole in the run's cache: its wide table, so that a read that
finds nothing new maps it back in a fraction of a millisecond, whatever the run's length,
instead of reading every part again and making it wide (tensorboard.py, wandb_runs.py) or
parsing every file again (`read_whole`: dvclive.py, lightning.py, mlflow.py, hf_trainer.py).

The table is written after a read that found something, as `wide-NNNNNNNN.arrow` (Arrow IPC,
one record batch, uncompressed, read-only), numbered with the cache's parts; the source's
state names it (`Kept`) with the parts it was made from, and uses it only while they are
still the state's parts (or, for `read_whole`, while the files are the ones it was read from).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import storage
from ..runformat import STEP, LossData
from .longform import FileStat

logger = logging.getLogger(__name__)

NAME = re.compile(r"^wide-(\d{8,})\.arrow$")
_TYPES = (pa.int64(), pa.float64())  # fixed width only: a mapped table is checked cheaply
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class Kept:
    """The kept table's file, the parts it was made from, the series its read left out."""

    name: str
    parts: list[str]
    notes: list[str]


def name_for(number: int) -> str:
    return f"wide-{number:08d}.arrow"


def parse(document: Any, next_number: int) -> Kept | None:
    """A state's `wide` entry, checked (TypeError, ValueError); None for none (a state written
    before the table was kept has none)."""
    if document is None:
        return None
    kept = Kept(
        text(document["name"]),
        [text(part) for part in document["parts"]],
        [text(line) for line in document["notes"]],
    )
    match = NAME.match(kept.name)
    if not match or int(match[1]) >= next_number:
        raise ValueError(f"not a wide table's name: {kept.name!r}")
    return kept


def text(value: Any) -> str:
    """`value`, a string read from a cache's state file; TypeError if it is not one."""
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def read_table(folder: Path, dir_fd: int, name: str, budget: storage.ReadBudget) -> pa.Table | None:
    """The table kept as `name` in the folder `dir_fd` holds, memory-mapped (its pages are read
    when used), or None when it cannot be used: unreadable, not a table of steps and numbers,
    or larger than what is left of `budget` (charged with its size when it fits)."""
    path = folder / name
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= budget.left:
                return None
            if info.st_uid != os.geteuid() or info.st_mode & 0o222:
                # A mapped file cut short kills the process that reads it (SIGBUS): only a
                # read-only one of this user's own is mapped, which nobody else can cut.
                raise ValueError("not a read-only file of this user's")
            mapped = mmap.mmap(fd, info.st_size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        with pa.ipc.open_file(pa.py_buffer(mapped)) as reader:
            table = reader.read_all()
        if table.schema.names[:1] != [STEP] or any(
            column.type not in _TYPES for column in table.columns
        ):
            raise ValueError("not a table of steps and numbers")
        table.validate()  # buffers' sizes against the rows: no read past the file
    except (OSError, ValueError, pa.ArrowException) as exc:
        logger.warning("%s: unreadable (%s); reading the parts again", path, exc)
        return None
    budget.charge(path, info.st_size)
    return table


def write(folder: Path, dir_fd: int, name: str, table: pa.Table) -> None:
    """One record batch, uncompressed: mapped back without decoding or copying (read_table)."""
    with storage.atomic_file(folder / name, replace=False, dir_fd=dir_fd) as handle:
        with pa.ipc.new_file(handle, table.schema) as writer:
            writer.write_table(table.combine_chunks())
        os.fchmod(handle.fileno(), 0o444)  # read-only: see read_table


# A source that reads its files whole (no parts: DVCLive, Lightning, MLflow, the Trainer's
# state) keeps its last read's table the same way, named in `STATE_FILE` beside it with the
# files it was read from (name, inode, size, time), and maps it back while they are unchanged.
STATE_FILE = "kept.json"
STATE_FORMAT = "lossreport.kept-table/1"
MAX_STATE_BYTES = 4 * 2**20


def read_whole(
    cache: Path | None,
    folder_name: str,
    files: list[tuple[str, FileStat]],
    read: Callable[[], LossData],
    found: list[str] | None = None,
) -> LossData:
    """`read()` (the files, read whole), or, when none of `files` (nor what else was `found`
    in their place: links named, not read) changed since the read that gave it, that read's
    table, mapped, and its `skipped`. Without `cache`, or when it cannot be used, `read()`.
    The caller stats the files before reading them, so a change meanwhile is read next time."""
    lines = [f"{name}:{s.inode}:{s.size}:{s.mtime_ns}" for name, s in files]
    key = "\n".join([*lines, *(found or [])])
    with opened(cache, folder_name) as fd:
        if fd is None or cache is None:
            return read()
        folder = cache / folder_name
        kept = _kept(folder, fd, key)
        if kept is not None:
            table = read_table(folder, fd, kept.name, storage.ReadBudget())
            if table is not None:
                return LossData(table, list(kept.notes))
        data = read()
        # A file written within its time stamp's tick could be rewritten, at the same size,
        # and look the same: it is not trusted to be unchanged (storage.RACY_NS).
        newest = max((s.mtime_ns for _, s in files), default=0)
        settled = not storage.changed_too_recently(newest)
        if data.table.num_rows and not data.over_budget and settled:
            _keep(folder, fd, key, data)
        return data


@contextmanager
def opened(cache: Path | None, folder_name: str) -> Iterator[int | None]:
    """`cache/folder_name/`, made if missing, as a descriptor; None without a cache, or when
    it cannot be made or opened (another user's folder, a link): the run is then read whole."""
    if cache is None:
        yield None
        return
    folder = cache / folder_name
    try:
        storage.make_dir(cache)
        with storage.opened_dir(cache) as cache_fd:
            storage.make_dir(folder, dir_fd=cache_fd)
            fd = storage.open_dir(folder, dir_fd=cache_fd)
    except OSError as exc:
        logger.warning("%s: no cache there (%s); reading the run whole", folder, exc)
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _kept(folder: Path, fd: int, key: str) -> Kept | None:
    """The kept table's entry when it was read from the files `key` describes."""
    try:
        document = json.loads(storage.read_bytes(folder / STATE_FILE, MAX_STATE_BYTES, dir_fd=fd))
        if document["format"] != STATE_FORMAT:
            raise ValueError("another format")
        if document["key"] != key:
            return None
        return parse(document["wide"], _next_number(fd))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        logger.warning("%s: unreadable (%s); reading the run again", folder / STATE_FILE, exc)
        return None


def _keep(folder: Path, fd: int, key: str, data: LossData) -> None:
    """Write the table, then the state naming it, then remove the tables it replaced."""
    name = name_for(_next_number(fd))
    try:
        document = {
            "format": STATE_FORMAT,
            "key": key,
            "wide": asdict(Kept(name, [], data.skipped)),
        }
        state = json.dumps(document).encode()
        if len(state) > MAX_STATE_BYTES:
            raise ValueError(f"its state would take {len(state):,} bytes")
        write(folder, fd, name, data.table)
        storage.atomic_write(folder / STATE_FILE, state, dir_fd=fd)
        for old in _names(fd):
            if old != name:
                storage.remove_at(old, fd)
    except (OSError, ValueError, pa.ArrowException) as exc:
        logger.warning("%s: not kept (%s)", folder / name, exc)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as entries:
        return [entry.name for entry in entries if NAME.match(entry.name)]


def _next_number(fd: int) -> int:
    """Past every table's number in the folder: a name is never used twice."""
    return max((int(match[1]) for n in _names(fd) if (match := NAME.match(n))), default=0) + 1
