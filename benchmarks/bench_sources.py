"""Daemon start-up over 1,000 already-converted runs of other tools, against as many native runs.

    python benchmarks/bench_sources.py [--runs 1000] [--repeats 3]

One TensorBoard run (1,000 steps x 4 tags) is rendered for real (which converts it into its
`.lossreport-cache/`), then copied, with its report and marker, into `--runs` folders three
levels deep (`team-T/sweep-S/run-R/`), as a tree looks after the daemon has converted and
rendered everything. The same is done for a native run. Each daemon is timed from its start to
its "watching" log line (a full scan of the tree: the walk, every run's inputs, every marker),
and must re-render nothing. Prints the medians and the ratio foreign / native.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from daemon_process import Daemon

import lossreport
from lossreport.report.render import render_run
from lossreport.runformat import read_marker

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
