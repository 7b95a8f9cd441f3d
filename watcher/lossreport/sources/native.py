"""lossreport's own run folders (`lossreport.run/1`, docs/run-directory-format.md), read
through runformat.

A run's inputs are run.json, its shards and the alerts the daemon raised for it; their names,
sizes and modification times make its fingerprint, taken without reading a shard.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

from .. import runformat
from ..runformat import LossData, RunRecord
from .base import Inputs

# A run.json replaced at every look of it: the last look's version and status are taken as
# they are (at worst, one render too many, as when a run changes during its render).
_LOOKS = 5
# run.json readings kept, by folder and version: about 400 bytes each, 6.5 MB in all.
_PARSED_MAX = 16384
_PARSED: OrderedDict[tuple[Path, tuple[int, int, int]], tuple[str | None, datetime | None]] = (
    OrderedDict()
)


class NativeSource:
    name = "lossreport"
    label = "lossreport (run.json and Parquet shards)"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        return runformat.looks_like_run(path)

    def inputs(self, run_dir: Path) -> Inputs:
        """Stat the inputs (never following a link) and read run.json (bounded): the version
        read is the one whose stat is in the fingerprint. A trainer that replaced it in
        between (its last write says completed) gave the old version's fingerprint with the
        new status; the render recorded that fingerprint, and the next look rendered the
        finished run again."""
        for _ in range(_LOOKS):
            fingerprint, run_file = stat_fingerprint(run_dir)
            if run_file is None:
                return Inputs(fingerprint, None, None)
            status, heartbeat, stated = _status_and_heartbeat(run_dir, _version(run_file))
            if stated:
                break
        return Inputs(fingerprint, status, heartbeat)

    def read_record(self, run_dir: Path, cache: Path | None = None) -> RunRecord:
        return runformat.read_run_file(run_dir)

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        return runformat.read_losses(run_dir)  # Parquet already: nothing to convert or keep


def stat_fingerprint(run_dir: str | Path) -> tuple[str, os.stat_result | None]:
    """The fingerprint of the run's inputs (`inputs`), from their names, sizes and modification
    times alone (lstat, never following a link; nothing read), and run.json's stat. Plain
    strings, no Path: a daemon's start takes it for every run."""
    entries: list[str] = []
    folder = os.fspath(run_dir)
    run_file: os.stat_result | None = None
    try:
        found = os.lstat(os.path.join(folder, runformat.RUN_FILE))
    except OSError:
        pass
    else:
        entries.append(f"{runformat.RUN_FILE}:{found.st_size}:{found.st_mtime_ns}")
        run_file = found
    try:  # the daemon's alerts: the report shows them
        alerts = os.lstat(os.path.join(folder, runformat.ALERTS_FILE))
    except OSError:
        pass
    else:
        entries.append(f"{runformat.ALERTS_FILE}:{alerts.st_size}:{alerts.st_mtime_ns}")
    losses = os.path.join(folder, runformat.LOSSES_DIR)
    try:
        mode: int | None = os.lstat(losses).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        try:
            with os.scandir(losses) as listed:
                shards = sorted(
                    (entry for entry in listed if runformat.parse_shard_name(entry.name)),
                    key=lambda entry: entry.name,
                )
                for entry in shards:
                    info = entry.stat(follow_symlinks=False)
                    entries.append(f"{entry.name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            pass
    elif mode is not None:
        entries.append(f"{runformat.LOSSES_DIR}:not-a-folder")
    return "|".join(entries), run_file


def _version(found: os.stat_result) -> tuple[int, int, int]:
    return found.st_ino, found.st_size, found.st_mtime_ns


def _status_and_heartbeat(
    run_dir: Path, version: tuple[int, int, int]
) -> tuple[str | None, datetime | None, bool]:
    """run.json's status and heartbeat, parsed once per version of the file (inode, size,
    mtime): a daemon looks at every running run every few seconds, and a run.json can be
    megabytes. The third value says whether what was read is `version`, not a file that
    replaced it since it was stated (that one's reading is kept for the next look)."""
    known = _PARSED.get((run_dir, version))
    if known is not None:
        return *known, True
    read: tuple[str | None, datetime | None]
    try:
        record, found = runformat.read_run_file_stated(run_dir)
        read = record.status, runformat.parse_time(record.heartbeat_at)
        read_version = _version(found)
    except (OSError, ValueError):  # RunDirectoryError (a malformed run.json) is an OSError
        read, read_version = (None, None), version
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.popitem(last=False)  # the oldest
    _PARSED[run_dir, read_version] = read
    return *read, read_version == version
