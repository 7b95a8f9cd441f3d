"""What a render costs on the inputs nothing caps: a long model name, and many series.

    python benchmarks/bench_budgets.py [--name-lengths 1000 100000] [--columns 300]

Measures `lossreport render` as a whole process (wall seconds, peak resident MB of its largest
process, files written) on a run of 200 steps whose model name has each length, and on a
Lightning CSVLogger folder of 36 rows and that many columns (per-feature logging, as SAE
trainers do). Before the render budgets (README.md, "Budgets"), 1,000 characters took 785 MB,
100,000 aborted the render, and 300 columns wrote 303 files in 50 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import lossreport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_render import timed_process  # a benchmark beside this file


def long_name_run(runs_dir: Path, length: int) -> Path:
    with lossreport.start_run(
        runs_dir, model="m" * length, hook="blocks.0.hook_resid_pre", report_on_close=False
    ) as run:
        for step in range(200):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.5 + 0.001 * step)
    return run.path


def many_columns_run(folder: Path, columns: int) -> Path:
    run_dir = folder / "lightning_logs" / "version_0"
    run_dir.mkdir(parents=True)
    names = ["train_loss", "mse_loss", "l1_loss", "lr", "epoch"]
    names += [f"feature_{index}_act" for index in range(columns - len(names))]
    rng = random.Random(columns)
    rows = ["step," + ",".join(names)]
    rows += [f"{step}," + ",".join(f"{rng.random():.5g}" for _ in names) for step in range(36)]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run_dir


def report(label: str, run_dir: Path) -> None:
    seconds, peak_mb = timed_process([sys.executable, "-m", "lossreport", "render", str(run_dir)])
    written = list((run_dir / "loss_graphs").iterdir())
    size_mb = sum(path.stat().st_size for path in written) / 2**20
    print(f"{label:<34} {seconds:>7.1f}s {peak_mb:>8.0f} {len(written):>6} {size_mb:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name-lengths", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--columns", type=int, default=300)
    args = parser.parse_args()
    print(f"{'input':<34} {'wall':>8} {'peak MB':>8} {'files':>6} {'out MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.name_lengths:
            run_dir = long_name_run(Path(tmp) / f"runs-{length}", length)
            report(f"model name of {length:,} characters", run_dir)
        run_dir = many_columns_run(Path(tmp) / "lightning", args.columns)
        size_kb = (run_dir / "metrics.csv").stat().st_size / 1024
        report(f"Lightning CSV, {args.columns} columns ({size_kb:.0f} KB)", run_dir)


if __name__ == "__main__":
    main()
