"""Train one small sparse autoencoder on synthetic activations and log its losses with lossreport.

The data are "features in superposition": many more sparse ground-truth features than
dimensions, each an (almost) orthogonal random direction, so a good SAE must learn to pull
them apart. Three architectures, each with the loss terms SAELens gives it:

    standard  mse_loss, l1_loss, overall_loss
    gated     mse_loss, l1_loss, auxiliary_reconstruction_loss, overall_loss
    topk      mse_loss, auxiliary_reconstruction_loss, overall_loss

    python examples/train_sae.py --architecture gated --runs-dir runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import lossreport

D_IN = 64
N_FEATURES = 512
D_SAE = 512
LEARNING_RATE = 3e-3


class SyntheticActivations:
    """Sparse combinations of fixed random feature directions, with a little noise."""

    def __init__(self, generator: torch.Generator, feature_probability: float = 0.01) -> None:
        directions = torch.randn(N_FEATURES, D_IN, generator=generator)
        self.directions = directions / directions.norm(dim=1, keepdim=True)
        self.probability = feature_probability
        self.generator = generator

    def batch(self, size: int) -> torch.Tensor:
        active = torch.rand(size, N_FEATURES, generator=self.generator) < self.probability
        magnitudes = torch.rand(size, N_FEATURES, generator=self.generator) * 2.0
        noise = 0.01 * torch.randn(size, D_IN, generator=self.generator)
        return (active * magnitudes) @ self.directions + noise


class SparseAutoencoder(nn.Module):
    def __init__(self, architecture: str, generator: torch.Generator) -> None:
        super().__init__()
        self.architecture = architecture
        decoder = torch.randn(D_SAE, D_IN, generator=generator)
        self.W_dec = nn.Parameter(decoder / decoder.norm(dim=1, keepdim=True))  # unit-norm rows
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = nn.Parameter(torch.zeros(D_SAE))
        self.b_dec = nn.Parameter(torch.zeros(D_IN))
        if architecture == "gated":
            self.r_mag = nn.Parameter(torch.zeros(D_SAE))
            self.b_mag = nn.Parameter(torch.zeros(D_SAE))
        self.k = 8
        self.steps_since_fired = torch.zeros(D_SAE)

    def losses(self, x: torch.Tensor, l1_coefficient: float) -> dict[str, torch.Tensor]:
        """Each architecture's loss terms; `overall_loss` is what the optimiser minimises."""
        centred = x - self.b_dec
        pre = centred @ self.W_enc + self.b_enc
        decoder_norms = self.W_dec.norm(dim=1)
        if self.architecture == "standard":
            features = torch.relu(pre)
            mse = _mse(features @ self.W_dec + self.b_dec, x)
            l1 = l1_coefficient * (features * decoder_norms).sum(-1).mean()
            return {"mse_loss": mse, "l1_loss": l1, "overall_loss": mse + l1}
        if self.architecture == "gated":
            gate = torch.relu(pre)
            magnitude = torch.relu(centred @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
            features = (pre > 0).to(x.dtype) * magnitude
            mse = _mse(features @ self.W_dec + self.b_dec, x)
            l1 = l1_coefficient * (gate * decoder_norms).sum(-1).mean()
            aux = _mse(gate @ self.W_dec.detach() + self.b_dec.detach(), x)
            return {
                "mse_loss": mse,
                "l1_loss": l1,
                "auxiliary_reconstruction_loss": aux,
                "overall_loss": mse + l1 + aux,
            }
        return self._topk_losses(x, pre)

    def _topk_losses(self, x: torch.Tensor, pre: torch.Tensor) -> dict[str, torch.Tensor]:
        values, indices = torch.relu(pre).topk(self.k, dim=-1)
        features = torch.zeros_like(pre).scatter(-1, indices, values)
        reconstruction = features @ self.W_dec + self.b_dec
        mse = _mse(reconstruction, x)
        fired = (features > 0).any(0)
        self.steps_since_fired = torch.where(fired, 0.0, self.steps_since_fired + 1)
        dead = self.steps_since_fired > 50
        aux = x.new_zeros(())
        if dead.any():  # AuxK: dead latents learn to explain what the live ones missed
            k_aux = min(2 * self.k, int(dead.sum()))
            dead_pre = torch.where(dead, torch.relu(pre), torch.zeros_like(pre))
            aux_values, aux_indices = dead_pre.topk(k_aux, dim=-1)
            aux_features = torch.zeros_like(pre).scatter(-1, aux_indices, aux_values)
            residual = (x - reconstruction).detach()
            aux = _mse(aux_features @ self.W_dec, residual) * min(int(dead.sum()) / k_aux, 1.0)
        return {"mse_loss": mse, "auxiliary_reconstruction_loss": aux, "overall_loss": mse + aux}


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).pow(2).sum(-1).mean()


def train(architecture: str, runs_dir: Path, steps: int, seed: int, run_id: str | None) -> Path:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = SyntheticActivations(generator)
    sae = SparseAutoencoder(architecture, generator)
    optimiser = torch.optim.Adam(sae.parameters(), lr=LEARNING_RATE)
    l1_coefficient = 5e-3
    run = lossreport.start_run(
        runs_dir,
        model="synthetic-superposition-64d",
        hook=f"sae.{architecture}",
        architecture=architecture,
        config={
            "d_in": D_IN,
            "d_sae": D_SAE,
            "l1_coefficient": l1_coefficient,
            "lr": LEARNING_RATE,
            "steps": steps,
            "seed": seed,
            "batch_size": 256,
        },
        run_id=run_id,
        flush_every=250,
    )
    with run:
        for step in range(steps):
            losses = sae.losses(data.batch(256), l1_coefficient)
            optimiser.zero_grad(set_to_none=True)
            losses["overall_loss"].backward()
            optimiser.step()
            run.log(step, **losses)  # 0-d tensors: no .item(), no GPU sync
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=["standard", "gated", "topk"], default="standard")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # three of these share two cores in the demo
    path = train(args.architecture, args.runs_dir, args.steps, args.seed, args.run_id)
    print(f"{args.architecture}: {path}")


if __name__ == "__main__":
    main()
