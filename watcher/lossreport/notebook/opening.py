"""`lossreport.open(path)`, and how a live `Run` shows in a notebook.

Named `open_run` here so that nothing in the package shadows the built-in `open`; the package
exports it as `lossreport.open`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import markupsafe

from .. import sources
from ..errors import InvalidInputError
from ..sources import tfrecord
from ..sources.tensorboard import TensorBoardSource
from .view import RunView, read_view


def open_run(path: str | os.PathLike[str]) -> RunView:
    """The run at `path`, whatever wrote it (lossreport, TensorBoard, Lightning, the Hugging
    Face Trainer, MLflow, DVCLive), read now; a link named here is followed (the user chose
    it), as the commands do. Raises InvalidInputError naming `path` when it is missing, not a
    folder, or no run (saying what a run is), or a TensorBoard run this installation cannot
    read (with the install line)."""
    named = Path(path).expanduser()
    if not named.exists():
        raise InvalidInputError(f"{named}: no such directory")
    if not named.is_dir():
        raise InvalidInputError(f"{named}: not a directory")
    run_dir = named.resolve()
    source = sources.find(run_dir)
    if source is None:
        raise InvalidInputError(
            f"{named}: not a run directory ({sources.what_is_not_a_run(run_dir)})"
        )
    if isinstance(source, TensorBoardSource) and tfrecord.load_codec() is None:
        raise InvalidInputError(tfrecord.missing_extra(run_dir))
    return read_view(run_dir, source)


class LiveRun(Protocol):
    """What a notebook shows of the trainer's `Run`: where it writes, and how to write out
    what it holds."""

    path: Path | str

    def flush(self) -> bool: ...


def live_run_html(run: LiveRun) -> str:
    """A live run's display: its rows written out, then `open_run`'s view of its folder. A run
    on an object store is named, not read (open its local mirror instead); one whose folder
    is gone is named with why."""
    if not isinstance(run.path, Path):
        return _said(f"lossreport run at {run.path}: open its local mirror to see it")
    run.flush()
    try:
        return open_run(run.path)._repr_html_()
    except InvalidInputError as exc:
        return _said(str(exc))


def _said(text: str) -> str:
    return str(markupsafe.Markup("<p>{}</p>").format(text))
