"""SAELens training with lossreport instead of (or beside) wandb, which many clusters cannot reach.

    from lossreport.integrations.sae_lens import LossReportSAETrainer

    trainer = LossReportSAETrainer(cfg, sae, data_provider, runs_dir="runs")  # was SAETrainer
    sae = trainer.fit()                     # the run is completed, or failed with the error,
                                            # and its report rendered (report_on_close)
    trainer.get_loss_history()              # the feature document's API
    trainer.disable_loss_tracking()         # enable_loss_tracking(), clear_loss_history()

Every training step logs `overall_loss` (the loss SAELens calls backward on) and each entry of
SAELens's `TrainStepOutput.losses` (`mse_loss`, `l1_loss`, `auxiliary_reconstruction_loss`,
`l0_loss`, ... whatever the architecture emits) as the 0-d tensors they are: no `.item()`, so
no GPU sync per step. The run directory is named by the SAE's model and hook.

`LossReportSAETrainingRunner` does the same for SAELens's language-model training runner.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

try:
    from sae_lens.llm_sae_training_runner import LanguageModelSAETrainingRunner
    from sae_lens.saes.sae import TrainingSAE, TrainStepOutput
    from sae_lens.training.sae_trainer import SAETrainer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lossreport.integrations.sae_lens needs SAELens: pip install 'lossreport[sae-lens]'"
    ) from exc

from lossreport.trainer.tracker import Run, start_run

OVERALL_LOSS = "overall_loss"
# start_run's keywords that the wrappers pass through (`run_id`, `report_on_close`, ...)
START_RUN_KEYWORDS = frozenset(inspect.signature(start_run).parameters) - {
    "runs_dir",
    "model",
    "hook",
    "architecture",
    "config",
}


def start_sae_run(
    sae: TrainingSAE[Any],
    runs_dir: str | Path,
    *,
    model_name: str | None = None,
    hook_name: str | None = None,
    **start: Any,
) -> Run:
    """A run for `sae`: model and hook from its metadata unless given; its config recorded."""
    metadata = sae.cfg.metadata
    return start_run(
        runs_dir,
        model=model_name or metadata.model_name or "unknown-model",
        hook=hook_name or metadata.hook_name or "unknown-hook",
        architecture=sae.cfg.architecture(),
        config=_json_safe(sae.cfg.to_dict()),
        **start,
    )


def log_step(run: Run, step: int, output: TrainStepOutput) -> None:
    """One training step's losses, as tensors (the flusher copies them off the device)."""
    run.log(step, **{OVERALL_LOSS: output.loss}, **output.losses)


class _LossTracking:
    """The feature document's trainer methods, on the lossreport run."""

    loss_run: Run

    def get_loss_history(self) -> Any:
        """pandas DataFrame: `step`, then one column per loss."""
        return self.loss_run.get_loss_history()

    def disable_loss_tracking(self) -> None:
        self.loss_run.disable_loss_tracking()

    def enable_loss_tracking(self) -> None:
        self.loss_run.enable_loss_tracking()

    def clear_loss_history(self) -> None:
        """Start the history afresh; what was logged is set aside on disk, not deleted."""
        self.loss_run.clear_loss_history()


class LossReportSAETrainer(_LossTracking, SAETrainer[Any, Any]):
    """SAELens's `SAETrainer` that also records every step's losses with lossreport.

    Takes SAETrainer's arguments, plus where the run goes (`runs_dir`), optional `model_name`
    and `hook_name` (default: the SAE's metadata), and any `lossreport.start_run` keyword
    (`run_id`, `flush_every`, `flush_secs`, `report_on_close`, ...). As with `start_run`,
    `fit()` ends by rendering the report into `RUN/loss_graphs/` and printing its summary,
    unless a `lossreport watch` daemon follows `runs_dir` (`report_on_close="auto"`).
    """

    def __init__(
        self,
        cfg: Any,
        sae: TrainingSAE[Any],
        data_provider: Any,
        evaluator: Any = None,
        save_checkpoint_fn: Any = None,
        *,
        runs_dir: str | Path = "runs",
        model_name: str | None = None,
        hook_name: str | None = None,
        **start: Any,
    ) -> None:
        super().__init__(
            cfg, sae, data_provider, evaluator=evaluator, save_checkpoint_fn=save_checkpoint_fn
        )
        self.loss_run = start_sae_run(
            sae, runs_dir, model_name=model_name, hook_name=hook_name, **start
        )

    def step(self, batch: Any) -> TrainStepOutput:
        output = super().step(batch)
        log_step(self.loss_run, self.n_training_steps, output)
        return output

    def fit(self) -> Any:
        with self.loss_run:  # completed, or failed with the exception that ended training
            return super().fit()


class LossReportSAETrainingRunner(_LossTracking, LanguageModelSAETrainingRunner):
    """SAELens's language-model training runner, recording every step's losses with lossreport.

    Takes the runner's arguments plus `runs_dir` and `lossreport.start_run` keywords
    (`report_on_close` among them: `run()` ends with the report, as `fit()` does). The run
    is named by the runner config's model and hook. Offline, pass `override_model` (a
    HookedTransformer built from a config) and `override_dataset` (pre-tokenized).
    """

    def __init__(self, cfg: Any, *args: Any, runs_dir: str | Path = "runs", **kwargs: Any) -> None:
        start = {k: kwargs.pop(k) for k in START_RUN_KEYWORDS & kwargs.keys()}
        super().__init__(cfg, *args, **kwargs)
        self.loss_run = start_sae_run(
            self.sae, runs_dir, model_name=cfg.model_name, hook_name=cfg.hook_name, **start
        )

    def run_trainer_with_interruption_handling(self, trainer: SAETrainer[Any, Any]) -> Any:
        """The runner's one seam that sees the trainer it built: record its steps."""
        train_step = trainer.step

        def step(batch: Any) -> TrainStepOutput:
            output = train_step(batch)
            log_step(self.loss_run, trainer.n_training_steps, output)
            return output

        trainer.step = step
        with self.loss_run:
            return super().run_trainer_with_interruption_handling(trainer)


def _json_safe(config: dict[str, Any]) -> dict[str, Any]:
    """The SAE config's JSON-representable entries (dtypes, devices and such become text)."""
    return dict(json.loads(json.dumps(config, default=str)))
