"""Train a real SAELens SAE on synthetic activations, its losses recorded by lossreport.

    pip install 'lossreport[sae-lens]'
    python examples/train_sae_lens.py --architecture gated --runs-dir runs
    lossreport render runs/<the printed run>      # or leave `lossreport watch runs` running

The only change from plain SAELens is the trainer class: `LossReportSAETrainer` instead of
`SAETrainer` (with `runs_dir=`). No model or dataset is downloaded: the activations are sparse
features in superposition, 64 directions in a 32-dimensional space.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

from lossreport.integrations.sae_lens import LossReportSAETrainer

D_IN, N_FEATURES, D_SAE, BATCH = 32, 64, 128, 256
SAES: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "standard": (StandardTrainingSAE, StandardTrainingSAEConfig, {"l1_coefficient": 2.0}),
    "gated": (GatedTrainingSAE, GatedTrainingSAEConfig, {"l1_coefficient": 2.0}),
    "topk": (TopKTrainingSAE, TopKTrainingSAEConfig, {"k": 8}),
    "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, {"l0_coefficient": 0.5}),
}


def activations(seed: int = 0) -> Iterator[torch.Tensor]:
    """Batches of sparse, non-negative features seen through a random overcomplete basis."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(N_FEATURES, D_IN, generator=generator))
    while True:
        active = torch.rand(BATCH, N_FEATURES, generator=generator) < 0.05
        yield (active * torch.rand(BATCH, N_FEATURES, generator=generator)) @ directions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=list(SAES), default="standard")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()

    sae_class, config_class, options = SAES[args.architecture]
    sae = sae_class(config_class(d_in=D_IN, d_sae=D_SAE, **options))
    sae.cfg.metadata.model_name = "synthetic-superposition"
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    config = SAETrainerConfig(
        total_training_samples=BATCH * args.steps,
        train_batch_size_samples=BATCH,
        lr=1e-3,
        lr_end=1e-4,
        logger=LoggingConfig(log_to_wandb=False),  # set True (after wandb.init) for both
    )
    trainer = LossReportSAETrainer(config, sae, activations(), runs_dir=args.runs_dir)
    trainer.fit()
    final = trainer.get_loss_history().iloc[-1]
    print(f"{trainer.loss_run.path}: final mse_loss {final['mse_loss']:.4f}")


if __name__ == "__main__":
    main()
