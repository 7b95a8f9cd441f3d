"""MLflow file-store runs (`mlruns/<experiment_id>/<run_id>/`): `meta.yaml` (the run's status
and times), `metrics/<key>` (one line per logged value), `params/<key>` and `tags/<key>`.

A metric file's lines are `timestamp_ms value step` (older MLflow: `timestamp_ms value`, step
0; with a dataset: two more fields), appended as logged. A key with `/` in it is stored in
nested folders (`metrics/train/loss`), so `metrics/` is walked down, never through a link.
Of a value logged twice at one step the later timestamp wins. A line without its newline is
a writer at work: it is read once complete. The experiment's own folder has a meta.yaml but
no metrics/, and logged models (`models/m-*/`) are not runs.

MLflow records its runs' status, so a RUNNING run that goes silent is stalled, as a native
run is. The config is the params (text, as MLflow keeps them) and the source file's name;
the run's name (the `mlflow.runName` tag) names the run, and the experiment's name (in its
folder's meta.yaml) the model, unless a param names one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .. import storage
from ..clock import utc_time
from ..errors import MalformedRunFileError
from ..runformat import COMPLETED, FAILED, RESERVED_COLUMNS, RUNNING, LossData, RunRecord
from . import longform, widecache
from .base import Inputs
from .yamlfile import read_yaml_mapping

logger = logging.getLogger(__name__)

META_FILE = "meta.yaml"
METRICS_DIR = "metrics"
CACHE_FOLDER = "mlflow"  # the last read's table (widecache.read_whole)
PARAMS_DIR = "params"
TAGS_DIR = "tags"
MODELS_DIR = "models"  # logged models, in the experiment's folder: not runs
MODEL_PREFIX = "m-"
RUN_NAME_TAG = "mlflow.runName"
SOURCE_TAG = "mlflow.source.name"
MAX_META_BYTES = 2**20
MAX_METRIC_BYTES = 2 * 2**30
MAX_PARAM_BYTES = 64 * 2**10  # MLflow caps a param's value at a few thousand characters
# MLflow's RunStatus: its number and name, and what lossreport calls it.
STATUSES = {
    1: ("RUNNING", RUNNING),
    2: ("SCHEDULED", RUNNING),
    3: ("FINISHED", COMPLETED),
    4: ("FAILED", FAILED),
    5: ("KILLED", FAILED),
}
_BY_NAME = {name: number for number, (name, _) in STATUSES.items()}
_COLUMNS = ["timestamp", "value", "step"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# What a line takes once parsed, besides its long row (storage.budget): three 8-byte columns
# and the wall times computed from one; read line by line, three Python objects and their
# list slots.
_PARSED_LINE_BYTES = 4 * 8
_PYTHON_LINE_BYTES = 3 * (32 + 8) + 8


@dataclass(frozen=True)
class _Meta:
    """What meta.yaml says: MLflow's status name, lossreport's status, the times."""

    mlflow_status: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    run_name: str | None


class MlflowSource:
    name = "mlflow"
    label = "MLflow file store"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        """A real folder with a regular meta.yaml and a real metrics/ folder, and not a
        logged model's."""
        if path.parent.name == MODELS_DIR and path.name.startswith(MODEL_PREFIX):
            return False
        return (
            storage.is_real_dir(path)
            and longform.stat_file(path / META_FILE) is not None
            and storage.is_real_dir(path / METRICS_DIR)
        )

    def inputs(self, run_dir: Path) -> Inputs:
        """meta.yaml and the metric files by name, size and time; meta.yaml's status (parsed
        once per version of it); the heartbeat is the latest write of any of them."""
        meta_stat = longform.stat_file(run_dir / META_FILE)
        metrics, _ = longform.walk_files(run_dir / METRICS_DIR)
        keys = [meta_stat.key] if meta_stat else []
        keys += [f"{METRICS_DIR}/{key}:{stat.size}:{stat.mtime_ns}" for key, stat in metrics]
        meta = _cached_meta(meta_stat) if meta_stat else None
        files = [stat for _, stat in metrics] + ([meta_stat] if meta_stat else [])
        return Inputs(
            "|".join(keys),
            meta.status if meta else None,
            longform.last_written(files),
            f"MLflow run status {meta.mlflow_status}" if meta else None,
        )

    def read_record(self, run_dir: Path) -> RunRecord:
        """meta.yaml's status and times, the params as the config, the run and model named
        as the module docstring says. Raises MalformedRunFileError for a meta.yaml that is
        missing or cannot be read."""
        meta_path = run_dir / META_FILE
        try:
            meta = _parse_meta(meta_path, read_yaml_mapping(meta_path, MAX_META_BYTES))
        except FileNotFoundError:
            raise MalformedRunFileError(meta_path, "missing") from None
        config: dict[str, Any] = dict(_texts(run_dir / PARAMS_DIR))
        source = _tag(run_dir, SOURCE_TAG)
        if source:
            config[SOURCE_TAG] = source
        metrics, _ = longform.walk_files(run_dir / METRICS_DIR)
        stats = [stat for _, stat in metrics]
        meta_stat = longform.stat_file(meta_path)
        return longform.record_from(
            run_dir,
            config,
            status=meta.status,
            started_at=meta.started_at,
            heartbeat_at=longform.last_written(stats + ([meta_stat] if meta_stat else [])),
            finished_at=meta.finished_at if meta.status != RUNNING else None,
            run_id=_tag(run_dir, RUN_NAME_TAG) or meta.run_name or run_dir.name,
            model=_experiment_name(run_dir),
            error="killed (MLflow run status KILLED)" if meta.mlflow_status == "KILLED" else None,
        )

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every line of every metric file, read whole, within the run's read budget; while
        no file changed, the last read's table, kept in `cache` (widecache.read_whole). What
        cannot be read (a link, a FIFO, a damaged line, a file past the budget) is named in
        `skipped`."""
        metrics, skipped = longform.walk_files(run_dir / METRICS_DIR)
        return widecache.read_whole(
            cache, CACHE_FOLDER, metrics, lambda: _read(metrics, list(skipped)), skipped
        )


def _read(metrics: list[tuple[str, longform.FileStat]], skipped: list[str]) -> LossData:
    """The metric files, read whole."""
    budget = storage.ReadBudget()
    tables: list[pa.Table] = []
    for key, stat in metrics:
        if key in RESERVED_COLUMNS:
            skipped.append(f"{stat.path}: metric {key!r} left out: the report's own column")
            continue
        try:
            tables.append(_read_metric(stat.path, key, skipped, budget))
        except OSError as exc:
            logger.warning("%s", exc)
            skipped.append(str(exc))
    long = pa.concat_tables(tables) if tables else longform.LONG_SCHEMA.empty_table()
    return replace(longform.wide_data(long, skipped), over_budget=budget.refused)


def _read_metric(path: Path, key: str, skipped: list[str], budget: storage.ReadBudget) -> pa.Table:
    """One metric file as long rows, in the order written. Raises OSError (storage's: a
    link, a FIFO, too large; ReadBudgetError) when it cannot be read. Its bytes and what its
    lines take once parsed are charged to `budget` first."""
    data = budget.read_file(path, MAX_METRIC_BYTES)
    complete = pa.py_buffer(data).slice(0, data.rfind(b"\n") + 1)
    if not complete.size:
        return longform.LONG_SCHEMA.empty_table()
    lines = data.count(b"\n")
    budget.charge(
        path, len(data) + lines * _PARSED_LINE_BYTES + longform.long_rows_bytes(lines, key)
    )
    try:  # the usual three fields on every line, read by pyarrow
        table = pacsv.read_csv(
            complete,
            read_options=pacsv.ReadOptions(column_names=_COLUMNS),
            parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"timestamp": pa.int64(), "value": pa.float64(), "step": pa.int64()},
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # two or five fields, or damaged lines: line by line, as MLflow
        budget.charge(path, len(data) + lines * _PYTHON_LINE_BYTES, "read line by line")
        return _read_lines(path, key, complete.to_pybytes(), skipped)
    return pa.table(
        [
            pa.repeat(pa.scalar(key, pa.string()), table.num_rows),
            table.column("step"),
            pc.divide(pc.cast(table.column("timestamp"), pa.float64()), 1000.0),
            table.column("value"),
        ],
        schema=longform.LONG_SCHEMA,
    )


def _read_lines(path: Path, key: str, data: bytes, skipped: list[str]) -> pa.Table:
    steps: list[int] = []
    walls: list[float] = []
    values: list[float] = []
    bad = 0
    first_bad = ""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split(b" ")
        try:
            if len(fields) not in (2, 3, 5):
                raise ValueError(f"{len(fields)} fields")
            wall, value = int(fields[0]) / 1000, float(fields[1])
            step = int(fields[2]) if len(fields) > 2 else 0
            if not INT64_MIN <= step <= INT64_MAX:
                raise ValueError("a step beyond int64")
        # ValueError: not a number (or over Python's 4300 digits); OverflowError: a time
        # beyond float's range
        except (ValueError, OverflowError):
            bad += 1
            first_bad = first_bad or f"line {number}: {line[:100]!r}"
            continue
        steps.append(step)
        walls.append(wall)
        values.append(value)
    if bad:
        skipped.append(
            f"{path}: {bad} malformed lines skipped (first: {first_bad}); "
            "MLflow writes `timestamp value step`, the step a 64-bit integer"
        )
    return longform.long_table([key] * len(steps), steps, walls, values)


def _parse_meta(path: Path, meta: dict[str, Any]) -> _Meta:
    """A run's meta.yaml; MalformedRunFileError when its status is not MLflow's."""
    status = meta.get("status")
    number = _BY_NAME.get(status.strip().upper()) if isinstance(status, str) else None
    if number is None and isinstance(status, str) and status.strip().isdigit():
        number = int(status)
    if number is None and type(status) is int:
        number = status
    if number not in STATUSES:
        raise MalformedRunFileError(path, f"status {status!r} is not an MLflow run status")
    name, ours = STATUSES[number]
    run_name = meta.get("run_name")
    return _Meta(
        name,
        ours,
        _time_ms(meta.get("start_time")),
        _time_ms(meta.get("end_time")),
        run_name.strip() if isinstance(run_name, str) and run_name.strip() else None,
    )


@lru_cache(maxsize=16384)
def _meta_at(path: Path, version: tuple[int, int, int]) -> _Meta | None:
    """meta.yaml parsed once per version (inode, size, time): a daemon asks every few
    seconds. None when it cannot be read."""
    try:
        return _parse_meta(path, read_yaml_mapping(path, MAX_META_BYTES))
    except (OSError, MalformedRunFileError):
        return None


def _cached_meta(stat: longform.FileStat) -> _Meta | None:
    return _meta_at(stat.path, (stat.inode, stat.size, stat.mtime_ns))


def _time_ms(value: Any) -> datetime | None:
    if type(value) is not int or value <= 0:
        return None
    try:
        return utc_time(value / 1000)
    except (OverflowError, OSError, ValueError):
        return None


def _texts(folder: Path) -> list[tuple[str, str]]:
    """Each regular file under `folder` (params/, keys with `/` nested) as (key, its text).
    What cannot be read is left out and logged: a param is not worth failing a record for."""
    found, problems = longform.walk_files(folder)
    for problem in problems:
        logger.warning("%s", problem)
    texts = []
    for key, stat in found:
        try:
            texts.append((key, _text(stat.path)))
        except OSError as exc:
            logger.warning("%s: not read (%s)", stat.path, exc)
    return texts


def _experiment_name(run_dir: Path) -> str | None:
    """The name in the meta.yaml of the experiment folder holding the run; None when it is
    not there or cannot be read (logged: a name is not worth failing a record for)."""
    path = run_dir.parent / META_FILE
    try:
        name = read_yaml_mapping(path, MAX_META_BYTES).get("name")
    except FileNotFoundError:
        return None
    except (OSError, MalformedRunFileError) as exc:
        logger.warning("%s: experiment name not read (%s)", path, exc)
        return None
    return name.strip() if isinstance(name, str) and name.strip() else None


def _tag(run_dir: Path, name: str) -> str | None:
    """One tag's value (stripped), or None when it is not there or cannot be read."""
    path = run_dir / TAGS_DIR / name
    if not storage.is_real_dir(path.parent):
        return None
    try:
        return _text(path).strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("%s: not read (%s)", path, exc)
        return None


def _text(path: Path) -> str:
    return storage.read_bytes(path, MAX_PARAM_BYTES).decode("utf-8", errors="replace")
