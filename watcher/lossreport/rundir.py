"""The run-directory format, `lossreport.run/1`: the only module that knows its file names.

A run directory holds `run.json` (metadata and status, always replaced atomically) and
`losses/part-NNNNNN[-rankR].parquet` shards (`step` int64, `wall_time` float64, one float64
column per loss). The trainer, the renderer and the daemon all read and write through here.
See docs/run-directory-format.md for the contract other writers can implement.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptShardError, MalformedRunFileError, RunDirectoryError

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

_SHARD_RE = re.compile(r"^part-(\d{6,})(?:-rank(\d+))?\.parquet$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME_LENGTH = 100


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
    """A directory holding run.json or a losses/ folder (a run whose run.json was lost)."""
    return (path / RUN_FILE).is_file() or (path / LOSSES_DIR).is_dir()


def list_run_dirs(runs_dir: Path) -> list[Path]:
    """The run directories directly inside `runs_dir` (hidden folders are lossreport's own).
    Raises OSError when `runs_dir` cannot be listed."""
    with os.scandir(runs_dir) as entries:
        folders = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]
    return [folder for folder in folders if looks_like_run(folder)]


def shard_name(seq: int, rank: int | None = None) -> str:
    suffix = "" if rank is None else f"-rank{rank}"
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
    try:
        entries = list(os.scandir(losses))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunDirectoryError(losses, f"cannot be listed ({exc.strerror or exc})") from exc
    found = []
    for entry in entries:
        parsed = parse_shard_name(entry.name)
        if parsed is not None:
            found.append((parsed[0], -1 if parsed[1] is None else parsed[1], Path(entry.path)))
    for seq, rank, path in sorted(found):
        yield seq, None if rank == -1 else rank, path


def next_shard_seq(run_dir: Path, rank: int | None) -> int:
    """The sequence number after the highest shard this rank has written (1 for a new run)."""
    seqs = [seq for seq, shard_rank, _ in iter_shards(run_dir) if shard_rank == rank]
    return max(seqs, default=0) + 1


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A handle whose contents appear at `path` whole, or not at all, when the block ends.

    The data go to a hidden temp file in the same folder, are fsynced and renamed into place;
    on any error the temp file is removed and `path` keeps what it had.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp's 0600 would hide it from others
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@cache
def process_umask() -> int:
    """The umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_hidden_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named folder, with the permissions a plain mkdir would give it."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    path.chmod(0o777 & ~process_umask())
    return path


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def write_shard(run_dir: Path, seq: int, table: pa.Table, rank: int | None = None) -> Path:
    """Write one shard under a hidden temp name, then rename it into place."""
    path = run_dir / LOSSES_DIR / shard_name(seq, rank)
    with atomic_file(path) as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


def write_run_file(run_dir: Path, record: RunRecord) -> None:
    atomic_write(run_dir / RUN_FILE, record.to_json().encode())


def read_run_file(run_dir: Path) -> RunRecord:
    """Read and check run.json; raises MalformedRunFileError naming what is wrong."""
    path = run_dir / RUN_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MalformedRunFileError(path, "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRunFileError(path, f"not valid JSON ({exc})") from exc
    except OSError as exc:
        raise RunDirectoryError(path, f"cannot be read ({exc.strerror or exc})") from exc
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
    for _seq, rank, path in iter_shards(run_dir):
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
    # ParquetFile, not pq.read_table: read_table goes through pyarrow.dataset, whose first
    # import costs 0.2-0.3 s of a report's render.
    try:
        with pq.ParquetFile(path) as shard:
            return shard.read()
    except (pa.ArrowException, OSError) as exc:
        raise CorruptShardError(path, f"not a readable Parquet file ({exc})") from exc


def _normalise_shard(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    """Cast a shard, ours or another writer's, to step int64, wall_time float64, losses float64."""
    if STEP not in table.column_names:
        raise CorruptShardError(path, "has no 'step' column")
    step = table.column(STEP)
    if not pa.types.is_integer(step.type):
        raise CorruptShardError(path, f"'step' column is {step.type}, expected an integer")
    if step.null_count:
        notes.append(f"{path}: {step.null_count} rows without a step were skipped")
        table = table.filter(step.is_valid())
    columns = {STEP: table.column(STEP).cast(pa.int64())}
    if WALL_TIME in table.column_names:
        columns[WALL_TIME] = _as_seconds(table.column(WALL_TIME), path, notes)
    else:
        columns[WALL_TIME] = pa.nulls(table.num_rows, pa.float64())
    for name in table.column_names:
        if name in RESERVED_COLUMNS:
            continue
        column = table.column(name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns[name] = column.cast(pa.float64())
        else:
            notes.append(f"{path}: column {name!r} of type {column.type} is not a number, skipped")
    return pa.table(columns)


def _as_seconds(column: pa.ChunkedArray, path: Path, notes: list[str]) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
        seconds = np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False), float)
        return pa.chunked_array([pa.array(seconds / per_second)])
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.cast(pa.float64())
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


def _text(value: Any, default: str) -> str:
    return default if value is None else str(value)
