"""W&B's transaction log, `run-ID.wandb`: its framing, its checksums, and its records.

Every W&B run, online or offline, appends what it logs to this file as it goes. Its layout
(the W&B SDK's own reader was `wandb/sdk/internal/datastore.py`; the writer is now wandb-core's
`leveldb` package):

- a 7-byte header: `:W&B`, the magic 0xBEE1 (uint16) and the version 0 (uint8);
- then LevelDB-log blocks of 32 KiB, counted from the file's first byte. A block holds
  fragments, `uint32 checksum, uint16 length, uint8 type, data` (little-endian), and a
  fragment never crosses a block's end: fewer than 7 bytes left in a block are zero padding.
  A record that does not fit is cut into a FIRST, MIDDLE ones and a LAST fragment; one that
  fits is FULL. The checksum is zlib's crc32 (IEEE, as W&B writes it; LevelDB itself uses
  crc32c) of the type byte and the data.

Each record is a W&B `Record` protobuf, decoded with the classes the wandb package generates
from its `wandb_internal.proto` (the optional `wandb` extra, imported only when a file is read).
A record's kind is the first field after its number, so the many records lossreport does not
need (summaries, console output, system metrics) are told apart from their first bytes without
decoding them (`kind_of`).
"""

from __future__ import annotations

import importlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTRA_HINT = "reading W&B runs needs the wandb extra: pip install 'lossreport[wandb]'"
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
HEADER_BYTES = len(HEADER)
BLOCK_BYTES = 32768
FRAGMENT_HEADER_BYTES = 7
CHUNK_BYTES = 128 * BLOCK_BYTES  # read at once: whole blocks, so fragments are whole
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
MAX_PROBLEMS = 20  # named per read; beyond them, counted

# A record's kind: the number of its `record_type` field, told from its first bytes.
HISTORY = 2
SUMMARY = 3
OUTPUT = 4
STATS = 7  # system metrics
TELEMETRY = 11
METRIC = 12  # define_metric
OUTPUT_RAW = 13
UNREAD_KINDS = frozenset({OUTPUT, STATS, TELEMETRY, OUTPUT_RAW})
# Fields beside `record_type` that may come before it: num, control, uuid, _info.
_BESIDE = frozenset({1, 16, 19, 200})
_MAX_BESIDE = 4

_FRAGMENT = struct.Struct("<IHB")
_TYPE_CRCS = [zlib.crc32(bytes((kind,))) for kind in range(256)]


def missing_extra(run_dir: Path) -> str:
    """The one line a run's report gets when the wandb extra is not installed."""
    return f"{run_dir}: {EXTRA_HINT}"


@dataclass(frozen=True)
class Codec:
    """W&B's Record class, from the optional extra."""

    record: Any  # wandb.proto.wandb_internal_pb2.Record
    decode_error: type[Exception]


def load_codec() -> Codec | None:
    """The extra's modules, or None when they are not installed. Imported by name, here only,
    so lossreport imports and lists W&B runs without them."""
    try:
        internal = importlib.import_module("wandb.proto.wandb_internal_pb2")
        message = importlib.import_module("google.protobuf.message")
    except ImportError:
        return None
    return Codec(internal.Record, message.DecodeError)


def kind_of(record: bytes) -> int:
    """The number of a record's `record_type` field, read from its wire format past the
    fields that may precede it (W&B's writer puts its `_info` first); 0 when there is none."""
    if record[:1] == b"\x08":  # the usual start, `num`, then the record's field: no calls
        pos = 1
        while pos < len(record) and record[pos] & 0x80:
            pos += 1
        if pos + 1 < len(record) and record[pos + 1] < 0x80:
            number = record[pos + 1] >> 3
            if number not in _BESIDE:
                return number
    pos = 0
    for _ in range(_MAX_BESIDE + 1):
        key, pos = _varint(record, pos)
        number, wire = key >> 3, key & 7
        if number not in _BESIDE:
            return number
        if wire == 0:
            _, pos = _varint(record, pos)
        elif wire == 2:
            length, pos = _varint(record, pos)
            pos += length
        else:
            return 0
    return 0


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; 0 past the end."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return 0, len(data)


@dataclass
class LogScan:
    """One read of a log from `start`: the records whole in it, and where the next read starts
    (`end`, the first byte of the first record not read whole: a writer at work)."""

    path: Path
    start: int
    end: int = 0
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0
    stopped: bool = False  # not a W&B log (its header): never read further
    tail: bool = False  # started mid-file: a record cut at the start is passed over quietly

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.path}: {problem}")
        else:
            self.more_problems += 1

    def records(self, fd: int, size: int) -> Iterator[bytes]:
        """The records whole between `start` and `size` (the file's size when it was opened:
        what is written meanwhile waits for the next read), in order. A fragment whose
        checksum fails is named and the rest of its block passed over, as LevelDB does."""
        self.end = pos = self.start
        if pos < HEADER_BYTES:
            head = os.pread(fd, HEADER_BYTES, 0)
            if len(head) < HEADER_BYTES:
                return  # being written
            if head != HEADER:
                self.stopped = True
                self.note(f"not a W&B transaction log (its first bytes are {head!r}); not read")
                return
            self.end = pos = HEADER_BYTES
        pieces: list[bytes] | None = None  # a record's fragments so far, from FIRST
        while pos < size:
            base = pos - pos % BLOCK_BYTES
            data = os.pread(fd, min(CHUNK_BYTES, size - base), base)
            if len(data) <= pos - base:
                return  # it shrank while read: the next read sees it replaced
            at = pos - base
            whole = len(data)
            while at < whole:
                room = BLOCK_BYTES - (base + at) % BLOCK_BYTES
                if room < FRAGMENT_HEADER_BYTES:
                    at += room
                    if pieces is None:
                        self.end = min(base + at, size)
                    continue
                if at + FRAGMENT_HEADER_BYTES > whole:
                    return  # a fragment being written
                crc, length, kind = _FRAGMENT.unpack_from(data, at)
                stop = at + FRAGMENT_HEADER_BYTES + length
                if FRAGMENT_HEADER_BYTES + length > room or kind > LAST:
                    self._pass_block(base + at, "is not a fragment", pieces)
                    pieces, at = None, at + room
                    self.end = base + at
                    continue
                if stop > whole:
                    return  # being written
                payload = data[at + FRAGMENT_HEADER_BYTES : stop]
                if zlib.crc32(payload, _TYPE_CRCS[kind]) != crc:
                    if kind == 0 and crc == 0 and not payload.strip(b"\0"):
                        return  # zeros: space a writer reserved and has not filled yet
                    self._pass_block(base + at, "fails its checksum", pieces)
                    pieces, at = None, at + room
                    self.end = base + at
                    continue
                at = stop
                if kind == FULL:
                    if pieces is not None:
                        self.note(f"a record cut short before byte {base + stop - length - 7}")
                    pieces = None
                    self.end = base + at
                    yield payload
                elif kind == FIRST:
                    if pieces is not None:
                        self.note(f"a record cut short before byte {base + stop - length - 7}")
                    pieces = [payload]
                elif pieces is None:
                    if not (self.tail and self.end == self.start):
                        self.note(f"a record's end without its start at byte {base + stop}")
                    self.end = base + at
                elif kind == MIDDLE:
                    pieces.append(payload)
                else:
                    pieces.append(payload)
                    record = b"".join(pieces)
                    pieces = None
                    self.end = base + at
                    yield record
            pos = base + at

    def _pass_block(self, offset: int, why: str, pieces: list[bytes] | None) -> None:
        cut = "; the record it belongs to is lost" if pieces is not None else ""
        self.note(f"the fragment at byte {offset} {why}; the rest of its block is skipped{cut}")


def tail_start(size: int, blocks: int = 2) -> int:
    """Where a scan of the last `blocks` blocks of a log of `size` bytes starts: a block's
    first byte (or the first after the header)."""
    start = max(0, (size - 1) // BLOCK_BYTES - blocks + 1) * BLOCK_BYTES
    return max(start, HEADER_BYTES)
