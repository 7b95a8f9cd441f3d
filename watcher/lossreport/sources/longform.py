"""What the sources for other tools' logs share: their values as long rows (one per series,
step and value), turned into the wide table the renderer reads; and their folders' files
listed, fingerprinted and dated without following a link.

Other tools log each series on its own (a TensorBoard tag, an MLflow metric, a CSV column
with gaps), so a source collects `LONG_SCHEMA` rows in the order they were written and
`to_wide` makes one row per step, one column per series. For a series logged twice at one
step (a restart from a checkpoint, two writers' files in one folder) the later write wins:
the one with the later wall time, or, with equal or no wall times, the one read later.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..clock import utc_time
from ..runformat import RESERVED_COLUMNS, STEP, WALL_TIME, LossData, RunRecord

SERIES, VALUE = "series", "value"
LONG_SCHEMA = pa.schema(
    [(SERIES, pa.string()), (STEP, pa.int64()), (WALL_TIME, pa.float64()), (VALUE, pa.float64())]
)
# What a long row takes in memory, besides its series' name: the name's offset, step, wall
# time and value. Sources charge their read budget (storage.budget) with it before parsing.
LONG_ROW_BYTES = 4 + 8 + 8 + 8
# Config keys other tools use for what lossreport calls the model and the hook.
MODEL_KEYS = ("model_name", "model", "model_name_or_path", "_name_or_path", "base_model")
HOOK_KEYS = ("hook_name", "hook_point", "hook")
# Folders that tools name the same for every experiment (Lightning's default logger name): a
# run's group is named by the folder above them instead.
UNNAMED_GROUPS = frozenset({"lightning_logs"})
MAX_KEY_DEPTH = 16  # folders in one series' name written as nested folders (MLflow, DVCLive)


def long_table(
    series: list[str], steps: list[int], wall_times: list[float], values: list[float]
) -> pa.Table:
    """Long rows from four parallel lists (NaN for a missing wall time)."""
    return pa.table(
        [
            pa.array(series, pa.string()),
            pa.array(steps, pa.int64()),
            pa.array(wall_times, pa.float64()),
            pa.array(values, pa.float64()),
        ],
        schema=LONG_SCHEMA,
    )


def long_rows_bytes(rows: int, name: str) -> int:
    """What `rows` long rows of series `name` take in memory."""
    return rows * (LONG_ROW_BYTES + len(name.encode()))


def empty_wide() -> pa.Table:
    return pa.schema([(STEP, pa.int64()), (WALL_TIME, pa.float64())]).empty_table()


def to_wide(long: pa.Table) -> pa.Table:
    """One row per step (sorted), `wall_time` (the latest of the step's values), then one
    float64 column per series in order of first appearance; a series not logged at a step is
    null there. Of a series' values at one step, the later write wins (module docstring)."""
    if long.num_rows == 0:
        return empty_wide()
    long = long.combine_chunks()
    encoded = long.column(SERIES).dictionary_encode().combine_chunks()
    names = encoded.dictionary.to_pylist()
    codes = encoded.indices.to_numpy()
    steps = long.column(STEP).to_numpy()
    walls = long.column(WALL_TIME).to_numpy(zero_copy_only=False)
    values = long.column(VALUE).to_numpy(zero_copy_only=False)
    # Sort by series, step, wall time (none first), then the order read; keep each group's last.
    order = np.lexsort((np.arange(len(steps)), np.nan_to_num(walls, nan=-np.inf), steps, codes))
    codes, steps, walls, values = codes[order], steps[order], walls[order], values[order]
    last = np.ones(len(steps), dtype=bool)
    last[:-1] = (codes[1:] != codes[:-1]) | (steps[1:] != steps[:-1])
    codes, steps, walls, values = codes[last], steps[last], walls[last], values[last]
    # Each series' steps are sorted now: a stable sort (a merge of sorted runs) finds all steps
    # several times faster than np.unique's quicksort.
    merged = np.sort(steps, kind="stable")
    all_steps = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
    rows = np.searchsorted(all_steps, steps)
    latest_wall = np.full(len(all_steps), -np.inf)
    np.maximum.at(latest_wall, rows, np.nan_to_num(walls, nan=-np.inf))
    columns: dict[str, pa.Array] = {
        STEP: pa.array(all_steps, pa.int64()),
        WALL_TIME: pa.array(latest_wall, mask=~np.isfinite(latest_wall)),
    }
    # dictionary_encode numbers the series in order of first appearance.
    bounds = np.searchsorted(codes, np.arange(len(names) + 1))
    for code, name in enumerate(names):
        mine = slice(bounds[code], bounds[code + 1])
        column = np.full(len(all_steps), np.nan)
        logged = np.zeros(len(all_steps), dtype=bool)
        column[rows[mine]] = values[mine]
        logged[rows[mine]] = True
        columns[str(name)] = pa.array(column, mask=~logged)
    return pa.table(columns)


def wide_data(long: pa.Table, skipped: list[str]) -> LossData:
    """`to_wide`, leaving out (and naming) series that have the name of a column of the table
    itself (`step`, `wall_time`): read as series, they would replace those columns."""
    if long.num_rows:
        names = pc.unique(long.column(SERIES)).to_pylist()
        clashing = sorted(name for name in names if name in RESERVED_COLUMNS)
        if clashing:
            keep = pc.invert(pc.is_in(long.column(SERIES), pa.array(clashing, pa.string())))
            long = long.filter(keep)
            skipped = [
                *skipped,
                *(
                    f"series {name!r}: a name lossreport keeps for its own column; not read"
                    for name in clashing
                ),
            ]
    return LossData(to_wide(long), skipped)


@dataclass(frozen=True)
class FileStat:
    """A file of a run, as stat (not following a link) found it."""

    path: Path
    size: int
    mtime_ns: int
    inode: int

    @property
    def key(self) -> str:
        return f"{self.path.name}:{self.size}:{self.mtime_ns}"


def regular_files(folder: Path, wanted: Callable[[str], bool]) -> list[FileStat]:
    """The regular files in `folder` whose names `wanted` accepts, sorted by name. Links,
    FIFOs and folders are left out; a folder that cannot be listed has none."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not wanted(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                found.append(
                    FileStat(Path(entry.path), info.st_size, info.st_mtime_ns, info.st_ino)
                )
    except OSError:
        return []
    return sorted(found, key=lambda stat: stat.path.name)


def walk_files(folder: Path) -> tuple[list[tuple[str, FileStat]], list[str]]:
    """The regular files under `folder` as (key: the path below it, `/`-separated, stat),
    sorted by key, and what else was found there (links, FIFOs), named: for tools that store
    a series named `a/b` as the file `a/b`. Never enters a link (`folder` included); a folder
    that cannot be listed has nothing."""
    found: list[tuple[str, FileStat]] = []
    problems: list[str] = []

    def visit(path: Path, prefix: str, depth: int) -> None:
        try:
            with os.scandir(path) as entries:
                listed = list(entries)
        except OSError:
            return
        for entry in listed:
            key = f"{prefix}{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_KEY_DEPTH:
                        visit(Path(entry.path), f"{key}/", depth + 1)
                    else:
                        problems.append(f"{entry.path}: nested too deeply; not read")
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_file(follow_symlinks=False):
                found.append(
                    (key, FileStat(Path(entry.path), info.st_size, info.st_mtime_ns, info.st_ino))
                )
            else:
                what = storage.kind_of(Path(entry.path))
                problems.append(f"{entry.path}: is {what}; not followed or read")

    if storage.is_real_dir(folder):
        visit(folder, "", 1)
    elif storage.lexists(folder):
        problems.append(f"{folder}: is {storage.kind_of(folder)}; not followed or read")
    return sorted(found, key=lambda item: item[0]), sorted(problems)


def stat_file(path: Path) -> FileStat | None:
    """`path` if it is a regular file (not a link), else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return FileStat(path, info.st_size, info.st_mtime_ns, info.st_ino)


def fingerprint(files: list[FileStat]) -> str:
    return "|".join(stat.key for stat in files)


def last_written(files: list[FileStat]) -> datetime | None:
    """When the newest of `files` was last written: the heartbeat of a writer that has none."""
    return utc_time(max(stat.mtime_ns for stat in files) / 1e9) if files else None


def first_written(files: list[FileStat]) -> datetime | None:
    return utc_time(min(stat.mtime_ns for stat in files) / 1e9) if files else None


def silence_rule(label: str) -> str:
    return (
        f"{label} record no end of training: the run is taken as finished once no new data "
        "has arrived for --stale-after, and rendered again if more arrives"
    )


def group_name(run_dir: Path) -> str | None:
    """The name a folder-per-run tool gives the group a run belongs to: its parent folder's
    (Lightning's logger name in `NAME/version_0`, a TensorBoard experiment's folder), or the
    one above it where the parent is named the same for every experiment (`lightning_logs`).
    None for a run at the top of the file system."""
    names = [parent.name for parent in run_dir.absolute().parents if parent.name]
    if len(names) > 1 and names[0] in UNNAMED_GROUPS:
        return names[1]
    return names[0] if names else None


def record_from(
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    status: str,
    started_at: datetime | None,
    heartbeat_at: datetime | None,
    finished_at: datetime | None = None,
    run_id: str | None = None,
    model: str | None = None,
    error: str | None = None,
) -> RunRecord:
    """A `RunRecord` for another tool's run: the model from the usual config keys, else
    `model` (what the tool names the run's group), else the folder's name; the hook from the
    usual config keys, else none (empty: the tool that wrote the run is the catalog's
    `source`, not a hook); the times from what the files say."""
    started = started_at or heartbeat_at or utc_time()
    return RunRecord(
        run_id=run_id or run_dir.name,
        model=_first_text(config, MODEL_KEYS) or model or run_dir.name,
        hook=_first_text(config, HOOK_KEYS) or "",
        architecture=_first_text(config, ("architecture",)),
        config=dict(config),
        status=status,
        started_at=started.isoformat(),
        finished_at=finished_at.isoformat() if finished_at else None,
        heartbeat_at=(heartbeat_at or started).isoformat(),
        error=error,
    )


def _first_text(config: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
