"""Two torch.distributed ranks (gloo, on this machine) logging to one runs directory.

python -m tests.support.distributed_trainer RUNS_DIR [--all-ranks] [--report-on-close]
"""

from __future__ import annotations

import argparse
import tempfile

import torch.distributed as dist
import torch.multiprocessing as mp

import lossreport

WORLD_SIZE = 2


def rank_main(rank: int, runs_dir: str, all_ranks: bool, report: bool, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        with lossreport.start_run(
            runs_dir, model="m", hook="h", all_ranks=all_ranks, report_on_close=report
        ) as run:
            for step in range(10):
                run.log(step, mse_loss=float(rank * 100 + step))
            print(f"rank {rank} path {run.path}", flush=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_dir")
    parser.add_argument("--all-ranks", action="store_true")
    parser.add_argument("--report-on-close", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = f"{tmp}/store"
        options = (args.runs_dir, args.all_ranks, args.report_on_close, store)
        mp.spawn(rank_main, args=options, nprocs=WORLD_SIZE)


if __name__ == "__main__":
    main()
