"""What the report at close (`report_on_close=True`) adds to the end of a training run.

    python benchmarks/bench_close.py [--steps 10000] [--repeats 5]

For a synthetic SAE-like run (4 losses, as bench_render.py logs them), measures in one run:
  - `run.close()` with `report_on_close=False`: the close every run pays (the last shard and
    run.json);
  - `run.close()` with `report_on_close=True`: the same plus the report, rendered in a child
    process; the difference is what the report adds to the end of training (target: < 3 s
    for 10,000 steps on a 2-core machine);
  - the peer, the seed's end of training (benchmarks/seed_baseline.py: matplotlib + seaborn,
    every point at 300 DPI, pandas CSV) run on the same run directory as a process;
  - the trainer's resident memory before and after a close with the report (the chart engine
    stays out of it).
Prints medians and ratios. The peer needs `pip install -e '.[bench]'`; without it that row is
skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lossreport

HERE = Path(__file__).resolve().parent
TARGET_SECONDS = 3.0


def logged_run(runs_dir: Path, steps: int, run_id: str, report: bool) -> lossreport.Run:
    """A run with every step logged and flushed but not closed: what `close` finds at the end
    of training."""
    rng = np.random.default_rng(steps)
    t = np.arange(steps) / steps
    mse = (25 * np.exp(-t * 20) + 0.05 + 0.02 * rng.random(steps)).tolist()
    l1 = (0.1 + 0.05 * (1 - np.exp(-t * 5)) + 0.01 * rng.random(steps)).tolist()
    run = lossreport.start_run(
        runs_dir,
        model="tiny-stories-1L-21M",
        hook="blocks.0.hook_mlp_out",
        architecture="gated",
        run_id=run_id,
        report_on_close=report,
    )
    for step in range(steps):
        a, b = mse[step], l1[step]
        run.log(
            step, mse_loss=a, l1_loss=b, auxiliary_reconstruction_loss=1.1 * a, overall_loss=a + b
        )
    run.flush()
    return run


def timed_close(runs_dir: Path, steps: int, run_id: str, report: bool) -> float:
    run = logged_run(runs_dir, steps, run_id, report)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the console summary, not timed on a tty
        run.close()
    return time.perf_counter() - started


def seed_seconds(run_dir: Path, out_dir: Path) -> float | None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(HERE / "seed_baseline.py"), str(run_dir), str(out_dir)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if "No module named" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    return time.perf_counter() - started


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    plain, with_report, seed = [], [], []
    rss_before = rss_after = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for repeat in range(args.repeats):
            plain.append(timed_close(runs, args.steps, f"plain-{repeat}", report=False))
            rss_before = rss_mb()
            with_report.append(timed_close(runs, args.steps, f"report-{repeat}", report=True))
            rss_after = rss_mb()
            peer = seed_seconds(runs / f"plain-{repeat}", Path(tmp) / f"seed-{repeat}")
            if peer is not None:
                seed.append(peer)
    added = statistics.median(with_report) - statistics.median(plain)
    print(f"end of a {args.steps:,}-step run (4 losses), median of {args.repeats}:")
    print(f"  close(), report_on_close=False    {statistics.median(plain):7.3f} s")
    print(f"  close(), report_on_close=True     {statistics.median(with_report):7.3f} s")
    verdict = "within" if added < TARGET_SECONDS else "OVER"
    print(f"  added by the report               {added:7.3f} s ({verdict} {TARGET_SECONDS:.0f} s)")
    if seed:
        ratio = statistics.median(seed) / statistics.median(with_report)
        print(f"  seed's matplotlib report (peer)   {statistics.median(seed):7.3f} s")
        print(f"  peer / lossreport                 {ratio:7.2f}x")
    else:
        print("  seed's matplotlib report (peer)   skipped: pip install -e '.[bench]'")
    print(f"  trainer memory around the close   {rss_before:.0f} MB -> {rss_after:.0f} MB")


if __name__ == "__main__":
    main()
