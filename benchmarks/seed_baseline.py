"""The seed's approach, the peer in bench_render.py: SAELens's loss-graphing feature as its
seed implementation drew it, rewritten here from its published parameters.

    python benchmarks/seed_baseline.py RUN_DIR OUT_DIR

What makes the seed's cost, and is kept: the trainer's history as a dict of Python lists
(`"steps"` plus one list per loss), matplotlib with the `seaborn-v0_8` style and the "husl"
palette, every point drawn; per loss a 12x8 in figure at 300 DPI with the raw curve (width 2),
a `np.convolve` moving average over `len // 20` steps (width 3, dashed), and a boxed
mean/final/min/max text; one 14x12 in figure with a linear and a log panel (positive values
only); `bbox_inches="tight"`; and `pandas.DataFrame(history).to_csv`. It reads the same run
directory lossreport renders (last write wins on a repeated step, as lossreport does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def load_history(run_dir: Path) -> dict[str, list[float]]:
    frame = pd.read_parquet(run_dir / "losses").drop(columns=["wall_time"])
    frame = frame.drop_duplicates("step", keep="last").sort_values("step")
    history = {"steps": frame.pop("step").tolist()}
    history.update({name: column.tolist() for name, column in frame.items()})
    return history


def title_of(loss: str) -> str:
    return loss.replace("_", " ").title()


def plot_one(steps: np.ndarray, values: np.ndarray, loss: str, path: Path) -> None:
    plt.figure(figsize=(12, 8))
    plt.plot(steps, values, linewidth=2, alpha=0.8)
    window = max(1, len(values) // 20)
    smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
    plt.plot(
        steps[window - 1 :],
        smoothed,
        linewidth=3,
        alpha=0.6,
        linestyle="--",
        label=f"Moving Average (window={window})",
    )
    plt.title(f"{title_of(loss)} Loss Over Training Steps", fontsize=14, fontweight="bold")
    plt.xlabel("Training Steps")
    plt.ylabel(f"{title_of(loss)} Loss")
    plt.grid(True, alpha=0.3)
    plt.legend()
    box = (
        f"Mean: {values.mean():.6f}\nFinal: {values[-1]:.6f}\n"
        f"Min: {values.min():.6f}\nMax: {values.max():.6f}"
    )
    plt.text(
        0.02,
        0.98,
        box,
        transform=plt.gca().transAxes,
        verticalalignment="top",
        bbox={"boxstyle": "round", "facecolor": "wheat", "alpha": 0.8},
    )
    plt.tight_layout()
    plt.savefig(path, dpi=300, bbox_inches="tight")
    plt.close()


def plot_combined(steps: np.ndarray, curves: dict[str, np.ndarray], path: Path) -> None:
    _, (linear, log) = plt.subplots(2, 1, figsize=(14, 12))
    for loss, values in curves.items():
        linear.plot(steps, values, linewidth=2, alpha=0.8, label=title_of(loss))
        positive = values > 0
        log.plot(steps[positive], values[positive], linewidth=2, alpha=0.8, label=title_of(loss))
    log.set_yscale("log")
    for axes in (linear, log):
        axes.grid(True, alpha=0.3)
        axes.legend()
    plt.tight_layout()
    plt.savefig(path, dpi=300, bbox_inches="tight")
    plt.close()


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    history = load_history(run_dir)
    plt.style.use("seaborn-v0_8")
    sns.set_palette("husl")
    steps = np.array(history["steps"])
    curves = {loss: np.array(values) for loss, values in history.items() if loss != "steps"}
    for loss, values in curves.items():
        plot_one(steps, values, loss, out / f"loss_curves_{loss}.png")
    plot_combined(steps, curves, out / "loss_curves_combined.png")
    pd.DataFrame(history).to_csv(out / "loss_history.csv", index=False)


if __name__ == "__main__":
    main()
