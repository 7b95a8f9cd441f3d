"""A Hugging Face Trainer output folder with a long `trainer_state.json`, written directly in
the Trainer's shape (a log entry a step: loss, grad_norm, learning_rate, epoch) but in
seconds: for the serve's memory with runs whose one JSON file is tens of megabytes."""

from __future__ import annotations

import json
import math
from pathlib import Path

MAX_STEPS_PER_EPOCH = 10_000


def write_trainer_output(folder: Path, steps: int) -> Path:
    """`folder` as `Trainer.save_state()` leaves it after `steps` steps; about 130 bytes of
    JSON a step (a million steps: some 100 MB)."""
    folder.mkdir(parents=True, exist_ok=True)
    history = [
        {
            "epoch": round(step / MAX_STEPS_PER_EPOCH, 4),
            "grad_norm": 0.5 + 0.1 * math.sin(step / 50),
            "learning_rate": 3e-4 * (1 - step / steps),
            "loss": 2.0 / (1 + step / 5000) + 0.01 * math.sin(step * 0.37),
            "step": step,
        }
        for step in range(1, steps + 1)
    ]
    state = {
        "best_metric": None,
        "epoch": steps / MAX_STEPS_PER_EPOCH,
        "global_step": steps,
        "log_history": history,
        "logging_steps": 1,
        "max_steps": steps,
        "train_batch_size": 8,
    }
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
    config = {"_name_or_path": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 12}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
