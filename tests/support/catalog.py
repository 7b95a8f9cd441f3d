"""A runs catalog of any size, filled with made-up but realistic rows: sweeps of 10 to 50 runs
that share model, hook and architecture and vary two or three config keys, a few runs alone,
several statuses and sources, and some hostile strings."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from lossreport.catalog import Catalog
from lossreport.report import pages

MODELS = ["gpt2-small", "tiny-stories-1L-21M", "pythia-70m", "gemma-2b", "<b>m&m</b>"]
ARCHITECTURES = ["standard", "gated", "topk", "jumprelu"]
STATUSES = ["completed"] * 8 + ["failed", "stalled"]
SOURCES = ["lossreport"] * 6 + ["tensorboard", "lightning", "hf-trainer", "mlflow"]
HOSTILE = '"><script>alert(1)</script>'
LOSSES = ("mse_loss", "l1_loss", "overall_loss")
BATCH = 5000
CURVE_POINTS = 40
SCALES = 16
VALUES: dict[str, list[Any]] = {
    "lr": [1e-4, 3e-4, 1e-3],
    "l1_coefficient": [1, 2, 5, 10],
    "d_sae": [4096, 16384],
    "optimizer.beta1": [0.0, 0.9],
}


def synthetic_entries(count: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """`count` (run key, render-marker entry) pairs, the same for the same seed."""
    rng = random.Random(seed)
    made = sweep = 0
    while made < count:
        size = 1 if rng.random() < 0.05 else rng.randint(10, 50)
        model = MODELS[sweep % len(MODELS)]
        hook = f"blocks.{sweep % 12}.hook_{'mlp_out' if sweep % 2 else 'resid_pre'}"
        architecture = ARCHITECTURES[sweep % len(ARCHITECTURES)]
        varied = rng.sample(
            ["lr", "l1_coefficient", "d_sae", "optimizer.beta1"], 3 if sweep % 3 else 2
        )
        for index in range(min(size, count - made)):
            yield (
                f"sweep-{sweep:05d}/run_{index:03d}%",
                _entry(rng, made, model, hook, architecture, varied, index),
            )
            made += 1
        sweep += 1


def _entry(
    rng: random.Random,
    made: int,
    model: str,
    hook: str,
    architecture: str,
    varied: list[str],
    index: int,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "d_in": 768,
        "lr": 3e-4,
        "l1_coefficient": 5,
        "d_sae": 16384,
        "optimizer": {"name": "adam", "beta1": 0.9},
        "note": HOSTILE if made % 97 == 0 else "plain",
    }
    for position, name in enumerate(varied):
        values = VALUES[name]
        value = values[(index // (position + 1)) % len(values)]
        if name == "optimizer.beta1":
            config["optimizer"]["beta1"] = value
        else:
            config[name] = value
    if index % 7 == 3:
        config["warmup"] = 100  # a key only some runs of a sweep have
    scale = rng.randrange(SCALES)
    steps = rng.choice([1000, 6000, 20000])
    losses = LOSSES[: 2 + made % 2]
    curves = {name: _curve(steps, scale, i) for i, name in enumerate(losses)}
    final = {name: points[-1][1] if made % 53 else None for name, points in curves.items()}
    minimum = {name: min(value for _, value in points) for name, points in curves.items()}
    day, second = divmod(made, 86400)
    return {
        "status": STATUSES[made % len(STATUSES)],
        "model": model,
        "hook": hook,
        "architecture": architecture,
        "steps": steps,
        "final": final,
        "minimum": minimum,
        "started_at": f"2026-{1 + day % 12:02d}-{1 + day % 28:02d}T{second // 3600:02d}:"
        f"{second // 60 % 60:02d}:{second % 60:02d}+00:00",
        "duration_seconds": rng.uniform(60, 36000) if made % 11 else None,
        "config": config,
        "problems": 1 if made % 101 == 0 else 0,
        "anomalies": 1 if made % 103 == 0 else 0,
        "alerts": [],
        "report": "loss_graphs/loss_report.html",
        "source": SOURCES[made % len(SOURCES)],
        "rendered_at": f"2026-11-{1 + day % 28:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:"
        f"{second % 60:02d}+00:00",
        "curves": curves,
    }


@cache
def _curve(steps: int, scale: int, offset: int) -> list[list[float]]:
    """An overview curve, as many points as the renderer keeps for the index (made once per
    shape: 100,000 runs share a few dozen)."""
    factor = 0.5 + scale / SCALES * 1.5
    return [
        [step, factor / (1 + step / 300) + 0.01 * offset]
        for step in range(0, steps, steps // CURVE_POINTS)
    ]


def truth(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """What the catalog should say of each run `fill_catalog` put in it: what tests check
    pages against, computed apart from the catalog."""
    return [
        {
            "run_id": key,
            **{name: entry[name] for name in ("model", "hook", "architecture", "status")},
            **{name: entry[name] for name in ("final", "minimum", "rendered_at")},
            "config": pages.flat_config(entry["config"]),
        }
        for key, entry in synthetic_entries(count, seed)
    ]


def fill_catalog(state_dir: Path, count: int, seed: int = 0) -> None:
    """A catalog in `state_dir` as a daemon would keep it, holding `count` synthetic runs."""
    catalog = Catalog.open(state_dir)
    try:
        batch = []
        for key, entry in synthetic_entries(count, seed):
            batch.append(pages.index_row(entry, key))
            if len(batch) == BATCH:
                catalog.put_many(batch)
                batch = []
        catalog.put_many(batch)
    finally:
        catalog.close()
