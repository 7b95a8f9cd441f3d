"""A run of a million steps, written as a trainer would leave it but in seconds: run.json and
ten shards of 100,000 rows in the documented format (docs/run-directory-format.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from lossreport import runformat
from lossreport.runformat import COMPLETED, RunRecord

STEPS = 1_000_000
SHARD_ROWS = 100_000
SPIKE_STEP = 734_211


def value_at(step: np.ndarray | int) -> np.ndarray:
    """The mse_loss logged at `step`: a decay with a wiggle that makes each step's value its
    own, and one spike."""
    steps = np.asarray(step, dtype=np.float64)
    values = 1.0 / (1.0 + steps / 20_000) + 0.01 * np.sin(steps * 0.37)
    return np.where(steps == SPIKE_STEP, 5.0, values)


def write_long_run(
    runs_dir: Path, run_id: str = "long-run", steps: int = STEPS, shard_rows: int = SHARD_ROWS
) -> Path:
    """The run; `shard_rows`: steps per shard (a trainer's default writes one per 1,000)."""
    run_dir = runs_dir / run_id
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    record = RunRecord(run_id=run_id, model="gpt2-small", hook="blocks.8.hook_resid_pre")
    record.status = COMPLETED
    record.finished_at = record.started_at
    runformat.write_run_file(run_dir, record)
    for seq, first in enumerate(range(0, steps, shard_rows)):
        step = np.arange(first, min(first + shard_rows, steps), dtype=np.int64)
        table = pa.table(
            {
                runformat.STEP: step,
                runformat.WALL_TIME: np.full(step.size, 1.7e9),
                "mse_loss": value_at(step),
                "l1_loss": 0.2 + 0.1 / (1.0 + step / 1000.0),
            }
        )
        runformat.write_shard(run_dir, seq, table)
    return run_dir
