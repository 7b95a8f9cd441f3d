"""The soak's hostile runs (benchmarks/soak.py): runs that once took the daemon down, or all of
its memory, planted beside the trainers' runs. Each must end with a whole report that says
what it left out, while every other run is reported as usual.

- long names: a 100,000-character model name, a 20,000-character hook and config entry,
  non-ASCII (it once took a worker to 39 GB and broke the pool);
- a compressed shard: 40,000,000 constant rows in a few hundred KB of zstd, beside real
  shards (it once took a render to 2.5 GB);
- many series: 300 per-feature losses (once 304 files and 150 MB of report);
- a planted marker: a render marker of over 4 MiB, written by the run's owner before any
  render (it fed the runs index megabytes of curves).

Each kind is made with lossreport's own trainer API where a trainer could make it, and checked
by `check`, which says what is wrong with the run's report or None.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lossreport
from lossreport import runformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's bombs
from tests.support.bombs import write_constant_shard

STEPS = 400
BOMB_ROWS = 40_000_000
FEATURES = 300
LONG_MODEL = ("sae-autoencoder/gpt2-small-résumé-日本語-" * 4000)[:100_000]
LONG_HOOK = ("blocks.8.hook_resid_pre·" * 1000)[:20_000]
PLANTED_MARKER_BYTES = 5 * 2**20
MAX_PNG_BYTES = 4 * 2**20  # a 300 DPI chart of ours is a few hundred KB
MAX_PAGE_BYTES = 8 * 2**20
MAX_MARKER_BYTES = 2**20  # what the daemon writes: an index row and small curves


@dataclass
class Hostile:
    kind: str
    run_dir: Path
    check: Callable[[Path], str | None]


def plant(runs_dir: Path) -> list[Hostile]:
    """Every hostile run, finished, in `runs_dir`."""
    return [_long_names(runs_dir), _bomb(runs_dir), _many_series(runs_dir), _marker(runs_dir)]


def _sae_losses(step: int) -> dict[str, float]:
    """A healthy SAE's losses: MSE decays, the L1 term rises with its coefficient's warm-up."""
    mse = 0.05 + 0.9 * math.exp(-step / 80)
    l1 = 0.2 * min(1.0, step / 150) * (1 + 0.3 * math.exp(-step / 200))
    return {"mse_loss": mse, "l1_loss": l1, "overall_loss": mse + l1}


def _train(runs_dir: Path, model: str, hook: str, **config: str) -> Path:
    with lossreport.start_run(
        runs_dir, model=model, hook=hook, config=config, report_on_close=False
    ) as run:
        for step in range(STEPS):
            run.log(step, **_sae_losses(step))
    return runs_dir / run.run_id


def _long_names(runs_dir: Path) -> Hostile:
    long_config = {"l1_coefficient_é" * 1000: "稀疏" * 10_000}
    run_dir = _train(runs_dir, LONG_MODEL, LONG_HOOK, **long_config)

    def check(run_dir: Path) -> str | None:
        summary = _summary(run_dir)
        if summary["run"]["model"] != LONG_MODEL or summary["run"]["hook"] != LONG_HOOK:
            return "the summary does not keep the names whole"
        return _sizes(run_dir)

    return Hostile("long names (100,000 characters)", run_dir, check)


def _bomb(runs_dir: Path) -> Hostile:
    run_dir = _train(runs_dir, "gpt2-small", "blocks.8.hook_resid_pre")
    losses = run_dir / runformat.LOSSES_DIR
    seq = 1 + max(int(p.name.split("-")[1].split(".")[0]) for p in losses.glob("part-*.parquet"))
    bomb = losses / runformat.shard_name(seq)
    write_constant_shard(bomb, BOMB_ROWS, step=STEPS)

    def check(run_dir: Path) -> str | None:
        summary = _summary(run_dir)
        if not any(bomb.name in problem for problem in summary["skipped"]):
            return f"{bomb.name} ({BOMB_ROWS:,} rows) is not named as skipped"
        if summary["losses"]["mse_loss"]["count"] != STEPS:
            return "the real shards' rows are not all in the report"
        return _sizes(run_dir)

    return Hostile("compressed shard (40M rows, a few hundred KB)", run_dir, check)


def _many_series(runs_dir: Path) -> Hostile:
    names = [f"feature_{index:03d}_l0" for index in range(FEATURES)]
    with lossreport.start_run(
        runs_dir, model="gpt2-small", hook="blocks.4.hook_mlp_out", report_on_close=False
    ) as run:
        for step in range(STEPS // 2):
            run.log(step, **_sae_losses(step), **{name: step % 7 / 7 for name in names})
    run_dir = runs_dir / run.run_id

    def check(run_dir: Path) -> str | None:
        graphs = run_dir / runformat.GRAPHS_DIR
        (csv_file,) = graphs.glob("loss_history_*.csv")
        with csv_file.open() as handle:
            header = handle.readline().strip().split(",")
        if not set(names) <= set(header):
            return "the CSV does not hold every series"
        return _sizes(run_dir)

    return Hostile(f"many series ({FEATURES} losses)", run_dir, check)


def _marker(runs_dir: Path) -> Hostile:
    run_dir = _train(runs_dir, "pythia-70m-deduped", "blocks.3.hook_resid_post")
    graphs = run_dir / runformat.GRAPHS_DIR
    graphs.mkdir()
    points = [[step, 0.5] for step in range(PLANTED_MARKER_BYTES // 12)]
    planted = {"format": "lossreport.rendered/1", "entry": {"curves": {"mse_loss": points}}}
    (graphs / runformat.MARKER).write_text(json.dumps(planted))

    def check(run_dir: Path) -> str | None:
        marker = run_dir / runformat.GRAPHS_DIR / runformat.MARKER
        if marker.stat().st_size > MAX_MARKER_BYTES:
            return f"the planted marker ({marker.stat().st_size:,} bytes) was not replaced"
        return _sizes(run_dir)

    return Hostile("a planted 5 MiB render marker", run_dir, check)


def _summary(run_dir: Path) -> dict:  # type: ignore[type-arg]
    (summary,) = (run_dir / runformat.GRAPHS_DIR).glob("loss_summary_*.json")
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


def _sizes(run_dir: Path) -> str | None:
    """The report's files within what a person's browser and mail can take."""
    graphs = run_dir / runformat.GRAPHS_DIR
    for png in graphs.glob("*.png"):
        if png.stat().st_size > MAX_PNG_BYTES:
            return f"{png.name} is {png.stat().st_size:,} bytes"
    (page,) = graphs.glob("loss_report_*.html")
    if page.stat().st_size > MAX_PAGE_BYTES:
        return f"{page.name} is {page.stat().st_size:,} bytes"
    if not page.read_text().rstrip().endswith("</html>"):
        return "half-written report page"
    return None
