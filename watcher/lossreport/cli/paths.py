"""The paths a user names on the command line: one rule for what is a run, whatever the
command, and the `--output` folder, made when it is missing."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import sources, storage
from ..errors import InvalidInputError
from ..sources import tfrecord, wandb_log
from ..sources.tensorboard import TensorBoardSource
from ..sources.wandb_runs import WandbSource

logger = logging.getLogger(__name__)


def not_a_run(path: Path) -> InvalidInputError:
    """The one error every command gives for a folder that is no run (show, email, render)."""
    return InvalidInputError(f"{path}: not a run directory ({sources.what_is_not_a_run(path)})")


def folder(path: Path) -> None:
    """Raise InvalidInputError naming `path` when it is missing or not a folder."""
    if not path.exists():
        raise InvalidInputError(f"{path}: no such directory")
    if not path.is_dir():
        raise InvalidInputError(f"{path}: not a directory")


def run_folder(path: Path) -> tuple[Path, sources.Source]:
    """`path` resolved, and the source that reads it, for a command on one run. A link named
    here is followed (the user chose it). Raises InvalidInputError naming `path` when it is
    missing, not a folder, or no run."""
    folder(path)
    source = sources.find(path.resolve())
    if source is None:
        raise not_a_run(path)
    return path.resolve(), source


def check_readable(run_dir: Path, source: sources.Source) -> None:
    """Raise InvalidInputError with the install line when this installation cannot read the
    run's logs (TensorBoard's without the `tensorboard` extra, W&B's without `wandb`): an
    empty report would say nothing was logged."""
    if isinstance(source, TensorBoardSource) and tfrecord.load_codec() is None:
        raise InvalidInputError(tfrecord.missing_extra(run_dir))
    if isinstance(source, WandbSource) and wandb_log.load_codec() is None:
        raise InvalidInputError(wandb_log.missing_extra(run_dir))


def output_dir(path: Path) -> Path:
    """`--output DIR`, made when it is missing, as `mkdir -p` would: the part of the path that
    exists is taken as the user wrote it (a link there is followed, as the shell does), and
    each missing folder is made in the one above without following a link (storage's
    `made_beneath`). Logs one line when it makes DIR. Raises InvalidInputError when DIR is
    not a folder, or cannot be made."""
    if storage.lexists(path):
        if not path.is_dir():
            raise InvalidInputError(f"{path}: not a directory (--output)")
        return path
    existing, missing = path.absolute(), list[str]()
    while not storage.lexists(existing):
        missing.insert(0, existing.name)
        existing = existing.parent
    try:
        with storage.made_beneath(existing, missing):
            pass
    except OSError as exc:  # a file on the way, no permission; a link met: UnsafePathError
        raise InvalidInputError(f"{path}: cannot be made (--output): {exc}") from exc
    logger.info("created %s for the reports (--output)", path, extra={"event": "output_created"})
    return path
