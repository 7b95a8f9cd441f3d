"""A cached source's last read, kept whole: its wide table, so that a read that finds nothing
new maps it back in a few milliseconds, whatever the run's length, instead of reading every
part again and making it wide (tensorboard.py, wandb_runs.py).

The table is written after a read that found something, as `wide-NNNNNNNN.arrow` (Arrow IPC,
one record batch, uncompressed, read-only), numbered with the cache's parts; the source's
state names it (`Kept`) with the parts it was made from, and uses it only while they are
still the state's parts.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import storage
from ..runformat import STEP

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
        _text(document["name"]),
        [_text(part) for part in document["parts"]],
        [_text(line) for line in document["notes"]],
    )
    match = NAME.match(kept.name)
    if not match or int(match[1]) >= next_number:
        raise ValueError(f"not a wide table's name: {kept.name!r}")
    return kept


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def read(folder: Path, dir_fd: int, name: str, budget: storage.ReadBudget) -> pa.Table | None:
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
    """One record batch, uncompressed: mapped back without decoding or copying."""
    with storage.atomic_file(folder / name, replace=False, dir_fd=dir_fd) as handle:
        with pa.ipc.new_file(handle, table.schema) as writer:
            writer.write_table(table.combine_chunks())
        os.fchmod(handle.fileno(), 0o444)  # read-only: see read
