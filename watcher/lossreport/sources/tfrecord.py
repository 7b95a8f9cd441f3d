"""TensorBoard event files read fast and from an offset: TFRecord framing, checksums, and the
scalar summaries in the Event protos, as long rows.

A TFRecord is `uint64 length`, `uint32 masked crc32c(length bytes)`, `data`, `uint32 masked
crc32c(data)`, little-endian. TensorBoard's own reader costs tens of microseconds a record and
a training log holds millions, so almost nothing here is done per record in Python; a file is
read in chunks and each chunk is handled with numpy:

- framing: a stretch of records is framed one by one; when their lengths repeat (a record per
  tag, step after step) the following records are predicted from that cycle and checked all
  at once (`_frame`);
- shapes: a scalar summary is a small record whose bytes keep one layout from step to step
  (the same tag and fields) and differ only in the wall time, the step and the value. The
  first record of each shape is parsed field by field (`_shape_of`); every record of the same
  length whose other bytes are the same, with a step varint as long, has that structure for
  certain, and its fields are read at the same offsets for all of them at once;
- checksums: crc32c is affine, so the records of one shape have the crc of the first one
  xor-ed with what their differing bytes contribute (`_crc_table`), computed for all at once.

Records of any other shape (plugin metadata, images, histograms, the file version) go through
TensorBoard's Event class one by one.

Scalars are what PyTorch's SummaryWriter and tensorboardX write (`simple_value`) and what
TensorFlow 2 writes (a scalar `tensor` for a tag whose metadata, usually on its first value
only, names the "scalars" plugin). TensorBoard's protobuf classes and a CRC32C library come
with the optional `tensorboard` extra and are imported only when a file is read.
"""

from __future__ import annotations

import importlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from .longform import LONG_SCHEMA

EXTRA_HINT = (
    "reading TensorBoard logs needs the tensorboard extra: pip install 'lossreport[tensorboard]'"
)
SCALARS_PLUGIN = "scalars"
CHUNK_BYTES = 4 * 2**20  # read at once (small enough to stay in the CPU caches)
MAX_RECORD_BYTES = 256 * 2**20  # a bigger record (a huge graph) is passed over unread
_STRETCH = 128  # records framed one by one before a cycle of lengths is looked for
_MAX_PERIOD = 64  # the longest cycle looked for: tags logged at each step
_TEMPLATE_TRIES = 64  # shapes tried per record length before the rest go one by one
_TEMPLATE_MAX_BYTES = 4096  # scalar records are tens of bytes; longer ones go one by one
_DATA_CLASS_SCALAR = 1

_LENGTH = struct.Struct("<Q")
_MASK_DELTA = 0xA282EAD8
_WORD = 0xFFFFFFFF

Int64s = npt.NDArray[np.int64]


def missing_extra(run_dir: Path) -> str:
    """The one line a run's report gets when the tensorboard extra is not installed."""
    return f"{run_dir}: {EXTRA_HINT}"


@dataclass(frozen=True)
class Codec:
    """TensorBoard's Event class and a CRC32C function, from the optional extra."""

    event: Any  # tensorboard.compat.proto.event_pb2.Event
    decode_error: type[Exception]
    crc32c: Callable[[bytes], int]


def load_codec() -> Codec | None:
    """The extra's modules, or None when they are not installed. Imported by name, here only,
    so lossreport imports and lists TensorBoard runs without them."""
    try:
        event_pb2 = importlib.import_module("tensorboard.compat.proto.event_pb2")
        message = importlib.import_module("google.protobuf.message")
        crc = importlib.import_module("google_crc32c")
    except ImportError:
        return None
    return Codec(event_pb2.Event, message.DecodeError, crc.value)


def masked_crc(crc: int) -> int:
    """TFRecord's masking of a crc32c (rotate right by 15, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _WORD


def _masked(crcs: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    rotated = (crcs >> np.uint32(15)) | (crcs << np.uint32(17))
    return rotated + np.uint32(_MASK_DELTA)  # wraps in uint32, as the mask does


class Scalars:
    """Scalar values found in one file, in pieces, with each one's record offset for order.

    `plugin_bound` rows are tensor values: scalars only if their tag's metadata says so, which
    may come after them (in another file), so they are filtered at the end (`table`)."""

    def __init__(self) -> None:
        self.tags: list[str] = []
        self._codes: dict[str, int] = {}
        self._pieces: list[tuple[Any, ...]] = []  # numpy columns of records read by shape
        self._one: list[tuple[int, int, int, float, float, bool]] = []  # read one by one

    def code(self, tag: str) -> int:
        found = self._codes.get(tag)
        if found is None:
            found = self._codes[tag] = len(self.tags)
            self.tags.append(tag)
        return found

    def add_many(
        self,
        offsets: Int64s,
        tag: str,
        steps: Int64s,
        walls: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
        plugin_bound: bool,
    ) -> None:
        rows = len(offsets)
        codes = np.full(rows, self.code(tag), np.int32)
        self._pieces.append((offsets, codes, steps, walls, values, np.full(rows, plugin_bound)))

    def add(
        self, offset: int, tag: str, step: int, wall: float, value: float, plugin_bound: bool
    ) -> None:
        self._one.append((offset, self.code(tag), step, wall, value, plugin_bound))

    def __len__(self) -> int:
        return sum(len(piece[0]) for piece in self._pieces) + len(self._one)

    def table(self, plugins: dict[str, str]) -> pa.Table:
        """LONG_SCHEMA rows in the order written, less tensor values of tags whose plugin is
        not "scalars"."""
        pieces = list(self._pieces)
        if self._one:
            types = (np.int64, np.int32, np.int64, np.float64, np.float64, np.bool_)
            columns = zip(*self._one, strict=True)
            pieces.append(tuple(np.array(c, t) for c, t in zip(columns, types, strict=True)))
        if not pieces:
            return LONG_SCHEMA.empty_table()
        offsets, codes, steps, walls, values, bound = (
            np.concatenate([piece[i] for piece in pieces]) for i in range(6)
        )
        scalar_tag = np.array([plugins.get(tag) == SCALARS_PLUGIN for tag in self.tags], bool)
        order = np.argsort(offsets, kind="stable")
        order = order[(~bound | scalar_tag[codes])[order]]
        series = pa.array(self.tags, pa.string()).take(pa.array(codes[order]))
        return pa.table(
            [
                series,
                pa.array(steps[order], pa.int64()),
                pa.array(walls[order], pa.float64()),
                pa.array(values[order], pa.float64()),
            ],
            schema=LONG_SCHEMA,
        )


@dataclass
class FileScan:
    """What one read of one event file found, up to `end`."""

    end: int  # where the next read starts: the first record not read whole
    scalars: Scalars
    problems: list[str]
    stopped: bool = False  # a length failed its checksum: nothing after `end` can be framed


def scan_file(
    fd: int,
    path: Path,
    start: int,
    size: int,
    codec: Codec,
    plugins: dict[str, str],
    *,
    chunk_bytes: int | None = None,
) -> FileScan:
    """Read the records of the open event file `fd` from byte `start` up to `size` (its size
    when it was opened: what a writer adds meanwhile waits for the next read), chunk by chunk.

    `plugins` (tag -> plugin name, first seen wins) is added to. A truncated last record is a
    writer at work: the scan ends before it. Records whose data fail their checksum are
    skipped and named; a length that fails its checksum ends the scan for good (`stopped`).
    """
    scan = FileScan(start, Scalars(), [])
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    while scan.end < size:
        want = min(chunk_bytes, size - scan.end)
        data = os.pread(fd, want, scan.end)
        if not data:  # it shrank while read: the next read sees it replaced
            break
        used, pending = _scan_chunk(data, scan, path, codec, plugins)
        scan.end += used
        if scan.stopped:
            break
        if used:
            continue
        if pending is None:  # not even a whole header: a record being written
            break
        whole = pending + 16
        if scan.end + whole > size:  # being written
            break
        if whole > MAX_RECORD_BYTES:
            scan.problems.append(
                f"{path}: the record at byte {scan.end} is {pending:,} bytes, over the "
                f"{MAX_RECORD_BYTES:,} byte limit; skipped unread"
            )
            scan.end += whole
            continue
        data = os.pread(fd, whole, scan.end)
        if len(data) < whole:
            break
        used, _ = _scan_chunk(data, scan, path, codec, plugins)
        scan.end += used
        if scan.stopped or not used:
            break
    return scan


def _frame(data: bytes, views: _Views) -> tuple[Int64s, int]:
    """The start of each whole record in `data`, and where the first record that is not whole
    starts. Records are framed one by one for a stretch; when the stretch's lengths repeat
    (one record per tag, step after step), the records after it are predicted from the cycle
    and checked all at once, in growing blocks, up to the first whose length is not the one
    predicted: framing from there goes on one by one."""
    pieces: list[Int64s] = []
    size, pos = len(data), 0
    while True:
        starts, lengths, pos = _frame_stretch(data, pos)
        pieces.append(np.array(starts, np.int64))
        if len(starts) < _STRETCH:  # the records left are not whole
            break
        period = next((p for p in range(1, _MAX_PERIOD + 1) if lengths[p:] == lengths[:-p]), 0)
        if not period:
            continue
        cycle = np.array(lengths[-period:], np.int64)
        within = np.concatenate(([0], np.cumsum(cycle + 16)[:-1]))
        cycle_bytes = int(cycle.sum()) + 16 * period
        cycles = 16
        while (count := min(cycles, (size - pos) // cycle_bytes)) > 0:
            predicted = (pos + np.arange(count)[:, None] * cycle_bytes + within).ravel()
            wrong = np.flatnonzero(views.u64[predicted] != np.tile(cycle, count).view(np.uint64))
            if len(wrong):
                pieces.append(predicted[: wrong[0]])
                pos = int(predicted[wrong[0]])
                break
            pieces.append(predicted)
            pos += count * cycle_bytes
            cycles *= 4
    return np.concatenate(pieces), pos


def _frame_stretch(data: bytes, pos: int) -> tuple[list[int], list[int], int]:
    """Up to _STRETCH whole records from `pos`, one by one: their starts and lengths, and the
    start of the next. The one per-record Python loop: keep it short."""
    starts: list[int] = []
    lengths: list[int] = []
    add_start, add_length, length_of = starts.append, lengths.append, _LENGTH.unpack_from
    size = len(data)
    for _ in range(_STRETCH):
        if pos + 12 > size:
            break
        length = length_of(data, pos)[0]
        if pos + length + 16 > size:
            break
        add_start(pos)
        add_length(length)
        pos += length + 16
    return starts, lengths, pos


class _Views:
    """Unaligned little-endian views of a chunk: element i is the value at byte i."""

    def __init__(self, data: bytes) -> None:
        size = len(data)
        self.u8 = np.frombuffer(data, np.uint8)
        self.u32 = np.ndarray((max(size - 3, 0),), "<u4", data, 0, (1,))
        self.f32 = np.ndarray((max(size - 3, 0),), "<f4", data, 0, (1,))
        self.u64 = np.ndarray((max(size - 7, 0),), "<u8", data, 0, (1,))
        self.f64 = np.ndarray((max(size - 7, 0),), "<f8", data, 0, (1,))


def _scan_chunk(
    data: bytes, scan: FileScan, path: Path, codec: Codec, plugins: dict[str, str]
) -> tuple[int, int | None]:
    """Frame, check and decode the whole records of `data` (which starts at byte `scan.end`
    of the file) into `scan`. Returns how many bytes were used, and the length of the first
    record not whole when its header is whole and sound."""
    base = scan.end
    views = _Views(data)
    starts, used = _frame(data, views)
    raw_lengths = views.u64[starts]
    bad = np.flatnonzero(views.u32[starts + 8] != _length_crcs.of(raw_lengths, codec))
    lengths = raw_lengths.astype(np.int64)  # of whole records in `data`: small
    pending: int | None = None
    if len(bad):
        cut = int(bad[0])
        used = int(starts[cut])
        starts, lengths = starts[:cut], lengths[:cut]
        _stop(scan, path, base + used)
    elif used + 12 <= len(data):
        (length,) = _LENGTH.unpack_from(data, used)
        if _length_crcs.of(np.array([length], np.uint64), codec)[0] != views.u32[used + 8]:
            _stop(scan, path, base + used)
        else:
            pending = length
    damaged = _decode(data, views, starts + 12, lengths, base, scan, path, codec, plugins)
    for offset in sorted(damaged):
        scan.problems.append(f"{path}: the record at byte {offset} fails its checksum; skipped")
    return used, pending


def _stop(scan: FileScan, path: Path, offset: int) -> None:
    scan.stopped = True
    scan.problems.append(
        f"{path}: the length of the record at byte {offset} fails its checksum; "
        "the rest of the file cannot be read"
    )


class _LengthCrcs:
    """The masked crc32c each length's 8 bytes must carry: computed once per length (a log
    has few), then looked up for all records at once."""

    def __init__(self) -> None:
        self.lengths = np.zeros(0, np.uint64)  # sorted
        self.crcs = np.zeros(0, np.uint32)

    def of(self, lengths: npt.NDArray[np.uint64], codec: Codec) -> npt.NDArray[np.uint32]:
        if not len(lengths):
            return self.crcs[:0]
        where = np.searchsorted(self.lengths, lengths)
        if not len(self.lengths) or not (self.lengths[where % len(self.lengths)] == lengths).all():
            known = set(self.lengths.tolist()) if len(self.lengths) < 4096 else set()
            known.update(np.unique(lengths).tolist())
            self.lengths = np.array(sorted(known), np.uint64)
            self.crcs = np.array(
                [masked_crc(codec.crc32c(_LENGTH.pack(length))) for length in sorted(known)],
                np.uint32,
            )
            where = np.searchsorted(self.lengths, lengths)
        found: npt.NDArray[np.uint32] = self.crcs[where]
        return found


_length_crcs = _LengthCrcs()


def _decode(
    data: bytes,
    views: _Views,
    starts: Int64s,
    lengths: Int64s,
    base: int,
    scan: FileScan,
    path: Path,
    codec: Codec,
    plugins: dict[str, str],
) -> list[int]:
    """Check and decode records (their data's starts and lengths), by shape where one fits,
    the rest one by one. Returns the offsets of those whose data fail their checksum."""
    one_by_one: list[Int64s] = []
    damaged: list[int] = []
    small = len(lengths) and lengths.max() < 2**16  # sorted by radix then
    order = np.argsort(lengths.astype(np.uint16) if small else lengths, kind="stable")
    starts, lengths = starts[order], lengths[order]
    edges = np.flatnonzero(np.diff(lengths)) + 1
    for group in np.split(np.arange(len(lengths)), edges):
        if not len(group):
            continue
        length = int(lengths[group[0]])
        left = starts[group]
        tries = 0
        while len(left) and 8 <= length <= _TEMPLATE_MAX_BYTES and tries < _TEMPLATE_TRIES:
            tries += 1
            first = int(left[0])
            shape = _shape_of(data[first : first + length], codec.crc32c)
            if shape is None:
                one_by_one.append(left[:1])
                left = left[1:]
                continue
            fits = shape.fits(views, left)
            mine, left = left[fits], left[~fits]
            sound = shape.sound(views, mine, codec.crc32c)
            damaged += (mine[~sound] + (base - 12)).tolist()
            if sound.any():
                if shape.plugin:
                    plugins.setdefault(shape.tag, shape.plugin)
                shape.decode(views, mine[sound], base - 12, scan.scalars)
        one_by_one.append(left)
    rest = np.sort(np.concatenate(one_by_one)) if one_by_one else starts[:0]
    if len(rest):
        ends = rest + views.u64[rest - 12].astype(np.int64)
        stored = views.u32[ends].tolist()
        for start, end, crc in zip(rest.tolist(), ends.tolist(), stored, strict=True):
            record = data[start:end]
            if masked_crc(codec.crc32c(record)) != crc:
                damaged.append(base + start - 12)
            else:
                _decode_one(record, base + start - 12, scan, path, codec, plugins)
    return damaged


_CRC_TABLES: dict[int, npt.NDArray[np.uint32]] = {}


def _crc_table(after: int, crc32c: Callable[[bytes], int]) -> npt.NDArray[np.uint32]:
    """What each value of a byte followed by `after` bytes adds (xor) to a crc32c: crc32c is
    affine, so records of one shape differ in their crc by the xor of their varying bytes'."""
    table = _CRC_TABLES.get(after)
    if table is None:
        zeros = bytes(after)
        table = np.array([crc32c(bytes((byte,)) + zeros) for byte in range(256)], np.uint32)
        table ^= np.uint32(crc32c(bytes(after + 1)))
        _CRC_TABLES[after] = table
    return table


def _decode_one(
    data: bytes, offset: int, scan: FileScan, path: Path, codec: Codec, plugins: dict[str, str]
) -> None:
    """One record through TensorBoard's Event class: scalars kept, plugin metadata noted."""
    try:
        event = codec.event.FromString(data)
    except codec.decode_error:
        scan.problems.append(f"{path}: the record at byte {offset} is not an Event; skipped")
        return
    if not event.HasField("summary"):
        return
    step, wall = event.step, event.wall_time
    for value in event.summary.value:
        tag = value.tag
        if value.HasField("metadata") and tag not in plugins:
            metadata = value.metadata
            scalar = metadata.data_class == _DATA_CLASS_SCALAR
            plugins[tag] = SCALARS_PLUGIN if scalar else metadata.plugin_data.plugin_name
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            scan.scalars.add(offset, tag, step, wall, value.simple_value, False)
        elif kind == "tensor":
            number = _tensor_scalar(value.tensor)
            if number is not None:
                scan.scalars.add(offset, tag, step, wall, number, True)


# TensorProto's dtype -> (numpy type of tensor_content, the repeated field for one value)
_TENSOR_TYPES: dict[int, tuple[str, str]] = {
    1: ("<f4", "float_val"),  # DT_FLOAT
    2: ("<f8", "double_val"),  # DT_DOUBLE
    3: ("<i4", "int_val"),  # DT_INT32
    4: ("u1", "int_val"),  # DT_UINT8
    5: ("<i2", "int_val"),  # DT_INT16
    6: ("i1", "int_val"),  # DT_INT8
    9: ("<i8", "int64_val"),  # DT_INT64
    10: ("?", "bool_val"),  # DT_BOOL
    14: ("<u2", "half_val"),  # DT_BFLOAT16: the top 16 bits of a float32
    17: ("<u2", "int_val"),  # DT_UINT16
    19: ("<f2", "half_val"),  # DT_HALF: a float16's bits
    22: ("<u4", "uint32_val"),  # DT_UINT32
    23: ("<u8", "uint64_val"),  # DT_UINT64
}
_BFLOAT16, _HALF = 14, 19


def _tensor_scalar(tensor: Any) -> float | None:
    """The number a TensorProto holds when it holds exactly one real number, else None."""
    if any(dim.size != 1 for dim in tensor.tensor_shape.dim):
        return None
    kind = _TENSOR_TYPES.get(tensor.dtype)
    if kind is None:
        return None
    numpy_type, field_name = kind
    if tensor.tensor_content:
        if len(tensor.tensor_content) != np.dtype(numpy_type).itemsize:
            return None
        number = np.frombuffer(tensor.tensor_content, numpy_type)[0]
    else:
        values = getattr(tensor, field_name)
        if len(values) != 1:
            return None
        number = values[0]
        if tensor.dtype == _HALF:
            return float(np.array([number], np.uint16).view(np.float16)[0])
    if tensor.dtype == _BFLOAT16:
        return float(np.array([int(number) << 16], np.uint32).view(np.float32)[0])
    return float(number)


@dataclass(frozen=True)
class _Shape:
    """Where a scalar record's variable fields lie, and what every other byte must be.

    `words`: (offset, mask, bytes) of 8-byte words covering the record; the mask leaves out
    the wall time and the value, and keeps only the continuation bits of the step's varint, so
    a record with the same length that passes is the same protobuf structure."""

    length: int
    words: tuple[tuple[int, int, int], ...]
    tag: str
    wall: int | None
    step: tuple[int, int] | None  # offset, width of the varint
    value: int
    double: bool  # the value is a float64 (else a float32)
    tensor: bool  # a tensor value: a scalar only if its tag's plugin is "scalars"
    varying: tuple[tuple[int, int], ...]  # (offset, byte) where records of the shape may differ
    crc: int  # crc32c of the record the shape was taken from
    plugin: str  # the plugin its metadata names; "" without metadata

    def fits(self, views: _Views, starts: Int64s) -> npt.NDArray[np.bool_]:
        fits = np.ones(len(starts), bool)
        for offset, mask, want in self.words:
            fits &= (views.u64[starts + offset] & np.uint64(mask)) == np.uint64(want)
        return fits

    def sound(
        self, views: _Views, starts: Int64s, crc32c: Callable[[bytes], int]
    ) -> npt.NDArray[np.bool_]:
        """Whether each record (of this shape) has the checksum its data need."""
        crcs = np.full(len(starts), self.crc, np.uint32)
        for offset, byte in self.varying:
            after = self.length - 1 - offset
            crcs ^= _crc_table(after, crc32c)[views.u8[starts + offset] ^ byte]
        sound: npt.NDArray[np.bool_] = _masked(crcs) == views.u32[starts + self.length]
        return sound

    def decode(self, views: _Views, starts: Int64s, base: int, scalars: Scalars) -> None:
        if not len(starts):
            return
        if self.wall is None:
            walls = np.zeros(len(starts))
        else:
            walls = views.f64[starts + self.wall].astype(np.float64)
        steps = np.zeros(len(starts), np.uint64)
        if self.step is not None:
            offset, width = self.step
            for i in range(width):
                bits = (views.u8[starts + offset + i] & 0x7F).astype(np.uint64)
                steps |= bits << np.uint64(7 * i)
        values = (views.f64 if self.double else views.f32)[starts + self.value]
        scalars.add_many(
            starts + base,
            self.tag,
            steps.view(np.int64),
            walls,
            values.astype(np.float64),
            self.tensor,
        )


class _Wire:
    """Protobuf wire format, enough to find the fields of one small record."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def varint(self, pos: int, end: int) -> tuple[int, int] | None:
        value = shift = 0
        while pos < end and shift < 70:
            byte = self.data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
        return None

    def fields(self, pos: int, end: int) -> list[tuple[int, int, int, int]] | None:
        """(field, wire type, start of the value, its end) for each field, in order."""
        found = []
        while pos < end:
            key = self.varint(pos, end)
            if key is None:
                return None
            number, wire = key[0] >> 3, key[0] & 7
            pos = key[1]
            if wire == 0:
                varint = self.varint(pos, end)
                if varint is None:
                    return None
                value_end = varint[1]
            elif wire in (1, 5):
                value_end = pos + (8 if wire == 1 else 4)
            elif wire == 2:
                length = self.varint(pos, end)
                if length is None:
                    return None
                pos, value_end = length[1], length[1] + length[0]
            else:
                return None
            if value_end > end:
                return None
            found.append((number, wire, pos, value_end))
            pos = value_end
        return found


def _shape_of(data: bytes, crc32c: Callable[[bytes], int]) -> _Shape | None:
    """The shape of a record holding one scalar value and nothing else, or None."""
    wire = _Wire(data)
    fields = wire.fields(0, len(data))
    if fields is None or len({number for number, *_ in fields}) != len(fields):
        return None
    wall = step = None
    summary = None
    for number, kind, start, end in fields:
        if (number, kind) == (1, 1):
            wall = start
        elif (number, kind) == (2, 0):
            step = (start, end - start)
        elif (number, kind) == (5, 2):
            summary = wire.fields(start, end)
        else:
            return None
    if not summary or len(summary) != 1 or summary[0][:2] != (1, 2):
        return None
    value = _value_shape(wire, *summary[0][2:])
    if value is None:
        return None
    tag, offset, double, tensor, plugin = value
    mask = bytearray(b"\xff" * len(data))
    if wall is not None:
        mask[wall : wall + 8] = bytes(8)
    if step is not None:
        mask[step[0] : step[0] + step[1]] = b"\x80" * step[1]
    mask[offset : offset + (8 if double else 4)] = bytes(8 if double else 4)
    words = []
    for at in range(0, len(data), 8):
        at = min(at, len(data) - 8)
        word_mask = int.from_bytes(mask[at : at + 8], "little")
        if word_mask:
            want = int.from_bytes(data[at : at + 8], "little") & word_mask
            words.append((at, word_mask, want))
    varying = tuple((at, data[at]) for at in range(len(data)) if mask[at] != 0xFF)
    return _Shape(
        len(data),
        tuple(words),
        tag,
        wall,
        step,
        offset,
        double,
        tensor,
        varying,
        crc32c(data),
        plugin,
    )


def _value_shape(wire: _Wire, start: int, end: int) -> tuple[str, int, bool, bool, str] | None:
    """A Summary.Value with a tag and a float simple_value or a one-float tensor, and maybe
    metadata (PyTorch's new-style scalars carry it on every value), nothing else: its tag, the
    value's offset, whether it is a double, whether a tensor, the metadata's plugin ("" for
    none)."""
    fields = wire.fields(start, end)
    if fields is None or len({number for number, *_ in fields}) != len(fields):
        return None
    tag: str | None = None
    plugin: str | None = ""
    found: tuple[int, bool, bool] | None = None
    for number, kind, begin, finish in fields:
        if (number, kind) == (1, 2):
            tag = _text(wire.data[begin:finish])
        elif (number, kind) == (9, 2):
            plugin = _plugin_of(wire, begin, finish)
        elif (number, kind) == (2, 5):
            found = (begin, False, False)
        elif (number, kind) == (8, 2):
            tensor = _tensor_shape(wire, begin, finish)
            if tensor is None:
                return None
            found = (tensor[0], tensor[1], True)
        else:
            return None
    if not tag or found is None or plugin is None:
        return None
    return (tag, *found, plugin)


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def _plugin_of(wire: _Wire, start: int, end: int) -> str | None:
    """The plugin a SummaryMetadata names ("scalars" for the scalar data class), or None
    when it is not one the shapes know."""
    fields = wire.fields(start, end)
    if fields is None or len({number for number, *_ in fields}) != len(fields):
        return None
    plugin: str | None = ""
    for number, kind, begin, finish in fields:
        if (number, kind) == (1, 2):  # plugin_data
            inner = wire.fields(begin, finish)
            if inner is None:
                return None
            names = [_text(wire.data[b:f]) for n, k, b, f in inner if (n, k) == (1, 2)]
            plugin = names[-1] if names else ""
        elif (number, kind) == (4, 0):  # data_class
            read = wire.varint(begin, finish)
            if read and read[0] == _DATA_CLASS_SCALAR:
                return SCALARS_PLUGIN
        elif (number, kind) not in ((2, 2), (3, 2)):  # display name, description
            return None
    return plugin


def _tensor_shape(wire: _Wire, start: int, end: int) -> tuple[int, bool] | None:
    """A scalar DT_FLOAT or DT_DOUBLE TensorProto with its one value in tensor_content,
    float_val or double_val: the value's offset and whether it is a double."""
    fields = wire.fields(start, end)
    if fields is None or len({number for number, *_ in fields}) != len(fields):
        return None
    dtype = 0
    found: tuple[int, bool] | None = None
    if len({4, 5, 6} & {number for number, *_ in fields}) > 1:  # two places for the value
        return None
    for number, kind, begin, finish in fields:
        size = finish - begin
        if (number, kind) == (1, 0):
            read = wire.varint(begin, finish)
            dtype = read[0] if read else 0
        elif (number, kind) == (2, 2):
            if size:  # a shape with dimensions
                return None
        elif number == 4 and kind == 2 and size in (4, 8):  # tensor_content
            found = (begin, size == 8)
        elif (number, kind, size) in ((5, 2, 4), (5, 5, 4)):  # float_val, packed or not
            found = (begin, False)
        elif (number, kind, size) in ((6, 2, 8), (6, 1, 8)):  # double_val
            found = (begin, True)
        else:
            return None
    if found is None or dtype != (2 if found[1] else 1):
        return None
    return found
