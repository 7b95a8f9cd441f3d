"""Lightning's CSVLogger run folders (`.../lightning_logs/version_N/`): `metrics.csv`, with
`hparams.yaml` beside it as the run's config.

metrics.csv has a header row, then one row per `log_metrics` call, empty where a metric was
not logged (a gap, read as missing) and `nan` or `inf` where it was logged so (read as those
values). `step` is the step; every other numeric column but `epoch` is a series, learning
rates included: `--exclude-series` drops what is not a loss. The logger rewrites the whole
file with a wider header when a new metric appears, so the file is read whole, as it is now.
It records no wall times and no end: a run is running until it has been silent long enough.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .. import storage
from ..errors import MalformedRunFileError
from ..runformat import RESERVED_COLUMNS, RUNNING, LossData, RunRecord
from . import longform, widecache
from .base import Inputs
from .yamlfile import read_yaml_mapping

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
CACHE_FOLDER = "lightning"  # the last read's table (widecache.read_whole)
STEP_COLUMN = "step"
NOT_SERIES = frozenset({STEP_COLUMN, "epoch"})
MAX_CSV_BYTES = 2 * 2**30
_TEXT_CELL_BYTES = 4 + 1  # a cell read as text, besides its characters: offset and validity


class LightningCsvSource:
    name = "lightning"
    label = "Lightning CSVLogger"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        """A real folder holding a regular metrics.csv."""
        return storage.is_real_dir(path) and longform.stat_file(path / METRICS_FILE) is not None

    def inputs(self, run_dir: Path) -> Inputs:
        """metrics.csv and hparams.yaml by name, size and time; no status is recorded, so the
        run is running until silent (the heartbeat: metrics.csv's last write)."""
        metrics, files = _files(run_dir)
        return Inputs(
            longform.fingerprint(files),
            RUNNING,
            longform.last_written([metrics] if metrics else []),
            status_rule=longform.silence_rule("Lightning CSV logs"),
            silence_finishes=True,
        )

    def read_record(self, run_dir: Path) -> RunRecord:
        """hparams.yaml as the config (none when missing or empty). The logger writes to
        `save_dir/NAME/VERSION`: the run is its version (`version_3`), the model the model
        the hparams name, else the logger's NAME (the folder above a default
        `lightning_logs`). Raises MalformedRunFileError for an hparams.yaml that cannot be
        read."""
        metrics, files = _files(run_dir)
        try:
            config: dict[str, Any] = read_yaml_mapping(run_dir / HPARAMS_FILE)
        except FileNotFoundError:
            config = {}
        return longform.record_from(
            run_dir,
            config,
            status=RUNNING,
            started_at=longform.first_written(files),
            heartbeat_at=longform.last_written([metrics] if metrics else []),
            model=longform.group_name(run_dir),
        )

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every logged value of metrics.csv, read whole (the logger rewrites it whole); while
        it is unchanged, the last read's table, kept in `cache` (widecache.read_whole). A
        file that cannot be read is named in `skipped`, as are the rows and columns left
        out."""
        metrics = longform.stat_file(run_dir / METRICS_FILE)
        files = [(METRICS_FILE, metrics)] if metrics else []
        return widecache.read_whole(cache, CACHE_FOLDER, files, lambda: _read(run_dir))


def _read(run_dir: Path) -> LossData:
    """metrics.csv, read whole."""
    path = run_dir / METRICS_FILE
    skipped: list[str] = []
    budget = storage.ReadBudget()
    try:
        long = read_metrics_csv(path, skipped, budget)
    except (OSError, MalformedRunFileError) as exc:
        logger.warning("%s", exc)
        return LossData(longform.empty_wide(), [str(exc)], budget.refused)
    return longform.wide_data(long, skipped)


def _files(run_dir: Path) -> tuple[longform.FileStat | None, list[longform.FileStat]]:
    metrics = longform.stat_file(run_dir / METRICS_FILE)
    hparams = longform.stat_file(run_dir / HPARAMS_FILE)
    return metrics, [stat for stat in (metrics, hparams) if stat is not None]


def read_metrics_csv(
    path: Path, skipped: list[str], budget: storage.ReadBudget | None = None
) -> pa.Table:
    """metrics.csv as long rows, in the order of its rows (a step written twice: the later
    row wins). Raises OSError when it cannot be read (a link, a FIFO, too large: storage's
    errors; ReadBudgetError when what it takes once parsed, estimated from its rows and
    columns, does not fit in `budget`, by default a fresh one), MalformedRunFileError when
    it is not CSV; notes what it leaves out in `skipped`.

    Every column is read as text and converted here: pyarrow infers types from the first
    megabyte, and a column that starts empty or whole-numbered would fail the read later."""
    budget = budget or storage.ReadBudget()
    data = budget.read_file(path, MAX_CSV_BYTES)
    # A row without its newline is one the logger is writing now: its last number may be cut
    # short (0.98765 read as 0.9). It is read once complete.
    if not data.endswith(b"\n") and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    header = _header(data, path)
    if not header:
        return longform.LONG_SCHEMA.empty_table()  # created, nothing written yet
    # Held at once, at most: the bytes, the cells as text, a column as floats, the long rows.
    cells = data.count(b"\n") * len(header)
    name_bytes = max(len(name.encode()) for name in header)
    parsed = cells * (_TEXT_CELL_BYTES + 8 + longform.LONG_ROW_BYTES + name_bytes)
    budget.charge(path, 2 * len(data) + parsed, "once parsed")
    keys = [f"c{index}" for index in range(len(header))]  # header names may repeat
    bad_rows: list[str] = []

    def bad_row(row: Any) -> str:
        bad_rows.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=keys),
            parse_options=pacsv.ParseOptions(invalid_row_handler=bad_row),
            # Only an empty cell is missing: `nan` is a value the model logged.
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(keys, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise MalformedRunFileError(path, f"not readable as CSV ({exc})") from exc
    if bad_rows:
        skipped.append(
            f"{path}: {len(bad_rows)} rows skipped: not as many fields as the header "
            f"(first: {bad_rows[0][:100]!r})"
        )
    if STEP_COLUMN not in header:
        if table.num_rows:
            skipped.append(f"{path}: no {STEP_COLUMN} column; {table.num_rows} rows skipped")
        return longform.LONG_SCHEMA.empty_table()
    steps, has_step = text_steps(table.column(header.index(STEP_COLUMN)))
    if not has_step.all():
        missing = int(has_step.size - has_step.sum())
        skipped.append(f"{path}: {missing} rows skipped: no whole-number {STEP_COLUMN}")
    parts: list[pa.Table] = []
    not_numbers: list[str] = []
    for index, name in enumerate(header):
        if name in NOT_SERIES:
            continue
        if name in RESERVED_COLUMNS:
            skipped.append(f"{path}: column {name!r} left out: the report's own column name")
            continue
        values, logged, bad_cells = text_floats(table.column(index))
        if bad_cells and not logged.any():
            not_numbers.append(name)
            continue
        if bad_cells:
            skipped.append(f"{path}: column {name!r}: {bad_cells} cells that are not numbers")
        rows = np.flatnonzero(logged & has_step)
        if rows.size:
            parts.append(
                pa.table(
                    [
                        pa.repeat(pa.scalar(name, pa.string()), rows.size),
                        pa.array(steps[rows], pa.int64()),
                        pa.nulls(rows.size, pa.float64()),
                        pa.array(values[rows], pa.float64()),
                    ],
                    schema=longform.LONG_SCHEMA,
                )
            )
    if not_numbers:
        skipped.append(f"{path}: columns that are not numbers left out: {', '.join(not_numbers)}")
    return pa.concat_tables(parts) if parts else longform.LONG_SCHEMA.empty_table()


def _header(data: bytes, path: Path) -> list[str]:
    """The column names of the first line; none while that line is unfinished."""
    end = data.find(b"\n")
    if end < 0:
        return []
    line = data[:end].decode("utf-8", errors="replace").rstrip("\r")
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise MalformedRunFileError(path, f"a header that is not CSV ({exc})") from exc


Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


def text_floats(column: pa.ChunkedArray) -> tuple[Floats, Flags, int]:
    """A text column as float64 values, where a value was logged (not empty, a number), and
    how many cells were not numbers."""
    try:
        as_float = pc.cast(column, pa.float64()).combine_chunks()
    except pa.ArrowInvalid:  # a damaged cell: read cell by cell
        return _floats_one_by_one(column.to_pylist())
    logged = as_float.is_valid().to_numpy(zero_copy_only=False)
    return pc.fill_null(as_float, np.nan).to_numpy(zero_copy_only=False), logged, 0


def _floats_one_by_one(cells: list[str | None]) -> tuple[Floats, Flags, int]:
    values = np.full(len(cells), np.nan)
    logged = np.zeros(len(cells), dtype=bool)
    bad = 0
    for row, cell in enumerate(cells):
        if cell is None:
            continue
        try:
            values[row] = float(cell)
        except ValueError:
            bad += 1
        else:
            logged[row] = True
    return values, logged, bad


def text_steps(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], Flags]:
    """Each row's step and whether it has one: a whole number (`12`, or `12.0`)."""
    try:
        ints = pc.cast(column, pa.int64()).combine_chunks()
    except pa.ArrowInvalid:
        pass
    else:
        has_step = ints.is_valid().to_numpy(zero_copy_only=False)
        return pc.fill_null(ints, 0).to_numpy(zero_copy_only=False), has_step
    values, logged, _ = text_floats(column)
    with np.errstate(invalid="ignore"):
        usable = logged & np.isfinite(values) & (values == np.round(values))
        usable &= np.abs(values) < 2.0**63
    steps = np.zeros(len(values), np.int64)
    steps[usable] = values[usable].astype(np.int64)
    return steps, usable
