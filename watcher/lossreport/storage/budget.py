"""How much memory reading one run may take: the size of its data once decoded.

A few hundred KB of compressed Parquet, a metric file of short lines or a CSV of empty cells
can decode to gigabytes, and a run may hold thousands of files. So every reader of a run (the
renderer, `serve`, the alert checker, every source) estimates what each file will take once
decoded before decoding it (from Parquet's metadata, or from a text file's bytes and lines) and
charges it to a `ReadBudget`, one per read of a run. A file that does not fit in what is left is
not decoded: `charge` raises ReadBudgetError naming the file and the budget, and the reader
skips the file and names it, as it does an unreadable one.

The budget is DEFAULT_BUDGET_BYTES, or what the environment variable LOSSREPORT_READ_BUDGET
says (bytes, or with a K, M or G suffix: `2G`), read when a budget is made: a daemon's render
workers, `serve` and `render` all take it from their environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import FileTooLargeError, InvalidInputError, ReadBudgetError
from .local import read_bytes

BUDGET_VARIABLE = "LOSSREPORT_READ_BUDGET"
# Documented in docs/run-directory-format.md. A render's peak memory is about 2.5 times the
# decoded size (the losses, their sorted copy, the report's arrays) on top of ~300 MB.
DEFAULT_BUDGET_BYTES = 512 * 2**20
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def budget_bytes() -> int:
    """DEFAULT_BUDGET_BYTES, or LOSSREPORT_READ_BUDGET's size (InvalidInputError naming the
    variable when it is not a positive size)."""
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not text:
        return DEFAULT_BUDGET_BYTES
    match = _SIZE.fullmatch(text)
    size = int(float(match[1]) * _UNITS[match[2].lower()]) if match else 0
    if size <= 0:
        raise InvalidInputError(
            f"{BUDGET_VARIABLE}={text!r}: not a size in bytes (a number, or with K, M or G)"
        )
    return size


class ReadBudget:
    """What one read of a run may still decode; `refused` holds each refusal's message."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = budget_bytes() if limit is None else limit
        self.spent = 0
        self.refused: list[str] = []

    @property
    def left(self) -> int:
        return max(0, self.limit - self.spent)

    def charge(self, path: Path, size: int, what: str = "once decoded") -> None:
        """Take `size` bytes for `path`, or raise ReadBudgetError (and note it) when they do
        not fit."""
        if size <= self.left:
            self.spent += size
            return
        raise self._refuse(path, f"would take {size:,} bytes {what}")

    def release(self, size: int) -> None:
        """Give back `size` bytes of a charge that parsing took and no longer holds (a file's
        bytes and text cells, once its values are extracted), so that a run of many files is
        held to the budget at its peak, not the sum of every parse."""
        self.spent = max(0, self.spent - size)

    def read_file(self, path: Path, limit: int) -> bytes:
        """storage.read_bytes, at most `limit` bytes and no more than is left (not charged:
        the caller charges the bytes with what parsing them takes). ReadBudgetError when the
        file is larger than what is left."""
        room = self.left
        try:
            return read_bytes(path, min(limit, room))
        except FileTooLargeError as exc:
            if room >= limit:
                raise
            raise self._refuse(path, f"is larger than the {room:,} bytes left") from exc

    def _refuse(self, path: Path, why: str) -> ReadBudgetError:
        spent = f"; {self.spent:,} of them taken by what was read before" if self.spent else ""
        error = ReadBudgetError(
            path,
            f"{why}, over the run's read budget of {self.limit:,} bytes{spent} "
            f"({BUDGET_VARIABLE} sets it); not read",
        )
        self.refused.append(str(error))
        return error
