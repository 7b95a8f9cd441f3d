"""The storage seam: the few operations a trainer needs on its run's folder, wherever it is.

A run lives in a local folder (`LocalFolder`, any POSIX filesystem, NFS and Lustre included)
or under an object-store prefix (`s3.ObjectFolder`). The run format writes through `RunFolder`
only, so it never needs to know which: a shard is created whole under a name nobody else uses,
run.json is replaced whole, files are read whole and bounded, and shards set aside by
`clear_loss_history()` are moved, never deleted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

from .local import (
    atomic_file,
    atomic_write,
    made_beneath,
    make_dir,
    move_at,
    opened_dir,
    read_bytes,
)


class RunFolder(Protocol):
    """One run's folder. Relative names use '/' and never leave the folder."""

    def where(self, name: str) -> Path | str:
        """`name` in this folder, as error messages show it."""

    def create(self, name: str, data: bytes) -> None:
        """Make `name` hold `data`, appearing whole; FileExistsError if `name` exists."""

    def replace(self, name: str, data: bytes) -> None:
        """Make `name` hold `data`, replacing what was there whole (readers see old or new)."""

    def read(self, name: str, limit: int) -> bytes:
        """`name`'s bytes, at most `limit` of them; FileNotFoundError if it is not there."""

    def files(self, folder: str) -> list[str]:
        """The names of the files directly in `folder` (none when it does not exist)."""

    def move(self, names: Sequence[str], source: str, target: str) -> None:
        """Move the files `names` from folder `source` into folder `target`, made if needed."""

    def prepare(self, subfolder: str) -> None:
        """Make the folder and `subfolder` in it, and check now, before training starts, that
        they can be reached."""


class LocalFolder:
    """A run folder on a local or network filesystem, reached without following links."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def where(self, name: str) -> Path:
        return self.path / name

    def create(self, name: str, data: bytes) -> None:
        with atomic_file(self.path / name, replace=False) as handle:
            handle.write(data)

    def replace(self, name: str, data: bytes) -> None:
        atomic_write(self.path / name, data)

    def read(self, name: str, limit: int) -> bytes:
        return read_bytes(self.path / name, limit)

    def files(self, folder: str) -> list[str]:
        try:
            with opened_dir(self.path / folder) as fd, os.scandir(fd) as entries:
                return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def move(self, names: Sequence[str], source: str, target: str) -> None:
        """Each folder on the way to `target` is made and opened without following a link."""
        with (
            opened_dir(self.path / source) as source_fd,
            made_beneath(self.path, PurePosixPath(target).parts) as target_fd,
        ):
            for name in names:
                move_at(name, source_fd, target_fd)

    def prepare(self, subfolder: str) -> None:
        """The runs folder above may be reached through a link; the run folder and `subfolder`
        must be folders, not links, and `subfolder` must take a new file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        make_dir(self.path)
        make_dir(self.path / subfolder)
        with tempfile.TemporaryFile(dir=self.path / subfolder):
            pass


RunLocation = str | os.PathLike[str] | RunFolder


def folder_at(location: RunLocation) -> RunFolder:
    """The run folder at `location`: an `s3://bucket/prefix` URL, a local path, or a
    `RunFolder` already."""
    from . import s3

    if not isinstance(location, str | os.PathLike):
        return location
    text = os.fspath(location)
    if s3.is_store_url(text):
        return s3.ObjectFolder(s3.StoreUrl.parse(text))
    return LocalFolder(Path(text))
