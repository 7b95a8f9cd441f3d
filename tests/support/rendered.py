"""A tree of runs as a daemon leaves them once rendered, made without rendering: run.json, one
small shard and the render marker a daemon's render writes (its fingerprint of the inputs and
its index row, packed as `pages.marker_entry` packs it), for start-up tests and benchmarks
over thousands of runs.

Shaped as a real cluster's (`catalog.realistic_entries`): run ids made by `start_run`'s id
function, one flat folder of them as `start_run` lays them out, long and non-ASCII model
names, six config keys, statuses as a sweep ends. Runs that say "running" are so only among
the newest (`running_from`); older ones are stalled (silent for a year, their stall alert in
their alert log, as the daemon raised it before rendering them). A running run has no marker:
the daemon renders it once it ends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from lossreport import runformat, sources, storage
from lossreport.alerts.rules import STALLED
from lossreport.clock import utc_time
from lossreport.report.pages import flat_config, marker_entry
from lossreport.runformat import RenderedMarker, RunRecord
from tests.support.catalog import realistic_entries

STALLED_HEARTBEAT = "2025-01-01T00:00:00+00:00"


def rendered_runs(runs_dir: Path, count: int, running_from: int | None = None) -> list[str]:
    """`count` rendered runs in `runs_dir` (module docstring); their keys. Runs made before
    the `running_from`-th that say "running" are stalled (None: all of them are)."""
    shard_name, shard = _shard(runs_dir)
    now = utc_time().isoformat()
    first_running = count if running_from is None else running_from
    keys = []
    with _unsynced():
        for index, (key, entry) in enumerate(realistic_entries(count)):
            status = {"unknown": runformat.COMPLETED}.get(entry["status"], entry["status"])
            if status == runformat.RUNNING and index < first_running:
                status = runformat.STALLED
            _write_run(runs_dir / key, {**entry, "status": status, "run_id": key}, now,
                       shard_name, shard)  # fmt: skip
            keys.append(key)
    return keys


def _write_run(
    run_dir: Path, entry: dict[str, object], now: str, shard_name: str, shard: bytes
) -> None:
    status = entry["status"]
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    record = RunRecord(
        run_id=str(entry["run_id"]),
        model=str(entry["model"]),
        hook=str(entry["hook"]),
        architecture=entry["architecture"],  # type: ignore[arg-type]
        config=entry["config"],  # type: ignore[arg-type]
    )
    if status in runformat.FINISHED_STATUSES:
        record.status, record.finished_at = str(status), record.started_at
    else:  # running: silent for a year (stalled), or beating now
        record.status = runformat.RUNNING
        record.heartbeat_at = STALLED_HEARTBEAT if status == runformat.STALLED else now
    runformat.write_run_file(run_dir, record)
    storage.atomic_write(run_dir / runformat.LOSSES_DIR / shard_name, shard)
    (run_dir / runformat.GRAPHS_DIR).mkdir()
    if status == runformat.RUNNING:
        return
    if status == runformat.STALLED:
        runformat.append_alert_log(
            run_dir, [{"rule": STALLED, "detail": "silent", "detected_at": now}]
        )
    fingerprint = sources.NATIVE.inputs(run_dir).fingerprint
    with storage.opened_dir(run_dir) as run_fd:
        # as `render.index_entry` writes it: the config flat, its values as text
        kept = marker_entry({**entry, "config": flat_config(entry["config"])})
        marker = RenderedMarker(fingerprint, str(status), kept, by_daemon=True)
        runformat.write_marker(run_dir, run_fd, marker)


def _shard(runs_dir: Path) -> tuple[str, bytes]:
    """A 100-step shard of three losses, written once by `write_shard`: its name and bytes."""
    steps = np.arange(100, dtype=np.int64)
    table = pa.table(
        {
            "step": steps,
            "wall_time": 1.7e9 + steps.astype(np.float64),
            "mse_loss": 1.0 / (1.0 + steps),
            "l1_loss": np.full(len(steps), 0.1),
            "overall_loss": 1.1 / (1.0 + steps),
        }
    )
    template = runs_dir.parent / f".{runs_dir.name}-shard"
    (template / runformat.LOSSES_DIR).mkdir(parents=True)
    try:
        runformat.write_shard(template, 0, table)
        (shard,) = (template / runformat.LOSSES_DIR).iterdir()
        return shard.name, shard.read_bytes()
    finally:
        shutil.rmtree(template)


@contextmanager
def _unsynced() -> Iterator[None]:
    """Atomic writes without fsync: a fixture need not survive a power cut, and syncing was
    three quarters of the time it took to make."""
    synced = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = synced
