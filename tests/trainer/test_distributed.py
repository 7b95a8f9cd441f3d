"""Under torch.distributed (two real gloo ranks) only rank 0 writes, unless asked otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from lossreport import runformat
from tests.support.procs import PYTHONPATH, ROOT


def _train(runs_dir: Path, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.distributed_trainer", str(runs_dir), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_only_rank_zero_writes_by_default(runs_dir: Path) -> None:
    output = _train(runs_dir)
    (run_dir,) = runs_dir.iterdir()
    assert f"rank 0 path {run_dir}" in output and f"rank 1 path {run_dir}" in output
    shards = [(seq, rank) for seq, rank, _ in runformat.iter_shards(run_dir)]
    assert shards == [(1, None)]  # one unranked shard (its name also carries a writer token)
    assert runformat.read_losses(run_dir).table.column("mse_loss").to_pylist() == [
        float(step) for step in range(10)
    ]
    assert runformat.read_run_file(run_dir).status == "completed"


def test_every_rank_writes_its_own_shards_when_asked(runs_dir: Path) -> None:
    _train(runs_dir, "--all-ranks")
    (run_dir,) = runs_dir.iterdir()  # both ranks agreed on one run id
    shards = {rank: path for _, rank, path in runformat.iter_shards(run_dir)}
    assert sorted(shards) == [0, 1]
    assert shards[1].name.startswith("part-000001-rank1-w")
    rank1 = pq.read_table(shards[1])
    assert rank1.column("mse_loss").to_pylist() == [100.0 + step for step in range(10)]
    assert runformat.read_losses(run_dir).table.column("mse_loss").to_pylist()[0] == 0.0
    assert runformat.read_run_file(run_dir).status == "completed"


def test_only_the_rank_that_writes_run_json_renders_the_report_at_close(runs_dir: Path) -> None:
    output = _train(runs_dir, "--all-ranks", "--report-on-close")
    (run_dir,) = runs_dir.iterdir()
    assert output.count("Loss Training Summary:") == 1, output  # rank 0's, not rank 1's
    assert output.count("Generated 2 loss graph files:") == 1  # mse_loss and combined
    assert (run_dir / "loss_graphs" / runformat.MARKER).is_file()
