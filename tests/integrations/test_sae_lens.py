"""Real SAELens SAEs trained on synthetic activations, their losses recorded by lossreport."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.optional import missing

try:
    import torch
    from sae_lens.config import LanguageModelSAERunnerConfig, LoggingConfig, SAETrainerConfig
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
except ImportError:
    missing("SAELens", "pip install 'lossreport[sae-lens]'")

from lossreport import runformat
from lossreport.integrations.sae_lens import LossReportSAETrainer, LossReportSAETrainingRunner
from lossreport.report.render import render_run
from lossreport.trainer.closing_report import ENVIRONMENT_VARIABLE
from tests.support.procs import ROOT

D_IN, D_SAE, N_FEATURES, BATCH, STEPS = 16, 64, 32, 128, 150
ARCHITECTURES: dict[str, tuple[Any, Any, dict[str, Any], list[str]]] = {
    "standard": (
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        {"l1_coefficient": 1.0},
        ["overall_loss", "mse_loss", "l1_loss"],
    ),
    "gated": (
        GatedTrainingSAE,
        GatedTrainingSAEConfig,
        {"l1_coefficient": 1.0},
        ["overall_loss", "mse_loss", "l1_loss", "auxiliary_reconstruction_loss"],
    ),
    "topk": (
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
        {"k": 4},
        ["overall_loss", "mse_loss", "auxiliary_reconstruction_loss"],
    ),
    "jumprelu": (
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        {"l0_coefficient": 1.0},
        ["overall_loss", "mse_loss", "l0_loss"],
    ),
}


def superposition_activations(seed: int = 0) -> Iterator[torch.Tensor]:
    """Sparse non-negative features in superposition: 32 directions in a 16-dim space."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(N_FEATURES, D_IN, generator=generator))
    while True:
        active = torch.rand(BATCH, N_FEATURES, generator=generator) < 0.06
        yield (active * torch.rand(BATCH, N_FEATURES, generator=generator)) @ directions


class RecordingTrainer(LossReportSAETrainer):
    """Keeps, beside lossreport, what SAELens's own TrainStepOutput said at each step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, float]] = []

    def step(self, batch: torch.Tensor) -> Any:
        output = super().step(batch)
        losses = {name: float(value.detach()) for name, value in output.losses.items()}
        self.seen.append({"overall_loss": float(output.loss.detach()), **losses})
        return output


def _trainer_config() -> SAETrainerConfig:
    return SAETrainerConfig(
        total_training_samples=BATCH * STEPS,
        train_batch_size_samples=BATCH,
        lr=1e-3,
        lr_end=1e-4,
        logger=LoggingConfig(log_to_wandb=False),
    )


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_step_of_a_real_sae_lens_trainer_reaches_the_report(
    architecture: str, runs_dir: Path
) -> None:
    sae_class, config_class, options, expected_columns = ARCHITECTURES[architecture]
    sae = sae_class(config_class(d_in=D_IN, d_sae=D_SAE, **options))
    sae.cfg.metadata.model_name = "synthetic-superposition"
    sae.cfg.metadata.hook_name = "blocks.0.hook_mlp_out"
    trainer = RecordingTrainer(
        _trainer_config(), sae, superposition_activations(), runs_dir=runs_dir, flush_every=40
    )
    trainer.fit()

    run_dir = trainer.loss_run.path
    assert run_dir.name.startswith("synthetic-superposition_blocks.0.hook_mlp_out_")
    record = runformat.read_run_file(run_dir)
    assert (record.status, record.architecture) == ("completed", architecture)
    history = trainer.get_loss_history()
    assert list(history.columns) == ["step", *expected_columns]
    assert len(trainer.seen) == STEPS == len(history)

    result = render_run(run_dir)
    with result.csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", *expected_columns]
    for step, (row, seen) in enumerate(zip(rows, trainer.seen, strict=True)):
        assert int(row["step"]) == step
        assert {name: float(row[name]) for name in expected_columns} == seen
    assert all(math.isfinite(v) for v in trainer.seen[-1].values())
    mse = result.stats["losses"]["mse_loss"]
    assert mse["final"] < mse["initial"]  # it trained


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_fit_ends_with_the_report_and_its_console_summary_by_default(
    architecture: str,
    runs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(ENVIRONMENT_VARIABLE)  # as a user has it: no daemon, no setting
    sae_class, config_class, options, expected_columns = ARCHITECTURES[architecture]
    sae = sae_class(config_class(d_in=D_IN, d_sae=D_SAE, **options))
    trainer = LossReportSAETrainer(
        _trainer_config(), sae, superposition_activations(), runs_dir=runs_dir,
        model_name="synthetic-superposition", hook_name="blocks.0.hook_mlp_out",
    )  # fmt: skip
    trainer.fit()

    graphs = trainer.loss_run.path / runformat.GRAPHS_DIR
    charts = {p.name.split("_synthetic")[0] for p in graphs.glob("loss_curves_*.png")}
    assert charts == {f"loss_curves_{name}" for name in [*expected_columns, "combined"]}
    (csv_path,) = graphs.glob("loss_history_*.csv")
    with csv_path.open() as handle:
        assert len(list(csv.DictReader(handle))) == STEPS
    out = capsys.readouterr().out
    assert f"Generated {len(charts)} loss graph files:" in out
    assert f"Saved loss history CSV to: {csv_path}" in out
    assert "Loss Training Summary:\n  Model: synthetic-superposition\n" in out
    assert f"  Total Steps: {STEPS}\n  overall_loss:\n" in out


def test_clear_loss_history_on_the_trainer_starts_the_history_afresh(runs_dir: Path) -> None:
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))
    trainer = LossReportSAETrainer(
        _trainer_config(), sae, superposition_activations(), runs_dir=runs_dir,
        model_name="m", hook_name="h",
    )  # fmt: skip
    trainer.step(next(superposition_activations()))
    trainer.clear_loss_history()
    assert trainer.get_loss_history().empty


def test_disable_loss_tracking_pauses_recording(runs_dir: Path) -> None:
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))

    def save_checkpoint(checkpoint_path: object) -> None:
        """Not called: this config saves no checkpoints."""

    trainer = LossReportSAETrainer(
        _trainer_config(), sae, superposition_activations(), evaluator=None,
        save_checkpoint_fn=save_checkpoint, runs_dir=runs_dir, model_name="m", hook_name="h",
    )  # fmt: skip
    trainer.disable_loss_tracking()
    trainer.fit()
    assert trainer.get_loss_history().empty
    assert trainer.save_checkpoint_fn is save_checkpoint  # SAELens's keywords reach SAETrainer
    assert runformat.read_run_file(trainer.loss_run.path).status == "completed"


def test_a_training_error_leaves_the_run_failed_with_its_reason(runs_dir: Path) -> None:
    def failing() -> Iterator[torch.Tensor]:
        batches = superposition_activations()
        for _ in range(30):
            yield next(batches)
        raise RuntimeError("CUDA out of memory (simulated by the data provider)")

    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))
    trainer = LossReportSAETrainer(
        _trainer_config(), sae, failing(), runs_dir=runs_dir, model_name="m", hook_name="h"
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.fit()
    record = runformat.read_run_file(trainer.loss_run.path)
    assert record.status == "failed" and "out of memory" in (record.error or "")
    assert len(trainer.get_loss_history()) == 30


def test_the_language_model_runner_trains_offline_with_a_local_model_and_dataset(
    runs_dir: Path,
) -> None:
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(
        HookedTransformerConfig(
            n_layers=1, d_model=16, n_ctx=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=50,
            act_fn="relu",
        )
    )  # fmt: skip
    tokens = torch.randint(0, 50, (400, 16), generator=torch.Generator().manual_seed(0))
    config = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=16, d_sae=64, l1_coefficient=1.0),
        model_name="tiny-random-1L",
        hook_name="blocks.0.hook_mlp_out",
        dataset_path="local/synthetic-tokens",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=16,
        training_tokens=16 * 64 * 20,
        train_batch_size_tokens=256,
        store_batch_size_prompts=8,
        n_batches_in_buffer=16,
        n_batches_for_norm_estimate=2,
        lr_end=1e-5,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
    )
    runner = LossReportSAETrainingRunner(
        config,
        override_model=model,
        override_dataset=Dataset.from_dict({"input_ids": tokens.tolist()}),
        runs_dir=runs_dir,
        report_on_close=True,  # a start_run keyword: it reaches the run, not SAELens
    )
    runner.run()
    run_dir = runner.loss_run.path
    assert run_dir.name.startswith("tiny-random-1L_blocks.0.hook_mlp_out_")
    assert runformat.read_run_file(run_dir).status == "completed"
    history = runner.get_loss_history()
    assert list(history.columns) == ["step", "overall_loss", "mse_loss", "l1_loss"]
    assert len(history) == 80
    assert list((run_dir / runformat.GRAPHS_DIR).glob("loss_report_*.html"))  # run() rendered


def test_without_sae_lens_the_package_imports_and_the_integration_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['sae_lens'] = None\n"  # what Python does for an absent package
        "import lossreport\n"
        "try:\n"
        "    import lossreport.integrations.sae_lens\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'lossreport[sae-lens]'" in result.stdout


def test_the_example_script_trains_and_records_a_run(runs_dir: Path) -> None:
    script = ROOT / "examples" / "train_sae_lens.py"
    arguments = ["--architecture", "gated", "--runs-dir", str(runs_dir), "--steps", "200"]
    result = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs_dir.iterdir()
    assert str(run_dir) in result.stdout
    assert runformat.read_losses(run_dir).loss_names == [
        "overall_loss",
        "mse_loss",
        "l1_loss",
        "auxiliary_reconstruction_loss",
    ]
