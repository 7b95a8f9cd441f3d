"""The run-directory format, `lossreport.run/1`: the only module that knows its file names.

A run directory holds `run.json` (metadata and status, always replaced atomically) and
`losses/part-NNNNNN[-rankR][-wTOKEN].parquet` shards (`step` int64, `wall_time` float64, one float64
column per loss). The trainer, the renderer and the daemon all read and write through here.
See docs/run-directory-format.md for the contract other writers can implement.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import CorruptShardError, MalformedRunFileError, RunDirectoryError, UnsafePathError

logger = logging.getLogger(__name__)

FORMAT = "lossreport.run/1"
RUN_FILE = "run.json"
LOSSES_DIR = "losses"
GRAPHS_DIR = "loss_graphs"
STEP = "step"
WALL_TIME = "wall_time"
RESERVED_COLUMNS = frozenset({STEP, WALL_TIME})

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = frozenset({RUNNING, COMPLETED, FAILED})
FINISHED_STATUSES = frozenset({COMPLETED, FAILED})

_SHARD_RE = re.compile(r"^part-(\d{6,})(?:-rank(\d+))?(?:-w([0-9A-Za-z]{1,32}))?\.parquet$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME_LENGTH = 100
MAX_SHARD_MEMORY_BYTES = 4 * 2**30  # a shard's columns, uncompressed
MAX_RUN_FILE_DEPTH = 32  # config nesting deeper than this makes run.json malformed


def clean_name(text: str) -> str:
    """Make `text` safe as one path component on any filesystem (no separators, no leading dot).

    Written by hand rather than adding a dependency: one regex covers what file names need here.
    """
    cleaned = _UNSAFE_CHARS.sub("_", text).strip("._-")[:_MAX_NAME_LENGTH]
    return cleaned or "unnamed"


def utc_now() -> str:
    """The current time as the ISO 8601 UTC string run.json uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    """Parse a run.json timestamp; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class RunRecord:
    """The contents of run.json."""

    run_id: str
    model: str
    hook: str
    architecture: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    status: str = RUNNING
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    heartbeat_at: str = field(default_factory=utc_now)
    host: str = ""
    pid: int = 0
    error: str | None = None

    def to_json(self) -> str:
        doc = {"format": FORMAT, **asdict(self)}
        # default=str keeps config values such as torch.dtype or Path readable instead of failing.
        return json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n"


def looks_like_run(path: Path) -> bool:
    """A real directory (not a symlink to one) holding something named run.json or losses
    (a run whose run.json was lost still has its shards). What those are is checked when read.
    """
    return storage.is_real_dir(path) and (
        storage.lexists(path / RUN_FILE) or storage.lexists(path / LOSSES_DIR)
    )


def is_run_name(name: str) -> bool:
    """A name that can only mean a run directly inside the runs directory."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def list_run_dirs(runs_dir: Path) -> list[Path]:
    """The run directories directly inside `runs_dir` (hidden folders are lossreport's own;
    symlinks are never entered). Raises OSError when `runs_dir` cannot be listed."""
    with os.scandir(runs_dir) as entries:
        folders = [
            Path(e.path)
            for e in entries
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        ]
    return [folder for folder in folders if looks_like_run(folder)]


def shard_name(seq: int, rank: int | None = None, writer: str | None = None) -> str:
    """`part-NNNNNN[-rankR][-wTOKEN].parquet`: TOKEN keeps concurrent writers' names apart."""
    suffix = ("" if rank is None else f"-rank{rank}") + ("" if writer is None else f"-w{writer}")
    return f"part-{seq:06d}{suffix}.parquet"


def parse_shard_name(name: str) -> tuple[int, int | None] | None:
    """(sequence number, rank or None) for a shard file name, or None for anything else."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def iter_shards(run_dir: Path) -> Iterator[tuple[int, int | None, Path]]:
    """Every complete shard of a run, in write order. Hidden temp files never match."""
    losses = run_dir / LOSSES_DIR
    if storage.lexists(losses) and not storage.is_real_dir(losses):
        raise UnsafePathError(losses, f"is {storage.kind_of(losses)}, not a folder; not read")
    try:
        entries = list(os.scandir(losses))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunDirectoryError(losses, f"cannot be listed ({exc.strerror or exc})") from exc
    # Write order: sequence number, then rank (none first), then writer token (none first, then
    # ASCII): concurrent writers' shards of one number have no true order, only a fixed one.
    found = []
    for entry in entries:
        match = _SHARD_RE.match(entry.name)
        if match is not None:
            seq, rank, writer = match.groups()
            found.append((int(seq), -1 if rank is None else int(rank), writer or "", entry.path))
    for seq, rank, _writer, path in sorted(found):
        yield seq, None if rank == -1 else rank, Path(path)


def next_shard_seq(run_dir: Path, rank: int | None) -> int:
    """The number after the highest shard of this rank, by any writer (1 for a new run).

    Unranked and rank-0 shards make one history, so they share one count: a resume with or
    without `all_ranks` still writes after everything before it.
    """
    history = (None, 0)
    ranks = history if rank in history else (rank,)
    seqs = [seq for seq, shard_rank, _ in iter_shards(run_dir) if shard_rank in ranks]
    return max(seqs, default=0) + 1


def write_shard(
    run_dir: Path, seq: int, table: pa.Table, rank: int | None = None, writer: str | None = None
) -> Path:
    """Write one shard under a hidden temp name, then move it into place.

    Never replaces a shard (FileExistsError): the name carries the writer's token, and the
    move itself refuses an existing file.
    """
    path = run_dir / LOSSES_DIR / shard_name(seq, rank, writer)
    with storage.atomic_file(path, replace=False) as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


def write_run_file(run_dir: Path, record: RunRecord) -> None:
    storage.atomic_write(run_dir / RUN_FILE, record.to_json().encode())


def read_run_file(run_dir: Path) -> RunRecord:
    """Read and check run.json; raises MalformedRunFileError naming what is wrong."""
    path = run_dir / RUN_FILE
    try:
        doc = json.loads(storage.read_bytes(path, storage.MAX_RUN_FILE_BYTES))
    except FileNotFoundError:
        raise MalformedRunFileError(path, "missing") from None
    except UnsafePathError as exc:
        raise MalformedRunFileError(path, exc.reason) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRunFileError(path, f"not valid JSON ({exc})") from exc
    except RecursionError:
        raise MalformedRunFileError(path, "nested too deeply to read") from None
    except OSError as exc:
        raise RunDirectoryError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # an integer of thousands of digits, and the like
        raise MalformedRunFileError(path, f"not readable JSON ({exc})") from exc
    if _depth_exceeds(doc, MAX_RUN_FILE_DEPTH):
        raise MalformedRunFileError(path, f"nested deeper than {MAX_RUN_FILE_DEPTH} levels")
    if not isinstance(doc, dict):
        raise MalformedRunFileError(path, "expected a JSON object")
    if doc.get("format") != FORMAT:
        raise MalformedRunFileError(path, f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    for name in ("run_id", "status", "started_at"):
        if not isinstance(doc.get(name), str):
            raise MalformedRunFileError(path, f"field {name!r} must be a string")
    if doc["status"] not in STATUSES:
        raise MalformedRunFileError(
            path, f"status {doc['status']!r} is not one of {sorted(STATUSES)}"
        )
    for name in ("started_at", "finished_at", "heartbeat_at"):
        value = doc.get(name)
        if value is None and name != "started_at":
            continue
        try:
            parse_time(value if isinstance(value, str) else "")
        except ValueError:
            raise MalformedRunFileError(path, f"field {name!r} is not an ISO 8601 time") from None
    config = doc.get("config")
    pid = doc.get("pid")
    return RunRecord(
        run_id=doc["run_id"],
        model=_text(doc.get("model"), "unknown-model"),
        hook=_text(doc.get("hook"), "unknown-hook"),
        architecture=None if doc.get("architecture") is None else str(doc["architecture"]),
        config=config if isinstance(config, dict) else {},
        status=doc["status"],
        started_at=doc["started_at"],
        finished_at=doc.get("finished_at"),
        heartbeat_at=doc.get("heartbeat_at") or doc["started_at"],
        host=_text(doc.get("host"), ""),
        pid=pid if isinstance(pid, int) else 0,
        error=None if doc.get("error") is None else str(doc["error"]),
    )


@dataclass
class LossData:
    """Every row a run logged (deduplicated, sorted by step) and what could not be read."""

    table: pa.Table
    skipped: list[str]

    @property
    def loss_names(self) -> list[str]:
        return [name for name in self.table.column_names if name not in RESERVED_COLUMNS]


def read_losses(run_dir: Path) -> LossData:
    """Read every shard of rank 0 (or of an unranked writer) into one table.

    Shards with different schemas are unified (a loss that starts late reads as null before);
    a step written twice keeps its last write, as after a resume from a checkpoint. Unreadable
    shards are skipped and named in `skipped`.
    """
    tables: list[pa.Table] = []
    skipped: list[str] = []
    try:
        shards = list(iter_shards(run_dir))
    except RunDirectoryError as exc:  # losses/ is a link, a file, or cannot be listed
        logger.warning("skipping %s", exc)
        shards = []
        skipped.append(str(exc))
    for _seq, rank, path in shards:
        if rank not in (None, 0):
            continue
        try:
            tables.append(_normalise_shard(read_shard(path), path, skipped))
        except CorruptShardError as exc:
            logger.warning("skipping %s", exc)
            skipped.append(str(exc))
    if not tables:
        empty = pa.schema([(STEP, pa.int64()), (WALL_TIME, pa.float64())])
        return LossData(empty.empty_table(), skipped)
    combined = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    return LossData(_keep_last_write_per_step(combined), skipped)


def read_shard(path: Path) -> pa.Table:
    # Read whole (bounded, a regular file, not through a link), then parsed from memory.
    # ParquetFile, not pq.read_table: read_table goes through pyarrow.dataset, whose first
    # import costs 0.2-0.3 s of a report's render.
    try:
        data = storage.read_bytes(path, storage.MAX_SHARD_BYTES)
    except UnsafePathError as exc:
        raise CorruptShardError(path, exc.reason) from exc
    except OSError as exc:
        raise CorruptShardError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        with pq.ParquetFile(pa.BufferReader(data)) as shard:
            unpacked = sum(
                shard.metadata.row_group(i).total_byte_size
                for i in range(shard.metadata.num_row_groups)
            )
            if unpacked > MAX_SHARD_MEMORY_BYTES:  # a few KB of zstd can claim gigabytes
                raise CorruptShardError(
                    path, f"would take {unpacked:,} bytes once read, over the limit; skipped"
                )
            return shard.read()
    except CorruptShardError:
        raise
    # UnicodeDecodeError: a column name that is not UTF-8, which pyarrow only finds on opening.
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise CorruptShardError(path, f"not a readable Parquet file ({exc})") from exc


def _normalise_shard(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    """Cast a shard, ours or another writer's, to step int64, wall_time float64, losses float64.

    Raises CorruptShardError for a shard whose rows or columns cannot be told apart (no integer
    `step`, a step beyond int64, a column name used twice), or that Arrow cannot convert.
    """
    try:
        return _normalised(table, path, notes)
    except pa.ArrowException as exc:  # a type or value another writer chose that has no rule here
        raise CorruptShardError(path, f"cannot be read as losses ({exc})") from exc


def _normalised(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    names = table.column_names
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:  # which of the two is the loss? pyarrow cannot even select one by name
        raise CorruptShardError(path, f"has more than one column named {repeated[0]!r}")
    if STEP not in names:
        raise CorruptShardError(path, "has no 'step' column")
    step = table.column(STEP)
    if not pa.types.is_integer(step.type):
        raise CorruptShardError(path, f"'step' column is {step.type}, expected an integer")
    if step.null_count:
        notes.append(f"{path}: {step.null_count} rows without a step were skipped")
        valid = step.is_valid()
        table, step = table.filter(valid), step.filter(valid)
    try:
        columns = {STEP: step.cast(pa.int64())}
    except pa.ArrowInvalid as exc:  # a uint64 step above 2**63 - 1
        raise CorruptShardError(path, f"'step' column does not fit int64 ({exc})") from exc
    if WALL_TIME in names:
        columns[WALL_TIME] = _as_seconds(table.column(WALL_TIME), path, notes)
    else:
        columns[WALL_TIME] = pa.nulls(table.num_rows, pa.float64())
    for name in names:
        if name in RESERVED_COLUMNS:
            continue
        column = table.column(name)
        if _is_number(column.type):
            # Unsafe: an integer or decimal loss that float64 cannot hold exactly is rounded, as
            # any loss is; a safe cast would refuse the whole column.
            columns[name] = column.cast(pa.float64(), safe=False)
        else:
            notes.append(f"{path}: column {name!r} of type {column.type} is not a number, skipped")
    return pa.table(columns)


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _as_seconds(column: pa.ChunkedArray, path: Path, notes: list[str]) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
        seconds = np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False), float)
        return pa.chunked_array([pa.array(seconds / per_second, from_pandas=True)])  # NaN: null
    if _is_number(column.type):
        return column.cast(pa.float64(), safe=False)
    notes.append(f"{path}: 'wall_time' of type {column.type} is not a time, ignored")
    return pa.chunked_array([pa.nulls(len(column), pa.float64())])


def _keep_last_write_per_step(table: pa.Table) -> pa.Table:
    steps = table.column(STEP).to_numpy()
    if bool(np.all(steps[1:] > steps[:-1])):  # the usual case: nothing repeated, already sorted
        return table
    # np.unique on the reversed steps finds each step's last write; its output is sorted by step.
    _, first_in_reversed = np.unique(steps[::-1], return_index=True)
    keep = len(steps) - 1 - first_in_reversed
    return table.take(pa.array(keep))


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests deeper than `limit` (walked without recursion, so
    that later code, which does recurse, never meets a document deep enough to overflow)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return False


def _text(value: Any, default: str) -> str:
    return default if value is None else str(value)
