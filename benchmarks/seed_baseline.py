"""The feature document's approach, as its seed implementation did it: matplotlib + seaborn
plotting every point at 300 DPI, a pandas moving average and pandas `to_csv`.

    python benchmarks/seed_baseline.py RUN_DIR OUT_DIR

Used only as the peer in bench_render.py; it reads the same run directory lossreport renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_parquet(run_dir / "losses").sort_values("step")
    frame = frame.drop(columns=["wall_time"]).drop_duplicates("step", keep="last")
    losses = [column for column in frame.columns if column != "step"]
    sns.set_style("whitegrid")
    window = max(1, len(frame) // 20)
    for loss in losses:
        fig, ax = plt.subplots(figsize=(10, 6))
        ax.plot(frame["step"], frame[loss], alpha=0.6, label="raw")
        ax.plot(frame["step"], frame[loss].rolling(window).mean(), label=f"MA ({window})")
        values = frame[loss]
        ax.text(
            0.02,
            0.98,
            f"mean {values.mean():.4f}\nfinal {values.iloc[-1]:.4f}\n"
            f"min {values.min():.4f}\nmax {values.max():.4f}",
            transform=ax.transAxes,
            va="top",
        )
        ax.set_title(loss)
        ax.legend()
        fig.savefig(out / f"loss_curves_{loss}.png", dpi=300, bbox_inches="tight")
        plt.close(fig)
    fig, (linear, log) = plt.subplots(2, 1, figsize=(12, 10))
    for loss in losses:
        linear.plot(frame["step"], frame[loss], label=loss)
        log.semilogy(frame["step"], frame[loss].clip(lower=1e-12), label=loss)
    linear.legend()
    log.legend()
    fig.savefig(out / "loss_curves_combined.png", dpi=300, bbox_inches="tight")
    plt.close(fig)
    frame.to_csv(out / "loss_history.csv", index=False)


if __name__ == "__main__":
    main()
