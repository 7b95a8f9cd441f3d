"""Per-step cost of logging four losses: lossreport's `Run.log` against TensorBoard's writer.

    python benchmarks/bench_log.py [--repeats 7] [--store]

Each case logs the same four values every step (Python floats, or 0-d CPU tensors that carry
autograd history as a training loop's losses do), timed as whole loops including the flushes
the background thread does meanwhile. Prints the median microseconds per step over the repeats
and the ratio to `SummaryWriter.add_scalar` x4 measured in the same run. Closing (lossreport's
final flush and run.json, each fsynced; the writer's flush) happens once per run, not per step:
it is timed apart and printed in milliseconds. With --store, lossreport's runs are also written
to an S3 server on loopback (moto), shards and run.json as objects: the per-step cost must
stay that of a local run, since every request is the background thread's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

import lossreport

NAMES = ("mse_loss", "l1_loss", "auxiliary_reconstruction_loss", "overall_loss")


def _floats() -> list[object]:
    return [0.125, 0.0625, 0.03125, 0.21875]


def _tensors() -> list[object]:
    leaf = torch.tensor(1.0, requires_grad=True)
    return [leaf * value for value in (0.125, 0.0625, 0.03125, 0.21875)]


def time_lossreport(
    values: list[object], steps: int, runs: str | None = None
) -> tuple[float, float]:
    """(microseconds per step of the loop, milliseconds to close the run); `runs`: an s3://
    runs folder instead of a temporary one."""
    with tempfile.TemporaryDirectory() as tmp:
        a, b, c, d = values
        run = lossreport.start_run(runs or tmp, model="bench", hook="h", report_on_close=False)
        start = time.perf_counter()
        for step in range(steps):
            run.log(step, mse_loss=a, l1_loss=b, auxiliary_reconstruction_loss=c, overall_loss=d)
        looped = time.perf_counter()
        run.close()
        return (looped - start) / steps * 1e6, (time.perf_counter() - looped) * 1e3


def time_summary_writer(values: list[object], steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(log_dir=str(Path(tmp)))
        start = time.perf_counter()
        for step in range(steps):
            for name, value in zip(NAMES, values, strict=True):
                writer.add_scalar(f"losses/{name}", value, step)
        looped = time.perf_counter()
        writer.close()
        return (looped - start) / steps * 1e6, (time.perf_counter() - looped) * 1e3


def median_of(
    repeats: int, measure: Callable[[], tuple[float, float]]
) -> tuple[float, float, list[float]]:
    """Median per-step cost, median close time, and the per-step samples."""
    measure()  # warm-up: first-use imports and caches
    samples = [measure() for _ in range(repeats)]
    per_step = [sample[0] for sample in samples]
    return statistics.median(per_step), statistics.median(s[1] for s in samples), per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--writer-steps", type=int, default=3_000)
    parser.add_argument("--store", action="store_true", help="also log to S3 (moto, loopback)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        runs = stack.enter_context(_store()) if args.store else None
        _compare(args, runs)


@contextlib.contextmanager
def _store() -> Iterator[str]:
    """moto's S3 server on loopback, the standard variables pointing at it; a runs URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's server
    from tests.support.s3 import CREDENTIALS, MotoServer, boto

    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(Path(tmp) / "moto.log")
        try:
            os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": server.url})
            boto(server.url).create_bucket(Bucket="bench-log")
            yield "s3://bench-log/runs"
        finally:
            server.stop()


def _compare(args: argparse.Namespace, runs: str | None) -> None:
    torch.set_num_threads(1)
    print(f"median us/step over {args.repeats} repeats; torch {torch.__version__}")
    print(
        f"{'values':12} {'lossreport':>10} {'SummaryWriter':>14} {'ratio':>7} "
        f"{'close ms (ours/theirs)':>23}   samples"
    )
    for label, make in (("floats", _floats), ("0-d tensors", _tensors)):
        ours, our_close, samples = median_of(
            args.repeats, lambda make=make: time_lossreport(make(), args.steps)
        )
        theirs, their_close, _ = median_of(
            args.repeats, lambda make=make: time_summary_writer(make(), args.writer_steps)
        )
        print(
            f"{label:10} {ours:11.2f} {theirs:14.1f} {theirs / ours:6.0f}x "
            f"{our_close:14.1f} / {their_close:<6.1f}   " + " ".join(f"{s:.2f}" for s in samples)
        )
        if runs is not None:
            on_store, store_close, samples = median_of(
                args.repeats, lambda make=make: time_lossreport(make(), args.steps, runs)
            )
            print(
                f"{'  on S3':10} {on_store:11.2f} {'':14} {on_store / ours:5.2f}x "
                f"{store_close:14.1f} {'':8}  "
                + " ".join(f"{s:.2f}" for s in samples)
                + "   (ratio: S3 / local)"
            )


if __name__ == "__main__":
    main()
