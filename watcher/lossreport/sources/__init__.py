"""Sources: the one interface through which the daemon and the renderer read runs.

`SOURCES` lists the kinds of run folder lossreport reads, tried in order; the first whose
`is_run` accepts a folder reads it. To read another tool's logs, write a class with the
methods of `base.Source` (see native.py) and add an instance here.
"""

from __future__ import annotations

from pathlib import Path

from .. import runformat
from .base import Inputs, Source
from .native import NativeSource

NATIVE = NativeSource()
SOURCES: tuple[Source, ...] = (NATIVE,)

__all__ = [
    "NATIVE",
    "SOURCES",
    "Inputs",
    "NativeSource",
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
    """The runs directly inside `runs_dir` that some source reads, by name (hidden folders are
    lossreport's own; links are never entered). Raises OSError when it cannot be listed."""
    return sorted(folder for folder in runformat.list_folders(runs_dir) if find(folder))
