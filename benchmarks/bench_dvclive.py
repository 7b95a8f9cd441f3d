"""Reading a long DVCLive run, and showing it in a notebook, against a Lightning CSV of the
same values.

    python benchmarks/bench_dvclive.py [--steps 1000000] [--repeats 3]

Writes one run of `--steps` steps x 4 metrics in DVCLive's layout (`plots/metrics/train/*.tsv`,
with timestamps, as `log_metric(..., timestamp=True)` writes them; DVCLive itself appends a
row per call, minutes for a million steps) and a Lightning `metrics.csv` of the same values.
Times each source's `read_losses` (median of the repeats), then `lossreport.open` of the
DVCLive run and its notebook HTML (the chart library bundled once before).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lossreport
from lossreport.notebook import embed
from lossreport.sources.dvclive import DvcLiveSource
from lossreport.sources.lightning import LightningCsvSource

METRICS = ("mse_loss", "l1_loss", "aux_loss", "overall_loss")


def write_dvclive(run_dir: Path, steps: int) -> None:
    folder = run_dir / "plots" / "metrics" / "train"
    folder.mkdir(parents=True)
    for index, name in enumerate(METRICS):
        rows = "".join(
            f"{1_700_000_000_000 + step}\t{step}\t{(index + 1) / (step + 1)!r}\n"
            for step in range(steps)
        )
        (folder / f"{name}.tsv").write_text(f"timestamp\tstep\t{name}\n{rows}")
    (run_dir / "params.yaml").write_text("model_name: bench\nlr: 0.0003\n")


def write_lightning(run_dir: Path, steps: int) -> None:
    run_dir.mkdir(parents=True)
    header = ",".join(["step", *(f"train/{name}" for name in METRICS)])
    rows = "".join(
        ",".join([str(step), *(repr((i + 1) / (step + 1)) for i in range(len(METRICS)))]) + "\n"
        for step in range(steps)
    )
    (run_dir / "metrics.csv").write_text(f"{header}\n{rows}")


def median_seconds(action: object, repeats: int) -> str:
    """The median wall and CPU time (all threads) of `action`: on a shared machine the wall
    time moves with the others' load, the CPU time much less."""
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        action()  # type: ignore[operator]
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return f"{statistics.median(walls):.2f} s ({statistics.median(cpus):.2f} s CPU)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dvclive-") as tmp:
        dvclive_dir, lightning_dir = Path(tmp) / "exp" / "dvclive", Path(tmp) / "version_0"
        write_dvclive(dvclive_dir, args.steps)
        write_lightning(lightning_dir, args.steps)
        read = median_seconds(lambda: DvcLiveSource().read_losses(dvclive_dir), args.repeats)
        peer = median_seconds(lambda: LightningCsvSource().read_losses(lightning_dir), args.repeats)
        print(f"{args.steps:,} steps x {len(METRICS)} metrics")
        print(f"read_losses: DVCLive TSVs {read}, Lightning CSV {peer}")
        embed.packed_library()
        view = median_seconds(lambda: lossreport.open(dvclive_dir)._repr_html_(), args.repeats)
        size = len(lossreport.open(dvclive_dir)._repr_html_())
        print(f"lossreport.open + notebook HTML: {view}, {size / 1e3:,.0f} kB")


if __name__ == "__main__":
    main()
