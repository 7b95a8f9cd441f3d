"""Sources: the one interface through which the daemon and the renderer read runs.

`SOURCES` lists the kinds of run folder lossreport reads, tried in order; the first whose
`is_run` accepts a folder reads it. docs/architecture.md says how to add one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .. import runformat
from .base import Inputs, Source
from .hf_trainer import HfTrainerSource
from .lightning import LightningCsvSource
from .mlflow import MlflowSource
from .native import NativeSource
from .series import SeriesFilter
from .tensorboard import TensorBoardSource

# For error messages: what `find` looks for.
WHAT_IS_A_RUN = (
    "a run is a folder with run.json or losses/, TensorBoard event files, a Lightning "
    "metrics.csv, a Hugging Face trainer_state.json, or an MLflow run's meta.yaml and metrics/"
)

NATIVE = NativeSource()
# First match wins. A Trainer's output folder may hold TensorBoard logs (its `runs/`), and a
# Lightning version folder may hold both a CSV and event files: the richer record goes first.
SOURCES: tuple[Source, ...] = (
    NATIVE,
    MlflowSource(),
    HfTrainerSource(),
    TensorBoardSource(),
    LightningCsvSource(),
)

__all__ = [
    "NATIVE",
    "SOURCES",
    "WHAT_IS_A_RUN",
    "Inputs",
    "NativeSource",
    "SeriesFilter",
    "Source",
    "find",
    "list_runs",
    "source_of",
]


def find(path: Path) -> Source | None:
    """The source that reads the run at `path`, or None when `path` is not a run."""
    return next((source for source in SOURCES if source.is_run(path)), None)


def source_of(run_dir: Path) -> Source:
    """`find`, for a folder that should be a run: one that no source reads (deleted meanwhile,
    say) is read as the native format reads it, which finds nothing and says so."""
    return find(run_dir) or NATIVE


def list_runs(runs_dir: Path) -> list[Path]:
    """The runs under `runs_dir` that some source reads, at any depth down to
    `runformat.MAX_RUN_DEPTH`, sorted. Links are never entered; hidden folders (lossreport's
    own, other tools' caches) and reports are not walked, nor are runs' own folders, except
    where a run's subfolders can be runs too (TensorBoard). Raises OSError when `runs_dir`
    itself cannot be listed."""
    return sorted(_walk(runs_dir, runformat.list_folders(runs_dir), 1))


def _walk(runs_dir: Path, folders: list[Path], depth: int) -> Iterator[Path]:
    for folder in folders:
        source = find(folder)
        if source is not None:
            yield folder
        if depth >= runformat.MAX_RUN_DEPTH or (source is not None and not source.nests_runs):
            continue
        try:
            inside = runformat.list_folders(folder)
        except OSError:  # unreadable, or gone: someone else's folder, not ours to report
            continue
        yield from _walk(runs_dir, inside, depth + 1)
