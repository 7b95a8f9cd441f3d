"""Report rendering: `lossreport render` against the feature document's own approach.

    python benchmarks/bench_render.py [--sizes 10000 100000 1000000] [--repeats 3]

For synthetic SAE-like runs (4 losses: mse, l1, auxiliary reconstruction, overall, with noise
and a few spikes), each logged through `lossreport.start_run`, measures in one run:
  - `lossreport render RUN` as a whole process (interpreter start to exit), and
  - seed_baseline.py (the seed's matplotlib + seaborn approach: every point, 300 DPI, pandas
    CSV) as a whole process,
  - the chart time alone (lossreport's charts for one run, in a warm process),
and prints medians and the ratios. Needs `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lossreport
from lossreport import runformat
from lossreport.report import stats, vega
from lossreport.report.history import from_table
from lossreport.report.outputs import OutputNames, write_charts

HERE = Path(__file__).resolve().parent


def make_run(runs_dir: Path, steps: int) -> Path:
    rng = np.random.default_rng(steps)
    t = np.arange(steps) / steps
    mse = 25 * np.exp(-t * 20) + 0.05 + 0.02 * rng.random(steps)
    l1 = 0.1 + 0.05 * (1 - np.exp(-t * 5)) + 0.01 * rng.random(steps)
    aux = 1.1 * mse + 0.01 * rng.random(steps)
    mse[rng.integers(0, steps, 3)] *= 40  # spikes a downsample must keep
    overall = mse + l1 + aux
    with lossreport.start_run(
        runs_dir,
        model="tiny-stories-1L-21M",
        hook="blocks.0.hook_mlp_out",
        architecture="gated",
        run_id=f"sae-{steps}",
        flush_every=50_000,
        report_on_close=False,  # the benchmark renders it, timed
    ) as run:
        for step, a, b, c, d in zip(
            range(steps), mse.tolist(), l1.tolist(), aux.tolist(), overall.tolist(), strict=True
        ):
            run.log(step, mse_loss=a, l1_loss=b, auxiliary_reconstruction_loss=c, overall_loss=d)
    return run.path


# Runs the command from a small process: Linux carries a forked child's peak RSS across exec,
# so a command started straight from this (large) process would report this one's size.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def timed_process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB (the largest process of its tree) of one command."""
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True
    )
    seconds, returncode, max_kb = result.stdout.split()
    if int(returncode) != 0:
        raise subprocess.CalledProcessError(int(returncode), command)
    return float(seconds), int(max_kb) / 1024


def chart_seconds(run_dir: Path, out: Path) -> float:
    history = from_table(runformat.read_losses(run_dir).table)
    summary = stats.summary_stats(history, "m", "h")
    start = time.perf_counter()
    write_charts(out, history, summary, OutputNames("m", "h", "x"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "lossreport", "render"]
    vega.warm_up()
    print(f"medians of {args.repeats}; whole processes; 2-core machine noise applies")
    print(
        f"{'steps':>9} {'lossreport':>11} {'seed':>9} {'speed-up':>9} {'charts':>8}"
        f" {'lr MB':>7} {'seed MB':>8}"
    )
    chart_times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.sizes:
            run_dir = make_run(Path(tmp) / "runs", steps)
            ours = [timed_process([*cli, str(run_dir)]) for _ in range(args.repeats)]
            seed = [
                timed_process(
                    [
                        sys.executable,
                        str(HERE / "seed_baseline.py"),
                        str(run_dir),
                        f"{tmp}/seed-{steps}",
                    ]
                )
                for _ in range(args.repeats)
            ]
            chart_times[steps] = statistics.median(
                chart_seconds(run_dir, Path(tempfile.mkdtemp(dir=tmp))) for _ in range(args.repeats)
            )
            ours_s = statistics.median(t for t, _ in ours)
            seed_s = statistics.median(t for t, _ in seed)
            print(
                f"{steps:>9,} {ours_s:>10.2f}s {seed_s:>8.2f}s {seed_s / ours_s:>8.1f}x"
                f" {chart_times[steps]:>7.2f}s {max(m for _, m in ours):>7.0f}"
                f" {max(m for _, m in seed):>8.0f}"
            )
    smallest, largest = min(chart_times), max(chart_times)
    print(
        f"chart time at {largest:,} steps / at {smallest:,} steps: "
        f"{chart_times[largest] / chart_times[smallest]:.2f}x"
    )


if __name__ == "__main__":
    main()
