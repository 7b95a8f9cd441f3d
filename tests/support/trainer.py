"""A scripted trainer for tests: logs known values so a test can check every one on disk.

    python -m tests.support.trainer RUNS_DIR RUN_ID --steps N [--flush-every K] [--then wait|exit]
                                    [--start S] [--step-delay SECONDS]
                                    [--report-on-close auto|true|false] [--diverge-from S]
                                    [--flush-secs SECONDS] [--max-unwritten-rows N]

Prints "logged N" after the last step; with `--then wait` it then blocks until stdin closes or
a signal arrives, so a test can signal a trainer whose rows it knows exactly.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import lossreport

LATE_LOSS_FROM = 150


def expected_losses(step: int) -> dict[str, float]:
    """The values the scripted trainer logs at `step` (and so what must come back)."""
    losses = {
        "mse_loss": 1.0 / (step + 1),
        "l1_loss": 0.25 + 1e-9 * step,
        "overall_loss": 1.0 / (step + 1) + 0.25 + 1e-9 * step,
    }
    if step == 7:
        losses["mse_loss"] = math.nan
    if step == 8:
        losses["overall_loss"] = math.inf
    if step >= LATE_LOSS_FROM:
        losses["auxiliary_reconstruction_loss"] = 0.5 / (step + 1)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_dir")
    parser.add_argument("run_id")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--flush-every", type=int, default=100)
    parser.add_argument("--flush-secs", type=float, default=60.0)
    parser.add_argument("--max-unwritten-rows", type=int, default=2_000_000)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--then", choices=["wait", "exit"], default="exit")
    parser.add_argument("--report-on-close", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--diverge-from", type=int, default=None, help="mse_loss x100 from here")
    args = parser.parse_args()
    report_on_close = {"auto": "auto", "true": True, "false": False}[args.report_on_close]
    run = lossreport.start_run(
        args.runs_dir,
        model="scripted/model",
        hook="blocks.0.hook_mlp_out",
        architecture="standard",
        config={"l1_coefficient": 5.0},
        run_id=args.run_id,
        flush_every=args.flush_every,
        flush_secs=args.flush_secs,
        max_unwritten_rows=args.max_unwritten_rows,
        report_on_close=report_on_close,
    )
    with run:
        for step in range(args.start, args.start + args.steps):
            losses = expected_losses(step)
            if args.diverge_from is not None and step >= args.diverge_from:
                losses["mse_loss"] *= 100
            run.log(step, **losses)
            if args.step_delay:
                time.sleep(args.step_delay)
        print(f"logged {args.start + args.steps}", flush=True)
        if args.then == "wait":
            sys.stdin.read()


if __name__ == "__main__":
    main()
