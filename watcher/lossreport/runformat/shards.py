"""Loss shards: written whole by trainers, read back (any writer's) into one table.

`losses/part-NNNNNN[-rankR][-wTOKEN].parquet` holds `step` int64, `wall_time` float64 and one
float64 column per loss; another writer's types are normalised to those on reading.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..errors import CorruptShardError, ReadBudgetError, RunDirectoryError, UnsafePathError
from .layout import (
    CLEARED_DIR,
    LOSSES_DIR,
    RESERVED_COLUMNS,
    STEP,
    WALL_TIME,
    iter_shards,
    parse_shard_name,
    shard_name,
)

logger = logging.getLogger(__name__)


def next_shard_seq(run_dir: storage.RunLocation, rank: int | None) -> int:
    """The number after the highest shard of this rank, by any writer (1 for a new run).

    Unranked and rank-0 shards make one history, so they share one count: a resume with or
    without `all_ranks` still writes after everything before it.
    """
    ranks = (None, 0) if rank in (None, 0) else (rank,)
    names = storage.folder_at(run_dir).files(LOSSES_DIR)
    parsed = [parse_shard_name(name) for name in names]
    return max((found[0] for found in parsed if found and found[1] in ranks), default=0) + 1


def write_shard(
    run_dir: storage.RunLocation,
    seq: int,
    table: pa.Table,
    rank: int | None = None,
    writer: str | None = None,
) -> Path | str:
    """Write one shard whole (a temp file moved into place, or one object); returns where.

    Never replaces a shard (FileExistsError): the name carries the writer's token, and the
    folder refuses an existing name.
    """
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    name = f"{LOSSES_DIR}/{shard_name(seq, rank, writer)}"
    folder = storage.folder_at(run_dir)
    folder.create(name, buffer.getvalue().to_pybytes())
    return folder.where(name)


def set_aside_shards(run_dir: storage.RunLocation, stamp: str, rank: int | None) -> int:
    """Move the shards of `rank` (the run's history, unranked and rank 0, for None or 0) into
    `losses/cleared/STAMP/`, where readers do not look: `clear_loss_history()` starts the
    history afresh without deleting a logged value, and leaves other ranks' shards alone.
    Returns how many shards were moved."""
    ranks = (None, 0) if rank in (None, 0) else (rank,)
    folder = storage.folder_at(run_dir)
    names = [name for name in folder.files(LOSSES_DIR) if _rank_of(name) in ranks]
    if names:
        folder.move(names, LOSSES_DIR, f"{LOSSES_DIR}/{CLEARED_DIR}/{stamp}")
    return len(names)


def _rank_of(name: str) -> int | str | None:
    """A shard's rank (None when it has none); "" for a name that is not a shard's."""
    parsed = parse_shard_name(name)
    return "" if parsed is None else parsed[1]


@dataclass
class LossData:
    """Every row a run logged (deduplicated, sorted by step) and what could not be read;
    `over_budget`: the files among those not read because the run's read budget was spent
    (storage.budget), named as in `skipped`."""

    table: pa.Table
    skipped: list[str]
    over_budget: list[str] = field(default_factory=list)

    @property
    def loss_names(self) -> list[str]:
        return [name for name in self.table.column_names if name not in RESERVED_COLUMNS]


def read_losses(run_dir: Path) -> LossData:
    """Read every shard of rank 0 (or of an unranked writer) into one table, within one
    read budget (storage.budget) for the run.

    Shards with different schemas are unified (a loss that starts late reads as null before);
    a step written twice keeps its last write, as after a resume from a checkpoint. Unreadable
    shards, and those past the budget, are skipped and named in `skipped`.
    """
    tables: list[pa.Table] = []
    skipped: list[str] = []
    budget = storage.ReadBudget()
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
            tables.append(_normalise_shard(read_shard(path, budget, skipped), path, skipped))
        except (CorruptShardError, ReadBudgetError) as exc:
            logger.warning("skipping %s", exc)
            skipped.append(str(exc))
    if not tables:
        empty = pa.schema([(STEP, pa.int64()), (WALL_TIME, pa.float64())])
        return LossData(empty.empty_table(), skipped, budget.refused)
    combined = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    return LossData(_keep_last_write_per_step(combined), skipped, budget.refused)


def read_shard(
    path: Path, budget: storage.ReadBudget | None = None, notes: list[str] | None = None
) -> pa.Table:
    """A shard's `step`, `wall_time` and number columns, as its writer typed them; the other
    columns are named in `notes` and never decoded.

    What the columns take once decoded (rows x their types' widths, from the metadata, plus
    the float64 copies `read_losses` makes) is charged to `budget` (by default a fresh one)
    before they are decoded: ReadBudgetError when it does not fit. CorruptShardError for a
    shard that cannot be read, or whose rows or columns cannot be told apart (no integer
    `step`, a column name used twice).
    """
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
            fields = _columns_to_read(shard.schema_arrow, path, notes)
            rows = shard.metadata.num_rows
            (budget or storage.ReadBudget()).charge(path, _decoded_bytes(rows, fields))
            # By leaf index: a name with a dot in it could also select a nested column.
            leaves = {tuple(leaf): index for index, leaf in enumerate(shard.reader.column_paths)}
            table: pa.Table = shard.reader.read_all(
                column_indices=[leaves[(column.name,)] for column in fields]
            )
            return table
    except (CorruptShardError, ReadBudgetError):
        raise
    # UnicodeDecodeError: a column name that is not UTF-8, which pyarrow only finds on opening.
    except (pa.ArrowException, OSError, UnicodeDecodeError, KeyError) as exc:
        raise CorruptShardError(path, f"not a readable Parquet file ({exc})") from exc


def _columns_to_read(schema: pa.Schema, path: Path, notes: list[str] | None) -> list[pa.Field]:
    """The fields read: `step` (an integer), `wall_time` (a number or a time) and the number
    columns; what else there is goes to `notes`. CorruptShardError for a shard whose rows or
    columns cannot be told apart."""
    names = schema.names
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:  # which of the two is the loss? pyarrow cannot even select one by name
        raise CorruptShardError(path, f"has more than one column named {repeated[0]!r}")
    if STEP not in names:
        raise CorruptShardError(path, "has no 'step' column")
    step_type = schema.field(STEP).type
    if not pa.types.is_integer(step_type):
        raise CorruptShardError(path, f"'step' column is {step_type}, expected an integer")
    fields = []
    for column in schema:
        if (
            column.name == STEP
            or _is_number(column.type)
            or (column.name == WALL_TIME and pa.types.is_timestamp(column.type))
        ):
            fields.append(column)
        elif notes is None:
            continue
        elif column.name == WALL_TIME:
            notes.append(f"{path}: 'wall_time' of type {column.type} is not a time, ignored")
        else:
            what = f"column {column.name!r} of type {column.type}"
            notes.append(f"{path}: {what} is not a number, skipped")
    return fields


def _decoded_bytes(rows: int, fields: list[pa.Field]) -> int:
    """What `fields` take once decoded and normalised: each column's values and validity,
    and a float64 or int64 copy of each that is not one already (the wall times made when
    there are none)."""
    per_row = 0.0
    for column in fields:
        per_row += column.type.bit_width / 8 + 1 / 8
        if column.type not in (pa.int64(), pa.float64()):
            per_row += 8 + 1 / 8
    if WALL_TIME not in {column.name for column in fields}:
        per_row += 8 + 1 / 8
    return math.ceil(rows * per_row)


def _normalise_shard(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    """Cast a shard's columns (as `read_shard` gives them), ours or another writer's, to step
    int64, wall_time float64, losses float64.

    Raises CorruptShardError for a step beyond int64 or a value Arrow cannot convert.
    """
    try:
        return _normalised(table, path, notes)
    except pa.ArrowException as exc:  # a type or value another writer chose that has no rule here
        raise CorruptShardError(path, f"cannot be read as losses ({exc})") from exc


def _normalised(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    step = table.column(STEP)
    if step.null_count:
        notes.append(f"{path}: {step.null_count} rows without a step were skipped")
        valid = step.is_valid()
        table, step = table.filter(valid), step.filter(valid)
    try:
        columns = {STEP: step.cast(pa.int64())}
    except pa.ArrowInvalid as exc:  # a uint64 step above 2**63 - 1
        raise CorruptShardError(path, f"'step' column does not fit int64 ({exc})") from exc
    if WALL_TIME in table.column_names:
        columns[WALL_TIME] = _as_seconds(table.column(WALL_TIME))
    else:
        columns[WALL_TIME] = pa.nulls(table.num_rows, pa.float64())
    for name in table.column_names:
        if name not in RESERVED_COLUMNS:
            # Unsafe: an integer or decimal loss that float64 cannot hold exactly is rounded, as
            # any loss is; a safe cast would refuse the whole column.
            columns[name] = table.column(name).cast(pa.float64(), safe=False)
    return pa.table(columns)


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _as_seconds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A number or time column (`read_shard` reads no other) as float64 seconds."""
    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
        seconds = np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False), float)
        return pa.chunked_array([pa.array(seconds / per_second, from_pandas=True)])  # NaN: null
    return column.cast(pa.float64(), safe=False)


def _keep_last_write_per_step(table: pa.Table) -> pa.Table:
    steps = table.column(STEP).to_numpy()
    if bool(np.all(steps[1:] > steps[:-1])):  # the usual case: nothing repeated, already sorted
        return table
    # np.unique on the reversed steps finds each step's last write; its output is sorted by step.
    _, first_in_reversed = np.unique(steps[::-1], return_index=True)
    keep = len(steps) - 1 - first_in_reversed
    return table.take(pa.array(keep))
