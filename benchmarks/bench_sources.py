"""Daemon start-up over 1,000 already-converted runs of other tools, against as many native runs;
with --wandb, reading a W&B run log against a plain protobuf loop; with --flat, what a read
with nothing new costs each foreign source at two run lengths.

    python benchmarks/bench_sources.py [--runs 1000] [--repeats 3]
    python benchmarks/bench_sources.py --wandb [--wandb-steps 100000] [--work DIR]
    python benchmarks/bench_sources.py --flat [--small-steps 10000] [--big-steps 1000000]
        [--repeats 5] [--only wandb,dvclive] [--work DIR]

One TensorBoard run (1,000 steps x 4 tags) is rendered for real (which converts it into its
`.lossreport-cache/`), then copied, with its report and marker, into `--runs` folders three
levels deep (`team-T/sweep-S/run-R/`), as a tree looks after the daemon has converted and
rendered everything. The same is done for a native run. Each daemon is timed from its start to
its "watching" log line (a full scan of the tree: the walk, every run's inputs, every marker),
and must re-render nothing. Prints the medians and the ratio foreign / native.

--wandb: the real wandb package (offline; tests/support/wandb_writer.py's `steps` plan, in its
environment) logs `--wandb-steps` + 1,000 steps of 4 scalars (kept in `--work` for the next
time: writing 100,000 steps takes a minute). W&B 0.31
offers no way to read a run's `.wandb` log locally from Python (its SDK's DataStore reader
is gone; `wandb beta leet` is a terminal viewer; the public API reads the server), so the
baseline is the plain loop its old reader made: each fragment framed and checked (struct,
zlib.crc32), each record decoded by W&B's own `Record` class, each history item's JSON
parsed into a row. Timed: the first read of the log as it was at `--wandb-steps` steps
(lossreport's with an empty cache), then lossreport's read of the 1,000 steps written since
(the baseline can only read everything again).

--flat: for each foreign source, one run of --small-steps and one of --big-steps steps x 4
losses (the Trainer's state: its usual entry a step), kept in `--work` for the next time (the
1M-step W&B log, 580 MiB, takes the real wandb about ten minutes to write; the others are
written by hand in their tools' formats, as bench_tensorboard.py and bench_dvclive.py do,
dated an hour ago). Each run is read once into an empty cache, then 101 reads with nothing new
are timed (median): the last read's table, mapped (sources/widecache.py). Beside it, the same
read as it was before that table was kept (TensorBoard and W&B: the kept table removed first,
so the cached parts are read back and made wide; the others: no cache, every file parsed;
median of --repeats, at most 3), and the ratio of the big run's read to the small one's
against the target (flat in run length: at most 1.5x). LOSSREPORT_READ_BUDGET is raised to 4G,
unless set, so that 1M-step runs are read whole.
"""

from __future__ import annotations

import argparse
import json
import logging
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's writers

from bench_dvclive import write_dvclive, write_lightning
from bench_tensorboard import write_run as write_tensorboard
from daemon_process import Daemon

import lossreport
from lossreport import sources
from lossreport.report.render import render_run
from lossreport.runformat import read_marker
from lossreport.sources.wandb_runs import Tail, WandbSource
from lossreport.storage.budget import BUDGET_VARIABLE
from tests.support.procs import ROOT
from tests.support.wandb_writer import wandb_env

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


def wandb_log_of(work: Path, steps: int) -> Path:
    """A W&B run's log of `steps` steps x 4 scalars, written by wandb (offline) once, with the
    test writer's `steps` plan in its environment."""
    run_id = f"bench{steps}"
    found = sorted(work.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    if found:
        return found[-1]
    command = [sys.executable, "-m", "tests.support.wandb_writer", "steps", run_id, str(steps)]
    subprocess.run(command, cwd=ROOT, env=wandb_env(work), check=True)
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


FLAT_TARGET = 1.5
IDLE_REPEATS = 101  # reads with nothing new take a millisecond: a median of many
KEPT_BY_PARTS = ("tensorboard", "wandb")  # the others keep one table, and no parts


def write_mlflow(root: Path, steps: int) -> Path:
    """An MLflow file store's finished run: meta.yaml, a metric file per loss."""
    run_dir = root / "mlruns" / "0" / "5f0c1d2e3a4b4c6d8e9f0a1b2c3d4e5f"
    folder = run_dir / "metrics" / "train"
    folder.mkdir(parents=True)
    for index, tag in enumerate(TAGS):
        rows = "".join(
            f"{1_700_000_000_000 + step} {(index + 1) / (step + 1)!r} {step}\n"
            for step in range(steps)
        )
        (folder / tag.split("/")[1]).write_text(rows)
    (run_dir / "meta.yaml").write_text(
        "artifact_uri: file:///mlruns/0/5f0c1d2e3a4b4c6d8e9f0a1b2c3d4e5f/artifacts\n"
        "end_time: 1700000100000\nexperiment_id: '0'\nlifecycle_stage: active\n"
        "run_id: 5f0c1d2e3a4b4c6d8e9f0a1b2c3d4e5f\nrun_name: bench-gpt2-résidu\n"
        "start_time: 1700000000000\nstatus: 3\n"
    )
    return run_dir


def write_trainer_state(root: Path, steps: int) -> Path:
    """A Trainer's output folder: trainer_state.json with an entry a step, as logging_steps=1
    writes them (loss, grad_norm, learning_rate, epoch, step)."""
    run_dir = root / "gpt2-résidu-sae"
    run_dir.mkdir(parents=True)
    history = [
        {
            "epoch": step / 1000,
            "grad_norm": 2.0 / step,
            "learning_rate": 3e-4 * (1 - step / (steps + 1)),
            "loss": 1.0 / step,
            "step": step,
        }
        for step in range(1, steps + 1)
    ]
    state = {"global_step": steps, "max_steps": steps, "log_history": history}
    with (run_dir / "trainer_state.json").open("w") as handle:
        json.dump(state, handle, indent=2)
    return run_dir


def write_wandb(root: Path, steps: int) -> Path:
    return wandb_log_of(root, steps).parent


def write_tb(root: Path, steps: int) -> Path:
    write_tensorboard(root / "tb-run", steps)
    return root / "tb-run"


def write_dv(root: Path, steps: int) -> Path:
    write_dvclive(root / "exp-1" / "dvclive", steps)
    return root / "exp-1" / "dvclive"


def write_csv(root: Path, steps: int) -> Path:
    write_lightning(root / "bench" / "version_0", steps)
    return root / "bench" / "version_0"


WRITERS: dict[str, Callable[[Path, int], Path]] = {
    "tensorboard": write_tb,
    "wandb": write_wandb,
    "dvclive": write_dv,
    "lightning": write_csv,
    "mlflow": write_mlflow,
    "hf-trainer": write_trainer_state,
}


def flat_fixture(work: Path, name: str, steps: int) -> Path:
    """The run of `steps` steps for source `name`, written once into `work` (its files dated
    an hour ago: finished, and settled for the sources that read files whole)."""
    root = work / f"{name}-{steps}"
    marker = root / "written"
    if not marker.exists():
        if name != "wandb":  # (wandb_log_of finds a log written before)
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        run_dir = WRITERS[name](root, steps)
        then = time.time() - 3600
        for path in run_dir.rglob("*"):
            os.utime(path, (then, then), follow_symlinks=False)
        marker.write_text(str(run_dir.relative_to(root)))
        print(f"  ({name}, {steps:,} steps: written in {time.perf_counter() - started:.0f} s)")
    return root / marker.read_text()


def nothing_new(name: str, run_dir: Path, repeats: int, kept: bool) -> float:
    """The median seconds of a read with nothing new, with the last read's table (`kept`) or
    as before it was kept."""
    source = sources.source_of(run_dir)
    assert source.name == name, (source.name, run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) if kept or name in KEPT_BY_PARTS else None
        rows = source.read_losses(run_dir, cache).table.num_rows
        times = []
        for _ in range(repeats):
            if not kept and cache is not None:
                for table in cache.glob("*/wide-*.arrow"):
                    table.unlink()
            started = time.perf_counter()
            data = source.read_losses(run_dir, cache)
            times.append(time.perf_counter() - started)
            assert data.table.num_rows == rows and not data.over_budget, data.over_budget
    return statistics.median(times)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def bench_flat(work: Path, names: list[str], small: int, big: int, repeats: int) -> None:
    os.environ.setdefault(BUDGET_VARIABLE, "4G")
    logging.disable(logging.WARNING)  # a removed table is named unreadable: meant here
    print(
        f"read with nothing new, median of {IDLE_REPEATS} ({BUDGET_VARIABLE}="
        f"{os.environ[BUDGET_VARIABLE]}); before: the read before its table was kept, median "
        f"of {min(repeats, 3)}"
    )
    for name in names:
        runs = {steps: flat_fixture(work, name, steps) for steps in (small, big)}
        now = {
            steps: nothing_new(name, run, IDLE_REPEATS, kept=True) for steps, run in runs.items()
        }
        then = {
            steps: nothing_new(name, run, min(repeats, 3), kept=False)
            for steps, run in runs.items()
        }
        ratio = now[big] / now[small]
        print(
            f"{name:12} {small:,} steps {_ms(now[small]):>9}, {big:,} steps {_ms(now[big]):>9}"
            f": {ratio:.2f}x (target: at most {FLAT_TARGET}x, "
            f"{'met' if ratio <= FLAT_TARGET else 'NOT met'}); before: {_ms(then[small])}, "
            f"{_ms(then[big])} ({then[big] / now[big]:,.0f}x slower at {big:,})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wandb", action="store_true", help="read a W&B log instead")
    parser.add_argument("--wandb-steps", type=int, default=100_000)
    parser.add_argument("--work", type=Path, help="where the W&B log (--wandb) or runs are kept")
    parser.add_argument("--flat", action="store_true", help="reads with nothing new instead")
    parser.add_argument("--small-steps", type=int, default=10_000)
    parser.add_argument("--big-steps", type=int, default=1_000_000)
    parser.add_argument("--only", help="--flat: these sources (comma-separated)")
    args = parser.parse_args()
    if args.flat:
        work = args.work or Path(tempfile.gettempdir()) / "lossreport-bench-sources"
        names = args.only.split(",") if args.only else list(WRITERS)
        bench_flat(work, names, args.small_steps, args.big_steps, args.repeats)
        return
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
