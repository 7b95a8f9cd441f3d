"""A runs catalog of any size, filled with made-up but realistic rows, for tests and benchmarks.

Runs come in sweeps of 10 to 50 that share model, hook and architecture and vary two or three
config keys (`lr`, `l1_coefficient`, `d_sae`, `optimizer.beta1`); one sweep in ten repeats one
config (nothing varies), one in twenty is a lone run; past 240 sweeps, later ones join the same
groups. Keys are `sweepNNNNN/run-MMM`, a few `sweepNNNNN/run_MMM%` (LIKE's wildcards as plain
characters). Several models (one HTML, one not ASCII, both rarer), hooks, architectures (some
runs have none), statuses and sources; a `<script>` and a backslash in some configs; some runs
without a duration, a step count or a final loss; each run with two or three overview curves of
60 points, as `report/render.py` keeps them for the index. And the ways a catalog file gets
damaged while in use (`damage_catalog`).
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from lossreport.catalog import Catalog
from lossreport.report import pages

MODELS = ["gpt2-small", "tiny-stories-1L-21M", "pythia-70m", "gemma-2b"]
HTML_MODEL, UNICODE_MODEL = "<b>m&m</b>", "Ωmega-7B"  # rarer than each of the others
ARCHITECTURES: list[str | None] = ["standard", "gated", "topk", "jumprelu", None]
STATUSES = ["completed"] * 7 + ["failed", "stalled", "unknown"]
SOURCES = ["lossreport"] * 6 + ["tensorboard", "lightning", "hf-trainer", "mlflow"]
HOSTILE = '"><script>alert(1)</script>'
LOSSES = ("mse_loss", "l1_loss", "overall_loss")
VARIED = ["lr", "l1_coefficient", "d_sae", "optimizer.beta1"]
BATCH = 5000  # rows per transaction in fill_catalog
CURVE_POINTS = 60  # render.OVERVIEW_POINTS
SCALES = 16
VALUES: dict[str, list[Any]] = {
    "lr": [1e-4, 3e-4, 1e-3],
    "l1_coefficient": [1, 2, 5, 10],
    "d_sae": [4096, 16384],
    "optimizer.beta1": [0.0, 0.9],
}


def synthetic_entries(count: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """`count` (run key, render-marker entry as `render.index_entry` makes it) pairs, the same
    for the same seed; every run rendered at a different second."""
    rng = random.Random(seed)
    made = sweep = 0
    while made < count:
        size = 1 if rng.random() < 0.05 else rng.randint(10, 50)
        # each of the first 240 sweeps a group of its own; later ones add to the same groups
        model = MODELS[sweep % 4]
        model = HTML_MODEL if sweep % 9 == 4 else UNICODE_MODEL if sweep % 13 == 6 else model
        architecture = ARCHITECTURES[sweep // 4 % 5]
        hook = f"blocks.{sweep // 20 % 12}.hook_{'mlp_out' if sweep // 2 % 2 else 'resid_pre'}"
        repeats = sweep % 10 == 9  # the same config again and again: nothing varies
        varied = [] if repeats else rng.sample(VARIED, 3 if sweep % 3 else 2)
        for index in range(min(size, count - made)):
            name = f"run_{index:03d}%" if index % 13 == 5 else f"run-{index:03d}"
            entry = _entry(rng, made, model, hook, architecture, varied, index)
            if not repeats and index % 7 == 3:
                entry["config"]["warmup"] = 100  # a key only some runs of a sweep have
            yield f"sweep{sweep:05d}/{name}", entry
            made += 1
        sweep += 1


def _entry(
    rng: random.Random,
    made: int,
    model: str,
    hook: str,
    architecture: str | None,
    varied: list[str],
    index: int,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "d_in": 768,
        "lr": 3e-4,
        "l1_coefficient": 5,
        "d_sae": 16384,
        "optimizer": {"name": "adam", "beta1": 0.9},
        "note": HOSTILE if made % 97 == 0 else "C:\\data\\50%_off" if made % 89 == 0 else "plain",
    }
    for position, name in enumerate(varied):
        values = VALUES[name]
        value = values[(index // (position + 1)) % len(values)]
        if name == "optimizer.beta1":
            config["optimizer"]["beta1"] = value
        else:
            config[name] = value
    scale = rng.randrange(SCALES)
    steps = rng.choice([1000, 6000, 20000])
    losses = LOSSES[: 2 + made % 2]
    curves = {name: _curve(steps, scale, i) for i, name in enumerate(losses)}
    final = {name: points[-1][1] if made % 53 else None for name, points in curves.items()}
    minimum = {name: min(value for _, value in points) for name, points in curves.items()}
    day, second = divmod(made, 86400)
    clock = f"T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00:00"
    started = rng.randrange(400 * 86400)  # not in the order of rendering
    started_day, started_second = divmod(started, 86400)
    return {
        "run_id": f"run-{index:03d}",
        "status": STATUSES[made % len(STATUSES)],
        "model": model,
        "hook": hook,
        "architecture": architecture,
        "steps": steps if made % 59 else None,
        "final": final,
        "minimum": minimum,
        "started_at": f"{2025 + started_day // 336}-{1 + started_day // 28 % 12:02d}"
        f"-{1 + started_day % 28:02d}T{started_second // 3600:02d}:00:00+00:00",
        "duration_seconds": round(rng.uniform(60, 36000), 3) if made % 11 else None,
        "config": config,
        "problems": 1 if made % 101 == 0 else 0,
        "anomalies": 1 if made % 103 == 0 else 0,
        "alerts": ["loss spike"] if made % 211 == 0 else [],
        "report": f"run-{index:03d}/loss_graphs/loss_report_{made}.html",
        "source": SOURCES[made // 3 % len(SOURCES)],
        # One a second from 2026-01-01 on: year, month, day and time all move.
        "rendered_at": f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}{clock}",
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
    """What the catalog should say of each run `fill_catalog` put in it, computed apart from
    the catalog: what tests check its answers against."""
    return [
        {
            "run_id": key,
            "status": entry["status"],
            "model": entry["model"],
            "hook": entry["hook"],
            "architecture": entry["architecture"] or "",
            "source": entry["source"],
            "steps": entry["steps"],
            "started_at": entry["started_at"],
            "duration": entry["duration_seconds"],
            "rendered_at": entry["rendered_at"],
            "final": entry["final"],
            "minimum": entry["minimum"],
            "config": pages.flat_config(entry["config"]),
        }
        for key, entry in synthetic_entries(count, seed)
    ]


def fill_catalog(state_dir: Path, count: int, seed: int = 0) -> None:
    """A catalog in `state_dir` as a daemon would keep it, holding `count` synthetic runs,
    written `BATCH` rows a transaction."""
    catalog = Catalog.open(state_dir)
    try:
        fill(catalog, count, seed)
    finally:
        catalog.close()


def fill(catalog: Catalog, count: int, seed: int = 0) -> None:
    """`count` synthetic runs put in `catalog` (of either kind), `BATCH` a transaction."""
    batch = []
    for key, entry in synthetic_entries(count, seed):
        batch.append(pages.index_row(entry, key))
        if len(batch) == BATCH:
            catalog.put_many(batch)
            batch = []
    catalog.put_many(batch)


# Statements that make a catalog of schema 5 one of schema 4, as an older daemon left it: what
# 4 lacked (store.STEPS[4]: the counts, the run in the config's index) dropped, and the
# index it had made again.
TO_SCHEMA_4 = [
    "DROP TABLE run_counts",
    "DROP TABLE setting_counts",
    "DROP INDEX config_setting",
    "CREATE INDEX config_setting ON config (setting)",
    "CREATE INDEX config_sweep ON config (sweep, setting)",
]


DAMAGES = ("overwritten", "truncated", "hot journal")
# A writer killed in the middle of a transaction big enough to spill to the file: it leaves
# a hot journal, which only a writer may roll back.
_KILLED_WRITER = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size = 1")
connection.execute("BEGIN")
connection.executemany(
    "INSERT INTO settings (name, value) VALUES (?, ?)",
    ((f"filler-{i}", "x" * 200) for i in range(5000)),
)
os._exit(0)
"""


def damage_catalog(path: Path, how: str) -> None:
    """Damage the catalog file at `path` in place, as happens to a file on a shared disk:
    its first bytes overwritten, cut to half its size, or a hot journal left beside it by a
    writer killed mid-transaction."""
    if how == "overwritten":
        with path.open("r+b") as handle:
            handle.write(b"\xff" * 4096)
    elif how == "truncated":
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    else:
        subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True, timeout=60)
        assert path.with_name(f"{path.name}-journal").exists()


# -- runs shaped as a real cluster's --------------------------------------------------------
REAL_MODELS = [
    "gpt2-small",
    "meta-llama/Llama-3.1-8B-Instruct",
    "google/gemma-2-9b-it-résumé-distilled",
    "EleutherAI/pythia-1.4b-deduped-ünïcode-Ωmega",
    "Qwen/Qwen2.5-7B-中文-instruct",
]
REAL_ARCHITECTURES = ["standard", "gated", "topk", "jumprelu"]
# A sweep as it ends: most runs done, some failed or stalled, a few still running.
REAL_STATUSES = ["completed"] * 14 + ["failed"] * 3 + ["stalled", "running", "unknown"]


def realistic_entries(count: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """`count` (run key, marker entry) pairs shaped as a real cluster's: each run id made by
    the id function `start_run` uses by default (about 65 characters, a random part), long
    and non-ASCII model names, six config keys, sweeps of 20 to 60 runs, statuses as a sweep
    ends, three overview curves of 60 points at 4 significant digits, as the renderer keeps
    them. Ids are random: the same seed gives the same rows under other names."""
    from lossreport.trainer.tracker import _agreed_run_id  # the id start_run makes

    rng = random.Random(seed)
    made = sweep = 0
    seen: set[str] = set()
    while made < count:
        model = REAL_MODELS[sweep % len(REAL_MODELS)]
        hook = f"blocks.{rng.randrange(32)}.hook_{rng.choice(['resid_post', 'mlp_out'])}"
        architecture = REAL_ARCHITECTURES[sweep // 5 % len(REAL_ARCHITECTURES)]
        for index in range(min(rng.randint(20, 60), count - made)):
            key = _agreed_run_id(model, hook)
            while key in seen:
                key = _agreed_run_id(model, hook)
            seen.add(key)
            yield key, _real_entry(rng, made, model, hook, architecture, index)
            made += 1
        sweep += 1


def _real_entry(
    rng: random.Random, made: int, model: str, hook: str, architecture: str, index: int
) -> dict[str, Any]:
    steps = rng.choice([30_000, 48_828, 122_070])
    bucket = steps // CURVE_POINTS
    start, floor = rng.uniform(0.5, 3.0), rng.uniform(0.005, 0.05)
    curves: dict[str, list[list[float]]] = {}
    for offset, name in enumerate(LOSSES):
        level = start + offset
        values = [level / (1 + point / 3) + floor + rng.gauss(0, floor / 20) for point in
                  range(CURVE_POINTS)]  # fmt: skip
        curves[name] = [[bucket * (point + 1) - 1, float(f"{value:.4g}")]
                        for point, value in enumerate(values)]  # fmt: skip
    day, second = divmod(made, 86400)
    status = REAL_STATUSES[rng.randrange(len(REAL_STATUSES))]
    return {
        "status": status,
        "model": model,
        "hook": hook,
        "architecture": architecture,
        "steps": steps,
        "final": {name: points[-1][1] for name, points in curves.items()},
        "minimum": {name: min(value for _, value in points) for name, points in curves.items()},
        "started_at": f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T00:00:00+00:00",
        "duration_seconds": round(rng.uniform(600, 86400), 3),
        "config": {
            "lr": rng.choice([1e-5, 3e-5, 1e-4, 3e-4]),
            "l1_coefficient": rng.choice([1, 2, 5, 10, 20]),
            "d_sae": rng.choice([16384, 32768, 65536]),
            "context_size": 1024,
            "seed": index,
            "train_batch_size_tokens": 4096,
        },
        "problems": 0,
        "anomalies": 1 if status == "failed" else 0,
        "alerts": ["loss spike at step 2000"] if status == "failed" else [],
        "report": f"loss_graphs/loss_report_{made}.html",
        "source": "lossreport",
        "rendered_at": f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"
        f"T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00:00",
        "curves": curves,
    }


def fill_realistic(catalog: Catalog, count: int, seed: int = 0) -> list[str]:
    """`count` realistic runs put in `catalog`, `BATCH` a transaction; their keys."""
    keys, batch = [], []
    for key, entry in realistic_entries(count, seed):
        keys.append(key)
        batch.append(pages.index_row(entry, key))
        if len(batch) == BATCH:
            catalog.put_many(batch)
            batch = []
    catalog.put_many(batch)
    return keys
