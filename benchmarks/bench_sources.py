"""Daemon start-up over 1,000 already-converted runs of other tools, against as many native runs;
with --wandb, reading a W&B run log against a plain protobuf loop.

    python benchmarks/bench_sources.py [--runs 1000] [--repeats 3]
    python benchmarks/bench_sources.py --wandb [--wandb-steps 100000] [--work DIR]

One TensorBoard run (1,000 steps x 4 tags) is rendered for real (which converts it into its
`.lossreport-cache/`), then copied, with its report and marker, into `--runs` folders three
levels deep (`team-T/sweep-S/run-R/`), as a tree looks after the daemon has converted and
rendered everything. The same is done for a native run. Each daemon is timed from its start to
its "watching" log line (a full scan of the tree: the walk, every run's inputs, every marker),
and must re-render nothing. Prints the medians and the ratio foreign / native.

--wandb: the real wandb package (offline) logs `--wandb-steps` + 1,000 steps of 4 scalars
(kept in `--work` for the next time: writing 100,000 steps takes a minute or two). W&B 0.31
offers no way to read a run's `.wandb` log locally from Python (its SDK's DataStore reader
is gone; `wandb beta leet` is a terminal viewer; the public API reads the server), so the
baseline is the plain loop its old reader made: each fragment framed and checked (struct,
zlib.crc32), each record decoded by W&B's own `Record` class, each history item's JSON
parsed into a row. Timed: the first read of the log as it was at `--wandb-steps` steps
(lossreport's with an empty cache), then lossreport's read of the 1,000 steps written since
(the baseline can only read everything again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from daemon_process import Daemon

import lossreport
from lossreport.report.render import render_run
from lossreport.runformat import read_marker
from lossreport.sources.wandb_runs import Tail, WandbSource

TAGS = ("train/mse_loss", "train/l1_loss", "train/aux_loss", "train/overall_loss")


def tensorboard_template(folder: Path, steps: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder), flush_secs=3600)
    for step in range(steps):
        for index, tag in enumerate(TAGS):
            writer.add_scalar(tag, (index + 1) / (step + 1), step)
    writer.close()
    return folder


def native_template(parent: Path, steps: int) -> Path:
    with lossreport.start_run(
        parent, model="bench", hook="blocks.0", run_id="native", report_on_close=False
    ) as run:
        for step in range(steps):
            run.log(step, **{tag.split("/")[1]: 1.0 / (step + 1) for tag in TAGS})
    return run.path


def copies(template: Path, runs_dir: Path, count: int) -> None:
    """`count` copies of a rendered run (mtimes kept, so each marker matches its inputs),
    written two hours ago: the TensorBoard runs are finished by silence."""
    then = time.time() - 7200
    for path in template.rglob("*"):
        os.utime(path, (then, then))
    render_run(template, status="completed")
    assert read_marker(template) is not None
    for index in range(count):
        key = f"team-{index % 10}/sweep-{index // 10 % 10}/run-{index:05d}"
        shutil.copytree(template, runs_dir / key, copy_function=shutil.copy2)


def start_up(runs_dir: Path) -> tuple[float, int]:
    started = time.monotonic()
    daemon = Daemon(runs_dir, "--stale-after", "10m")
    ready = daemon.wait_for("watching")
    time.sleep(1.0)  # anything it would re-render is submitted during the scan
    renders = len(daemon.events("render_started"))
    daemon.stop()
    return ready - started, renders


WANDB_WRITER = """
import sys, wandb
run = wandb.init(project="bench", id=sys.argv[2], config={"model_name": "bench"})
for step in range(int(sys.argv[1])):
    run.log({tag: (i + 1) / (step + 1) for i, tag in enumerate(sys.argv[3:])}, step=step)
run.finish()
"""


def wandb_log_of(work: Path, steps: int) -> Path:
    """A W&B run's log of `steps` steps x 4 scalars, written by wandb (offline) once."""
    run_id = f"bench{steps}"
    found = sorted(work.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    if found:
        return found[-1]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(work),
        "WANDB_CACHE_DIR": str(work / ".cache"),
        "WANDB_CONFIG_DIR": str(work / ".config"),
        "WANDB_DATA_DIR": str(work / ".data"),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "HOME": str(work / ".home"),
    }
    subprocess.run(
        [sys.executable, "-c", WANDB_WRITER, str(steps), run_id, *TAGS], env=env, check=True
    )
    return wandb_log_of(work, steps)


def plain_protobuf_read(path: Path) -> list[dict[str, object]]:
    """The baseline: framing as W&B's old DataStore did, W&B's Record class, json per item."""
    from wandb.proto.wandb_internal_pb2 import Record

    fragment = struct.Struct("<IHB")
    type_crcs = [zlib.crc32(bytes((kind,))) for kind in range(5)]
    rows: list[dict[str, object]] = []
    pieces: list[bytes] = []
    with path.open("rb") as handle:
        handle.read(7)
        index = 7
        while True:
            room = 32768 - index % 32768
            if room < 7:
                handle.read(room)
                index += room
            header = handle.read(7)
            if len(header) < 7:
                break
            crc, length, kind = fragment.unpack(header)
            data = handle.read(length)
            if len(data) < length:
                break  # a record being written
            index += 7 + length
            if zlib.crc32(data, type_crcs[kind]) != crc:
                raise ValueError(f"checksum at {index}")
            pieces.append(data)
            if kind not in (1, 4):  # FIRST, MIDDLE: more to come
                continue
            record = Record.FromString(b"".join(pieces))
            pieces = []
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or ".".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def best_of(repeats: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_wandb(work: Path, steps: int, repeats: int) -> None:
    full = wandb_log_of(work, steps + 1000)
    size = full.stat().st_size
    cut = size * steps // (steps + 1000)  # the log as it was at about `steps` steps
    source = WandbSource()
    with tempfile.TemporaryDirectory() as name:
        run_dir = Path(name) / "wandb" / full.parent.name
        run_dir.mkdir(parents=True)
        log = run_dir / full.name
        data = full.read_bytes()
        log.write_bytes(data[:cut])
        rows = len(plain_protobuf_read(log))
        plain = best_of(repeats, lambda: plain_protobuf_read(log))

        def first() -> None:
            shutil.rmtree(Path(name) / "cache", ignore_errors=True)
            source.read_losses(run_dir, Path(name) / "cache")

        ours = best_of(repeats, first)
        read = source.read_losses(run_dir, Path(name) / "cache")
        assert read.table.num_rows in (rows, rows - 1), (read.table.num_rows, rows)
        print(
            f"W&B log, {rows:,} steps x {len(TAGS)} scalars ({cut / 2**20:.1f} MiB), first "
            f"read: lossreport {ours:.2f}s, plain protobuf loop {plain:.2f}s "
            f"({plain / ours:.1f}x), best of {repeats}"
        )
        increments, follows = [], []
        for _ in range(repeats):
            log.write_bytes(data[:cut])
            source.read_losses(run_dir, Path(name) / "cache")
            tail = Tail()
            source.read_new(run_dir, tail)
            with log.open("ab") as handle:
                handle.write(data[cut:])
            started = time.perf_counter()
            grown = source.read_losses(run_dir, Path(name) / "cache")
            increments.append(time.perf_counter() - started)
            assert grown.table.num_rows == steps + 1000
            started = time.perf_counter()
            new = source.read_new(run_dir, tail)
            follows.append(time.perf_counter() - started)
            assert new.num_rows == grown.table.num_rows - read.table.num_rows
        plain_all = best_of(repeats, lambda: plain_protobuf_read(log))
        print(
            f"then {steps + 1000 - read.table.num_rows:,} new steps: lossreport "
            f"{min(increments) * 1000:.0f} ms (its cache: only the new records parsed), plain "
            f"protobuf loop {plain_all:.2f}s (the whole log again); the daemon's alert check "
            f"of them (read_new: the new rows only) {min(follows) * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wandb", action="store_true", help="read a W&B log instead")
    parser.add_argument("--wandb-steps", type=int, default=100_000)
    parser.add_argument("--work", type=Path, help="where the W&B log is kept (--wandb)")
    args = parser.parse_args()
    if args.wandb:
        work = args.work or Path(tempfile.gettempdir()) / "lossreport-bench-wandb"
        work.mkdir(parents=True, exist_ok=True)
        bench_wandb(work, args.wandb_steps, args.repeats)
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        trees = {}
        for kind, template in (
            ("tensorboard", tensorboard_template(tmp / "templates" / "tb", args.steps)),
            ("native", native_template(tmp / "templates", args.steps)),
        ):
            copies(template, tmp / kind, args.runs)
            trees[kind] = tmp / kind
        times: dict[str, list[float]] = {kind: [] for kind in trees}
        for _ in range(args.repeats):
            for kind, runs_dir in trees.items():
                seconds, renders = start_up(runs_dir)
                assert renders == 0, f"{kind}: {renders} runs rendered again"
                times[kind].append(seconds)
        for kind, values in times.items():
            print(
                f"start-up over {args.runs:,} converted {kind} runs (3 levels deep): "
                f"median {statistics.median(values):.2f}s to watching "
                f"(runs: {', '.join(f'{v:.2f}' for v in values)}), 0 re-rendered"
            )
        ratio = statistics.median(times["tensorboard"]) / statistics.median(times["native"])
        print(f"tensorboard / native start-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
