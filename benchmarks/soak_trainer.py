"""One trainer of the soak (benchmarks/soak.py): logs values the checker can recompute, and
keeps its own record of what it logged and what it knows is flushed.

    python benchmarks/soak_trainer.py RUNS_DIR RUN_ID RECORD --architecture A --steps N
        [--start S] [--stride D] [--phase P] [--late-loss-from K] [--flush-every F]
        [--step-delay SECONDS]

It logs N steps: S, S+D, S+2D, ... (a stride of 2 lets two trainers share a run id with even
and odd steps). The record gets a line `L step` after each log call and `F step` once an
explicit flush (every F log calls) has returned True, so after a SIGKILL the checker knows
which values must be on disk or on the store.
"""

from __future__ import annotations

import argparse
import time

import lossreport

LOSSES = {
    "standard": ["mse_loss", "l1_loss", "overall_loss"],
    "gated": ["mse_loss", "l1_loss", "auxiliary_reconstruction_loss", "overall_loss"],
    "topk": ["mse_loss", "auxiliary_reconstruction_loss", "overall_loss"],
}
LATE_LOSS = "late_auxiliary_loss"


def value(run_id: str, loss: str, step: int, phase: int) -> float:
    """The value a trainer logs: exact to recompute, different per run, loss, step and phase."""
    salt = sum(map(ord, run_id + loss)) % 997
    return (1.0 + phase) / (step + 1) + salt * 1e-4


def losses_at(
    run_id: str, architecture: str, step: int, phase: int, late_from: int | None
) -> dict[str, float]:
    """Every loss a trainer logs at `step`: its architecture's, and the late one once due."""
    names = list(LOSSES[architecture])
    if late_from is not None and step >= late_from:
        names.append(LATE_LOSS)
    return {name: value(run_id, name, step, phase) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_dir")
    parser.add_argument("run_id")
    parser.add_argument("record")
    parser.add_argument("--architecture", choices=list(LOSSES), required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--phase", type=int, default=0)
    parser.add_argument("--late-loss-from", type=int, default=None)
    parser.add_argument("--flush-every", type=int, default=200)
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    run = lossreport.start_run(
        args.runs_dir,
        model=f"soak-{args.architecture}",
        hook="blocks.0.hook_mlp_out",
        architecture=args.architecture,
        run_id=args.run_id,
        flush_every=10**9,  # only the explicit flushes below: the record stays exact
        flush_secs=3600.0,
        report_on_close=False,  # the soak is the daemon's: it renders every run
    )
    with run, open(args.record, "a", buffering=1) as record:
        steps = range(args.start, args.start + args.steps * args.stride, args.stride)
        for count, step in enumerate(steps, start=1):
            losses = losses_at(
                args.run_id, args.architecture, step, args.phase, args.late_loss_from
            )
            run.log(step, **losses)
            record.write(f"L {step}\n")
            # Flushed only when flush() says so: a store that is down keeps the rows in memory.
            if count % args.flush_every == 0 and run.flush():
                record.write(f"F {step}\n")
            if args.step_delay:
                time.sleep(args.step_delay)
    # `with run` flushed the rest and marked the run completed


if __name__ == "__main__":
    main()
