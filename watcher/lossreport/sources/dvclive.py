"""DVCLive's run folders (`Live(dir="dvclive")`): `plots/metrics/<name>.tsv` (one file per
metric, a row per `log_metric`), `params.yaml` (`log_params`) and `metrics.json` (the latest
value of each metric and the step, rewritten by `next_step` and `end`).

A metric file is tab-separated: a header `step<TAB><name>` (`timestamp<TAB>step<TAB><name>`
with `log_metric(..., timestamp=True)`, milliseconds), then a row per value, appended; NaN
and infinities are written `nan`, `inf`, `-inf`. A metric named `train/loss` is the file
`plots/metrics/train/loss.tsv`, so the folder is walked down, never through a link. A row
without its newline is a writer at work: it is read once complete. Of a step logged twice (a
`resume=True` run going back, or two calls in one step) the later row wins.

DVCLive records no end of training in the run's folder: `end()` rewrites metrics.json (and
dvc.yaml and the report, where asked for) exactly as each `next_step()` does. Its only end
signal is a file it removes under a DVC repository's `.dvc/tmp/exps/run/`, one for the whole
repository and absent outside one. So a run is running while its files change, and finished
once silent for --stale-after, like TensorBoard and CSV logs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .. import storage
from ..errors import MalformedRunFileError
from ..runformat import RESERVED_COLUMNS, RUNNING, LossData, RunRecord
from . import longform, widecache
from .base import Inputs
from .lightning import text_floats, text_steps
from .yamlfile import read_yaml_mapping

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
METRICS_DIR = "metrics"  # under plots/
SUFFIX = ".tsv"
SUMMARY_FILE = "metrics.json"
PARAMS_FILE = "params.yaml"
CACHE_FOLDER = "dvclive"  # the last read's table (widecache.read_whole)
DEFAULT_DIR = "dvclive"  # Live()'s default folder: the run is named by the folder above it
STEP_COLUMN, TIMESTAMP_COLUMN = "step", "timestamp"
MAX_TSV_BYTES = 2 * 2**30
_TEXT_CELL_BYTES = 4 + 1  # a cell read as text, besides its characters: offset and validity


class DvcLiveSource:
    name = "dvclive"
    label = "DVCLive"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        """A real folder holding a real plots/metrics/ folder (what `log_metric` makes)."""
        plots = path / PLOTS_DIR
        return all(storage.is_real_dir(folder) for folder in (path, plots, plots / METRICS_DIR))

    def inputs(self, run_dir: Path) -> Inputs:
        """The metric files, metrics.json and params.yaml by name, size and time; no end is
        recorded (module docstring), so the run is running until silent (the heartbeat: the
        latest write of any of them)."""
        files = _files(run_dir)
        return Inputs(
            "|".join(f"{key}:{stat.size}:{stat.mtime_ns}" for key, stat in files),
            RUNNING,
            longform.last_written([stat for _, stat in files]),
            status_rule=longform.silence_rule("DVCLive logs"),
            silence_finishes=True,
        )

    def read_record(self, run_dir: Path) -> RunRecord:
        """params.yaml as the config (none when missing). The run is its folder, or the
        folder above a default `dvclive/`; the model the config's, else the folder above
        the run. Raises MalformedRunFileError for a params.yaml that cannot be read."""
        try:
            config: dict[str, Any] = read_yaml_mapping(run_dir / PARAMS_FILE)
        except FileNotFoundError:
            config = {}
        stats = [stat for _, stat in _files(run_dir)]
        run_id, group = _names(run_dir)
        return longform.record_from(
            run_dir,
            config,
            status=RUNNING,
            started_at=longform.first_written(stats),
            heartbeat_at=longform.last_written(stats),
            run_id=run_id,
            model=group,
        )

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every row of every metric file, read whole, within the run's read budget; while no
        file changed, the last read's table, kept in `cache` (widecache.read_whole). What
        cannot be read (a link, a FIFO, a damaged row, a file past the budget) is named in
        `skipped`."""
        metrics, skipped = longform.walk_files(run_dir / PLOTS_DIR / METRICS_DIR)
        return widecache.read_whole(
            cache, CACHE_FOLDER, metrics, lambda: _read(metrics, list(skipped)), skipped
        )


def _read(metrics: list[tuple[str, longform.FileStat]], skipped: list[str]) -> LossData:
    """The metric files, read whole."""
    budget = storage.ReadBudget()
    tables: list[pa.Table] = []
    for key, stat in metrics:
        if not key.endswith(SUFFIX):
            continue
        name = key.removesuffix(SUFFIX)
        if name in RESERVED_COLUMNS:
            skipped.append(f"{stat.path}: metric {name!r} left out: the report's own column")
            continue
        try:
            tables.append(read_metric_tsv(stat.path, name, skipped, budget))
        except (OSError, MalformedRunFileError) as exc:
            logger.warning("%s", exc)
            skipped.append(str(exc))
    long = pa.concat_tables(tables) if tables else longform.LONG_SCHEMA.empty_table()
    return replace(longform.wide_data(long, skipped), over_budget=budget.refused)


def _files(run_dir: Path) -> list[tuple[str, longform.FileStat]]:
    """The run's inputs as (path below the run, stat): the metric files, then metrics.json
    and params.yaml where they are regular files."""
    metrics, _ = longform.walk_files(run_dir / PLOTS_DIR / METRICS_DIR)
    found = [(f"{PLOTS_DIR}/{METRICS_DIR}/{key}", stat) for key, stat in metrics]
    for name in (SUMMARY_FILE, PARAMS_FILE):
        stat = longform.stat_file(run_dir / name)
        if stat is not None:
            found.append((name, stat))
    return found


def _names(run_dir: Path) -> tuple[str, str | None]:
    """The run's name and its group's (module docstring of read_record)."""
    folders = [run_dir.absolute(), *run_dir.absolute().parents]
    names = [folder.name for folder in folders if folder.name]
    if len(names) > 1 and names[0] == DEFAULT_DIR:
        names = names[1:]
    return names[0] if names else run_dir.name, names[1] if len(names) > 1 else None


def read_metric_tsv(
    path: Path, name: str, skipped: list[str], budget: storage.ReadBudget
) -> pa.Table:
    """One metric file as long rows of series `name`, in the order of its rows. Raises
    OSError when it cannot be read (storage's errors; ReadBudgetError when it would not fit
    in `budget` once parsed: the budget holds its long rows after, its parse only while it
    runs), MalformedRunFileError when it is not DVCLive's TSV; notes what
    it leaves out in `skipped`."""
    data = budget.read_file(path, MAX_TSV_BYTES)
    if not data.endswith(b"\n") and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]  # a row being written: read once complete
    end = data.find(b"\n")
    if end < 0:
        return longform.LONG_SCHEMA.empty_table()  # created, header not written yet
    header = data[:end].decode("utf-8", errors="replace").rstrip("\r").split("\t")
    values_at = [
        i for i, column in enumerate(header) if column not in (STEP_COLUMN, TIMESTAMP_COLUMN)
    ]
    if STEP_COLUMN not in header or len(values_at) != 1:
        raise MalformedRunFileError(
            path, f"not a DVCLive metric file: header {header[:5]!r}, not step and one value"
        )
    rows = data.count(b"\n") - 1
    kept = longform.long_rows_bytes(rows, name)  # the long rows returned
    parsing = 2 * len(data) + rows * len(header) * (_TEXT_CELL_BYTES + 8)  # freed on return
    budget.charge(path, parsing + kept, "once parsed")
    try:
        return _long_rows(path, data, header, values_at[0], name, skipped)
    except BaseException:
        budget.release(kept)
        raise
    finally:
        budget.release(parsing)


def _long_rows(
    path: Path, data: bytes, header: list[str], value_at: int, name: str, skipped: list[str]
) -> pa.Table:
    """The rows of a metric file (`data`, its header `header`) as long rows of `name`."""
    keys = [f"c{index}" for index in range(len(header))]
    bad_rows: list[str] = []

    def bad_row(row: Any) -> str:
        bad_rows.append(row.text)
        return "skip"

    # Read as numbers first (four times faster); a cell that is not one (a damaged row, a
    # metric logged as text) sends the file through the cell-by-cell reading of text.
    numbers = dict.fromkeys(keys, pa.string())
    numbers[keys[value_at]] = pa.float64()
    for index, column in enumerate(header):
        if column in (STEP_COLUMN, TIMESTAMP_COLUMN):
            numbers[keys[index]] = pa.int64()
    try:
        table = _read_tsv(data, keys, numbers, bad_row)
    except pa.ArrowInvalid:
        bad_rows.clear()
        try:
            table = _read_tsv(data, keys, dict.fromkeys(keys, pa.string()), bad_row)
        except pa.ArrowInvalid as exc:
            raise MalformedRunFileError(path, f"not readable as TSV ({exc})") from exc
    if bad_rows:
        skipped.append(
            f"{path}: {len(bad_rows)} rows skipped: not as many fields as the header "
            f"(first: {bad_rows[0][:100]!r})"
        )
    steps, has_step = text_steps(table.column(header.index(STEP_COLUMN)))
    values, logged, bad_cells = text_floats(table.column(value_at))
    walls = np.full(table.num_rows, np.nan)
    if TIMESTAMP_COLUMN in header:
        millis, has_time, _ = text_floats(table.column(header.index(TIMESTAMP_COLUMN)))
        walls[has_time] = millis[has_time] / 1000.0
    if not has_step.all():
        skipped.append(
            f"{path}: {int(has_step.size - has_step.sum())} rows skipped: "
            f"no whole-number {STEP_COLUMN}"
        )
    if bad_cells:
        skipped.append(f"{path}: {bad_cells} values that are not numbers skipped")
    kept = np.flatnonzero(logged & has_step)
    return pa.table(
        [
            pa.repeat(pa.scalar(name, pa.string()), kept.size),
            pa.array(steps[kept], pa.int64()),
            pa.array(walls[kept], pa.float64()),
            pa.array(values[kept], pa.float64()),
        ],
        schema=longform.LONG_SCHEMA,
    )


def _read_tsv(
    data: bytes, keys: list[str], types: dict[str, pa.DataType], bad_row: Any
) -> pa.Table:
    """`data` (its header row skipped) as columns `keys` of `types`; only an empty cell is
    missing (`nan` is a value the model logged). Raises ArrowInvalid for a cell not of its
    column's type."""
    return pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(skip_rows=1, column_names=keys),
        parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=bad_row),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True
        ),
    )
