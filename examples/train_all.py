"""Train the three example SAEs (standard, gated, topk) at once, each as its own process.

python examples/train_all.py [RUNS_DIR]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ARCHITECTURES = ("standard", "gated", "topk")


def main() -> int:
    runs_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    script = Path(__file__).with_name("train_sae.py")
    trainers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--architecture",
                architecture,
                "--runs-dir",
                str(runs_dir),
            ]
        )
        for architecture in ARCHITECTURES
    ]
    return max(trainer.wait() for trainer in trainers)


if __name__ == "__main__":
    sys.exit(main())
