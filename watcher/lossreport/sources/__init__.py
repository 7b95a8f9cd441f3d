"""Sources: the one interface through which the daemon and the renderer read runs.

`SOURCES` lists the kinds of run folder lossreport reads, tried in order; the first whose
`is_run` accepts a folder reads it. docs/architecture.md says how to add one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from .. import runformat, storage
from . import hf_trainer, lightning, mlflow, tensorboard, wandb_runs
from .base import Inputs, Source
from .dvclive import DvcLiveSource
from .hf_trainer import HfTrainerSource
from .lightning import LightningCsvSource
from .mlflow import MlflowSource
from .native import NativeSource
from .series import SeriesFilter, is_loss_name
from .tensorboard import TensorBoardSource
from .wandb_runs import Tail, WandbSource

# For error messages: what `find` looks for.
WHAT_IS_A_RUN = (
    "a run is a folder with run.json or losses/, TensorBoard event files, a Lightning "
    "metrics.csv, a Hugging Face trainer_state.json, an MLflow run's meta.yaml and metrics/, "
    "a W&B run folder's run-ID.wandb, or a DVCLive folder's plots/metrics/"
)

NATIVE = NativeSource()
# First match wins. A Trainer's output folder may hold TensorBoard logs (its `runs/`), and a
# Lightning version folder may hold both a CSV and event files: the richer record goes first.
SOURCES: tuple[Source, ...] = (
    NATIVE,
    MlflowSource(),
    HfTrainerSource(),
    WandbSource(),
    TensorBoardSource(),
    LightningCsvSource(),
    DvcLiveSource(),
)

__all__ = [
    "NATIVE",
    "SOURCES",
    "WHAT_IS_A_RUN",
    "Inputs",
    "NativeSource",
    "SeriesFilter",
    "Source",
    "Tail",
    "WandbSource",
    "find",
    "is_loss_name",
    "list_runs",
    "passed_over",
    "read_record_at_home",
    "source_of",
    "what_is_not_a_run",
]
MAX_PASSED_OVER = 10  # named in one message; the rest are counted
# The files by which a source knows its runs (a run's folder holds one of them).
INPUT_FILES = frozenset(
    {runformat.RUN_FILE, lightning.METRICS_FILE, hf_trainer.STATE_FILE, mlflow.META_FILE}
)


def find(path: Path) -> Source | None:
    """The source that reads the run at `path`, or None when `path` is not a run."""
    return next((source for source in SOURCES if source.is_run(path)), None)


def source_of(run_dir: Path) -> Source:
    """`find`, for a folder that should be a run: one that no source reads (deleted meanwhile,
    say) is read as the native format reads it, which finds nothing and says so."""
    return find(run_dir) or NATIVE


def read_record_at_home(homes: runformat.Homes, key: str) -> runformat.RunRecord:
    """The record of the run at `key`, read with its home's cache (as its renders left it,
    reached through no link: `Source.read_record`) when the home exists, else without: what
    the daemon reads outside a render (an alert's, a mail's) costs no more than the render's.
    Raises as `read_record` does."""
    run_dir = homes.runs_dir / key
    source = source_of(run_dir)
    with ExitStack() as stack:
        cache = None
        try:
            home = homes.home_of(key)
            root = homes.root_of(home)
            fd = stack.enter_context(storage.opened_beneath(root, home.relative_to(root).parts))
            cache = storage.fd_path(fd, home) / runformat.CACHE_DIR
        except (OSError, ValueError):  # no home yet, or a link on the way: no cache
            pass
        record = source.read_record(run_dir, cache)
    return record


def list_runs(runs_dir: Path) -> list[Path]:
    """The runs under `runs_dir` that some source reads, at any depth down to
    `runformat.MAX_RUN_DEPTH`, sorted. Links are never entered; hidden folders (lossreport's
    own, other tools' caches) and reports are not walked, nor are runs' own folders, except
    where a run's subfolders can be runs too (TensorBoard). Raises OSError when `runs_dir`
    itself cannot be listed."""
    return sorted(_walk(runs_dir, runformat.list_folders(runs_dir), 1))


def list_run_keys(
    runs_dir: Path,
    known: Callable[[str], bool] | None = None,
    folders: list[str] | None = None,
) -> list[str]:
    """`list_runs`, as keys (each run's path under `runs_dir`, `/`-separated), sorted as
    strings. The same runs, found faster: a folder at the top is lossreport's own run when
    it holds run.json or losses (one lstat, no Path made), or when `known(name)` says it is
    one still (the daemon's seen stamp, seen.py: its run.json's lstat was just taken), the
    walk of `list_runs` for any other folder. Top folders are taken in order, as a reader
    ahead goes (daemon/prefetch.py). `folders`: their names, where the caller listed them
    (`runformat.list_folder_names`). A daemon's start lists 100,000 runs."""
    root = os.fspath(runs_dir)
    keys: list[str] = []
    names = runformat.list_folder_names(runs_dir) if folders is None else folders
    for name in sorted(names):
        path = f"{root}/{name}"
        if (known is not None and known(name)) or _holds_any(
            path, (runformat.RUN_FILE, runformat.LOSSES_DIR)
        ):
            keys.append(name)  # NATIVE, first of SOURCES: its runs nest none
            continue
        for run_dir in _walk(runs_dir, [Path(path)], 1):
            keys.append(run_dir.relative_to(runs_dir).as_posix())
    return sorted(keys)


def _holds_any(folder: str, names: tuple[str, ...]) -> bool:
    """Whether anything (a dangling link included) is at one of `names` in `folder`."""
    for name in names:
        try:
            os.lstat(os.path.join(folder, name))
        except OSError:
            continue
        return True
    return False


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


def passed_over(path: Path) -> list[str]:
    """Why `path` may hold no run: each file under it (down to `runformat.MAX_RUN_DEPTH`)
    named as a source's input (run.json, an event file, ...) that is not a regular file, so
    no source took its folder for a run; e.g. `RUN/events.out.tfevents.1: not a regular file
    (a FIFO), skipped`. Its own walk, for the message of a command that found no run."""
    found: list[str] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            return
        for entry in listed:
            named_as_input = (
                entry.name in INPUT_FILES
                or tensorboard.is_event_file_name(entry.name)
                or wandb_runs.is_log_name(entry.name)
            )
            if named_as_input and not entry.is_file(follow_symlinks=False):
                what = storage.kind_of(Path(entry.path))
                found.append(f"{entry.path}: not a regular file ({what}), skipped")
            elif (
                depth < runformat.MAX_RUN_DEPTH
                and runformat.is_walked(entry.name)
                and entry.is_dir(follow_symlinks=False)
            ):
                visit(Path(entry.path), depth + 1)

    visit(path, 0)
    return found


def what_is_not_a_run(path: Path) -> str:
    """WHAT_IS_A_RUN, then what `passed_over` found under `path`: for the message of a
    command given a folder that is not a run or holds none."""
    found = passed_over(path)
    more = len(found) - MAX_PASSED_OVER
    shown = found[:MAX_PASSED_OVER] + ([f"{more} more files passed over"] if more > 0 else [])
    return "; ".join([WHAT_IS_A_RUN, *shown])
