"""W&B runs written by the real wandb package, offline, in a child process (`python -m
tests.support.wandb_writer PLAN ...`), and what each plan logs, for the tests to compare.

Plans:
- `scalars ID`: a finished run: three SAE losses and a learning rate at steps 0..199 (a NaN
  at NAN_STEP), a nested dictionary, an eval loss on its own step metric (define_metric), a
  histogram (media), a summary value;
- `part ID FIRST LAST`: steps FIRST..LAST of `overall_loss`, with resume="allow" (a second
  process with the same ID resumes the run);
- `crash ID`: steps 0..29, then waits to be killed (the test sends SIGKILL; W&B commits a
  step's row when the next step is logged, so step 29 dies with the process);
- `sae_lens ID OUT`: a real SAELens SAETrainer (LoggingConfig(log_to_wandb=True), a log every
  step) on synthetic activations; the numbers it gave wandb.log written to OUT as JSON;
- `live ID GO`: steps 0..4, then waits for the file GO, logs a NaN (and step 6, which commits
  it), waits for GO to go away, then finishes; it writes `GO.nan` with the time the NaN's log
  call began;
- `steps ID COUNT`: a finished run of steps 0..COUNT-1, each the four losses of `losses`
  (what the benchmarks read: some 600 bytes of log a step).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

Logged = dict[str, dict[int, float]]
NAN_STEP = 20
STEPS = 200  # some 130 KiB of log: four 32 KiB blocks
PROJECT = "sae-résidu"
NAME = "gpt2 résidu L8 — 16k"
CONFIG = {"model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_pre", "d_sae": 16384}


def wandb_env(root: Path) -> dict[str, str]:
    """Offline, silent, everything under `root`: never the network, never $HOME."""
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root),
        "WANDB_CACHE_DIR": str(root / ".wandb-cache"),
        "WANDB_CONFIG_DIR": str(root / ".wandb-config"),
        "WANDB_DATA_DIR": str(root / ".wandb-data"),
        "WANDB_ARTIFACT_DIR": str(root / ".wandb-artifacts"),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
        "WANDB_CONSOLE": "off",
        # wandb-core writes its log in 32 KiB blocks and flushes a partial one every 15 s by
        # default: sooner here, so a test waits less for what was logged.
        "WANDB_X_TRANSACTION_LOG_FLUSH_INTERVAL": "0.5",
        "HOME": str(root / ".home"),
    }


def wandb_run(root: Path, run_id: str, first: int, last: int) -> tuple[Path, Logged]:
    """A finished W&B run under `root/wandb/` (plan `part`), its folder and what it logged."""
    import importlib.util
    import subprocess

    from tests.support.optional import missing

    if importlib.util.find_spec("wandb") is None:
        missing("wandb", "pip install -e '.[wandb]'")

    subprocess.run(
        [sys.executable, "-m", "tests.support.wandb_writer", "part", run_id, str(first), str(last)],
        cwd=Path(__file__).parents[2],
        env=wandb_env(root),
        check=True,
        capture_output=True,
        timeout=120,
    )
    (run_dir,) = (root / "wandb").glob(f"offline-run-*-{run_id}")
    return run_dir, part_logged(first, last)


def losses(step: int) -> dict[str, float]:
    return {
        "losses/overall_loss": 3.0 / (step + 1) if step != NAN_STEP else math.nan,
        "losses/mse_loss": 2.0 / (step + 1),
        "losses/l1_loss": 1.0 / (step + 2),
        "details/current_learning_rate": 1e-3 * min(1.0, (step + 1) / 10),
    }


def scalars_logged() -> Logged:
    logged: Logged = {}
    for step in range(STEPS):
        for name, value in losses(step).items():
            logged.setdefault(name, {})[step] = value
        logged.setdefault("sparsity.dead_features", {})[step] = float(step % 7)
        if step % 10 == 9:
            logged.setdefault("eval/loss", {})[step // 10] = 5.0 / (step + 1)
            logged.setdefault("eval/step", {})[step] = float(step // 10)
    return logged


def part_logged(first: int, last: int) -> Logged:
    return {"overall_loss": {step: 10.0 / (step + 1) for step in range(first, last + 1)}}


def _init(wandb: Any, run_id: str, **more: Any) -> Any:
    return wandb.init(project=PROJECT, name=NAME, id=run_id, config=CONFIG, **more)


def main(plan: str, run_id: str, *args: str) -> None:
    import wandb

    if plan == "scalars":
        run = _init(wandb, run_id)
        run.define_metric("eval/step")
        run.define_metric("eval/loss", step_metric="eval/step")
        for step in range(STEPS):
            values: dict[str, Any] = {**losses(step), "sparsity": {"dead_features": step % 7}}
            if step % 10 == 9:
                values |= {"eval/step": step // 10, "eval/loss": 5.0 / (step + 1)}
            if step == 0:
                values["weights"] = wandb.Histogram([1.0, 2.0, 2.0, 3.0])
            run.log(values, step=step)
        run.summary["best_mse"] = 0.04
        run.finish()
    elif plan == "part":
        first, last = int(args[0]), int(args[1])
        run = _init(wandb, run_id, resume="allow")
        for step, value in part_logged(first, last)["overall_loss"].items():
            run.log({"overall_loss": value}, step=step)
        run.finish()
    elif plan == "crash":
        run = _init(wandb, run_id)
        for step in range(30):
            run.log({"overall_loss": 10.0 / (step + 1)}, step=step)
        print("logged", flush=True)
        time.sleep(600)
    elif plan == "sae_lens":
        _train_sae_lens(wandb, run_id, Path(args[0]))
    elif plan == "live":
        go = Path(args[0])
        run = _init(wandb, run_id)
        for step in range(5):
            run.log({"overall_loss": 10.0 / (step + 1)}, step=step)
        while not go.exists():
            time.sleep(0.01)
        logged_at = time.time()
        run.log({"overall_loss": math.nan}, step=5)
        run.log({"overall_loss": 1.0}, step=6)  # W&B commits step 5's row now
        go.with_suffix(".nan").write_text(repr(logged_at))
        while go.exists():
            time.sleep(0.01)
        run.finish()
    elif plan == "steps":
        run = _init(wandb, run_id)
        for step in range(int(args[0])):
            run.log(losses(step), step=step)
        run.finish()
    else:
        raise SystemExit(f"unknown plan {plan!r}")


def _train_sae_lens(wandb: Any, run_id: str, out: Path) -> None:
    """A tiny StandardTrainingSAE, as tests/integrations/test_sae_lens.py trains one, with
    SAELens's own W&B logging; `out` gets {step: {name: number}} as SAELens logged them."""
    import torch
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    logged: dict[int, dict[str, float]] = {}

    class Recording(SAETrainer):  # type: ignore[misc]
        def build_train_step_log_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            values: dict[str, Any] = super().build_train_step_log_dict(*args, **kwargs)
            logged[self.n_training_steps] = {
                name: float(value)
                for name, value in values.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            }
            return values

    def activations() -> Any:
        generator = torch.Generator().manual_seed(0)
        directions = torch.nn.functional.normalize(torch.randn(32, 16, generator=generator))
        while True:
            active = torch.rand(128, 32, generator=generator) < 0.06
            yield (active * torch.rand(128, 32, generator=generator)) @ directions

    logging = LoggingConfig(log_to_wandb=True, wandb_log_frequency=1, eval_every_n_wandb_logs=10**6)
    config = SAETrainerConfig(
        total_training_samples=128 * 60,
        train_batch_size_samples=128,
        lr=1e-3,
        lr_end=1e-4,
        logger=logging,
    )
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=16, d_sae=64, l1_coefficient=1.0))
    wandb.init(project="sae_lens_training", id=run_id, config={**CONFIG, "d_sae": 64})
    Recording(config, sae, activations()).fit()
    wandb.finish()
    out.write_text(json.dumps(logged))


if __name__ == "__main__":
    main(*sys.argv[1:])
