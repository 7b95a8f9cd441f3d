"""Runs whose files are small on disk and large once decoded: a Parquet shard of tens of
millions of constant rows is a few hundred KB of zstd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lossreport import runformat
from lossreport.runformat import COMPLETED, RunRecord

ROW_GROUP = 1_000_000
# What a row of ours (step, wall_time, one loss) takes once decoded, as the read budget counts.
DECODED_ROW_BYTES = 3 * (8 + 1 / 8)


def write_constant_shard(path: Path, rows: int, step: int = 0) -> None:
    """`rows` rows of one step, wall time and loss, written a row group at a time (memory stays
    at one group's); zstd makes each group a few KB."""
    group = min(rows, ROW_GROUP)
    table = pa.table(
        {
            runformat.STEP: np.full(group, step, np.int64),
            runformat.WALL_TIME: np.full(group, 1.7e9),
            "mse_loss": np.full(group, 0.25),
        }
    )
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for first in range(0, rows, group):
            writer.write_table(table.slice(0, min(group, rows - first)))


def bomb_run(runs_dir: Path, run_id: str, shards: int, rows: int) -> Path:
    """A finished run of `shards` shards of `rows` constant rows each (steps 0, 1, ...)."""
    run_dir = runs_dir / run_id
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    record = RunRecord(run_id=run_id, model="gpt2-small", hook="blocks.8.hook_resid_pre")
    record.status = COMPLETED
    record.finished_at = record.started_at
    runformat.write_run_file(run_dir, record)
    for seq in range(1, shards + 1):
        shard = run_dir / runformat.LOSSES_DIR / runformat.shard_name(seq)
        write_constant_shard(shard, rows, step=seq)
    return run_dir
