"""TensorBoard event files: lossreport's reader against TensorBoard's own, and what reading a
long run costs the first time and again after a writer appends.

    python benchmarks/bench_tensorboard.py [--repeats 5] [--ea-repeats 1] [--steps 100000]
        [--big-steps 1000000] [--append-steps 1000] [--small-steps 10000] [--skip-tensorboard]

Event files are written here, fast, with TensorBoard's Event protos and TFRecord framing done
by hand (google_crc32c): what PyTorch's SummaryWriter writes for 4 scalars a step
(`simple_value`), a slightly noisy falling curve. Measures in one run:

1. --steps steps x 4 scalars: TensorBoard's EventAccumulator (size_guidance scalars=0, so it
   keeps every value; --ea-repeats times, it takes seconds) against
   `TensorBoardSource.read_losses(run, cache=None)` (median of --repeats); their ratio
   (target: at least 20x).
2. --big-steps steps x 4 scalars: the first read with a cache (seconds; median of --repeats,
   each into an empty cache).
3. Then --repeats times: --append-steps more steps appended, and the read that follows
   (median ms): the new bytes parsed, the converted Parquet read back, the table made wide.
   Beside it, the parse of the new bytes alone, and `longform.to_wide` alone on the rows of
   the first read (what every read of the run pays, cache or not).
4. A read with nothing new (median ms): the last read's table, kept in the cache, mapped.
   Beside it, the same read with that table removed (what it cost before the table was kept:
   every part read back and made wide, plus writing the table again).
5. The same read with nothing new on a run of --small-steps steps, and the ratio of the two
   (flat in run length; target: at most 1.5x).

Needs the tensorboard extra (`pip install -e '.[tensorboard]'`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2

from lossreport.sources import longform, tfrecord
from lossreport.sources.tensorboard import TensorBoardSource

TAGS = ("train/mse_loss", "train/l1_loss", "train/auxiliary_reconstruction_loss", "train/loss")
TARGET_RATIO = 20.0
TARGET_FLAT = 1.5
SOURCE = TensorBoardSource()


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + _masked_crc(head) + data + _masked_crc(data)


def event_bytes(first_step: int, steps: int, *, with_version: bool) -> bytes:
    """`steps` steps of 4 scalars from `first_step`, as TFRecords of Event protos."""
    rng = np.random.default_rng(first_step)
    step_numbers = np.arange(first_step, first_step + steps)
    base = 1.0 / np.sqrt(step_numbers + 1.0)
    values = [
        (scale * base * (1 + 0.02 * rng.standard_normal(steps))).tolist()
        for scale in range(1, len(TAGS) + 1)
    ]
    records = []
    if with_version:
        version = event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2")
        records.append(_record(version.SerializeToString()))
    events = []
    for tag in TAGS:  # one Event per tag, its fields set again for each step
        event = event_pb2.Event()
        event.summary.value.add(tag=tag, simple_value=0.0)
        events.append(event)
    for i, step in enumerate(step_numbers.tolist()):
        wall = 1.7e9 + step * 0.01
        for event, series in zip(events, values, strict=True):
            event.wall_time = wall
            event.step = step
            event.summary.value[0].simple_value = series[i]
            records.append(_record(event.SerializeToString()))
    return b"".join(records)


def write_run(run: Path, steps: int) -> Path:
    run.mkdir(parents=True)
    path = run / "events.out.tfevents.1700000000.bench-host.1234.0"
    path.write_bytes(event_bytes(0, steps, with_version=True))
    return path


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def against_tensorboard(steps: int, repeats: int, ea_repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        started = time.perf_counter()
        path = write_run(run, steps)
        print(
            f"{steps:,} steps x {len(TAGS)} scalars: {path.stat().st_size / 2**20:.1f} MiB, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        SOURCE.read_losses(run)  # imports, not timed
        ours = []
        for _ in range(repeats):
            seconds, data = timed(lambda: SOURCE.read_losses(run))
            ours.append(seconds)
        assert data.table.num_rows == steps and data.skipped == [], data.skipped
        theirs = []
        for _ in range(ea_repeats):

            def reload() -> EventAccumulator:
                accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
                accumulator.Reload()
                return accumulator

            seconds, accumulator = timed(reload)
            theirs.append(seconds)
            assert len(accumulator.Scalars(TAGS[0])) == steps
    ea, mine = statistics.median(theirs), statistics.median(ours)
    print(f"  TensorBoard EventAccumulator.Reload  {ea:8.2f} s   (median of {ea_repeats})")
    print(f"  read_losses(cache=None)              {mine:8.3f} s   (median of {repeats})")
    print(f"  ratio {ea / mine:.1f}x (target: at least {TARGET_RATIO:.0f}x)")


def cached_reads(steps: int, append_steps: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run, cache = Path(tmp) / "run", Path(tmp) / "cache"
        started = time.perf_counter()
        path = write_run(run, steps)
        print(
            f"\n{steps:,} steps x {len(TAGS)} scalars: {path.stat().st_size / 2**20:.0f} MiB, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        firsts = []
        for _ in range(repeats):
            shutil.rmtree(cache, ignore_errors=True)
            seconds, data = timed(lambda: SOURCE.read_losses(run, cache))
            firsts.append(seconds)
        assert data.table.num_rows == steps and data.skipped == [], data.skipped
        parts = sum(f.stat().st_size for f in (cache / "tensorboard").iterdir())
        print(
            f"  first read, with a cache             {statistics.median(firsts):8.2f} s   "
            f"(median of {repeats}; cache {parts / 2**20:.0f} MiB)"
        )
        long = _long_rows(path)
        wides = [timed(lambda: longform.to_wide(long))[0] for _ in range(repeats)]
        again, parses = [], []
        total = steps
        for _ in range(repeats):
            new = event_bytes(total, append_steps, with_version=False)
            size = path.stat().st_size
            with open(path, "ab") as handle:
                handle.write(new)
            total += append_steps
            seconds, data = timed(lambda: SOURCE.read_losses(run, cache))
            again.append(seconds)
            assert data.table.num_rows == total and data.skipped == [], data.skipped
            parses.append(_parse_alone(path, size))
        print(
            f"  read after {append_steps:,} new steps        "
            f"{statistics.median(again) * 1e3:8.1f} ms  (median of {repeats})"
        )
        print(f"    of which: the new bytes parsed     {statistics.median(parses) * 1e3:8.1f} ms")
        print(f"              to_wide of {steps:,} steps {statistics.median(wides) * 1e3:8.1f} ms")
        idle = statistics.median(_idle_reads(run, cache, repeats))
        print(f"  read with nothing new                {idle * 1e3:8.1f} ms  (median of {repeats})")
        before = []
        logging.getLogger("lossreport").setLevel(logging.ERROR)  # "table gone: parts read"
        for _ in range(repeats):
            for wide in (cache / "tensorboard").glob("wide-*"):
                wide.unlink()
            before.append(timed(lambda: SOURCE.read_losses(run, cache))[0])
        print(
            f"    before (parts read, made wide)     {statistics.median(before) * 1e3:8.1f} ms  "
            f"({statistics.median(before) / idle:.0f}x)"
        )
        return idle


def _idle_reads(run: Path, cache: Path, repeats: int) -> list[float]:
    """Reads with nothing new (after one that keeps the table), each returning every row."""
    rows = SOURCE.read_losses(run, cache).table.num_rows
    times = []
    for _ in range(repeats):
        seconds, data = timed(lambda: SOURCE.read_losses(run, cache))
        assert data.table.num_rows == rows and data.skipped == [], data.skipped
        times.append(seconds)
    return times


def flat_reads(small_steps: int, big_steps: int, big_idle: float, repeats: int) -> None:
    """A read with nothing new at `small_steps` against the one at `big_steps`."""
    with tempfile.TemporaryDirectory() as tmp:
        run, cache = Path(tmp) / "run", Path(tmp) / "cache"
        write_run(run, small_steps)
        small = statistics.median(_idle_reads(run, cache, repeats))
    ratio = big_idle / small
    print(f"\nread with nothing new, {small_steps:,} steps {small * 1e3:8.1f} ms")
    print(f"read with nothing new, {big_steps:,} steps {big_idle * 1e3:8.1f} ms")
    print(
        f"  ratio {ratio:.2f}x (target: at most {TARGET_FLAT:.1f}x; before: about 0.6 s per "
        f"1M steps): {'met' if ratio <= TARGET_FLAT else 'NOT met'}"
    )


def _parse_alone(path: Path, start: int) -> float:
    codec = tfrecord.load_codec()
    assert codec is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        plugins: dict[str, str] = {}
        seconds, _ = timed(
            lambda: tfrecord.scan_file(fd, path, start, size, codec, plugins).scalars.table(plugins)
        )
    finally:
        os.close(fd)
    return float(seconds)


def _long_rows(path: Path) -> Any:
    codec = tfrecord.load_codec()
    assert codec is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        plugins: dict[str, str] = {}
        scan = tfrecord.scan_file(fd, path, 0, os.fstat(fd).st_size, codec, plugins)
    finally:
        os.close(fd)
    return scan.scalars.table(plugins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ea-repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--big-steps", type=int, default=1_000_000)
    parser.add_argument("--append-steps", type=int, default=1000)
    parser.add_argument("--small-steps", type=int, default=10_000)
    parser.add_argument("--skip-tensorboard", action="store_true", help="leave out part 1")
    args = parser.parse_args()
    if not args.skip_tensorboard:
        against_tensorboard(args.steps, args.repeats, args.ea_repeats)
    idle = cached_reads(args.big_steps, args.append_steps, args.repeats)
    flat_reads(args.small_steps, args.big_steps, idle, args.repeats)


if __name__ == "__main__":
    main()
