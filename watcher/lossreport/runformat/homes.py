"""Where lossreport keeps its files for a run: the run's *home*.

A run's home receives `loss_graphs/`, the render lock and marker, the mail record and the
converted-logs cache. It is the run's own folder, unless the daemon was given `--output DIR`
and the folder is not writable (another user's logs), or the runs directory is the local copy
of an object store's runs (a cache nobody reads: `every_run_to_output`): then it is
`DIR/<the run's path>`, a mirror of the runs tree. Once a run has a home in the mirror it
keeps it, so its report does not move when permissions change. The daemon's own files (the
outbox, `index.html`) go to `DIR` too, or to the runs directory without `--output`.

Runs are named by their *key*, their path under the runs directory (`exp1/tb/run3`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import storage
from ..errors import LossReportError, RunDirectoryError
from .layout import is_run_name


@dataclass(frozen=True)
class Homes:
    runs_dir: Path
    output: Path | None = None  # --output: the mirror for runs whose folder is not writable
    # The runs directory is a store's cache (storage.mirror): with `output`, every run's home
    # is there, as the user asked, not in the cache.
    every_run_to_output: bool = False

    @property
    def state_dir(self) -> Path:
        """The folder for the daemon's own files: the outbox and the runs index."""
        return self.output or self.runs_dir

    def key_of(self, run_dir: Path) -> str:
        return run_dir.relative_to(self.runs_dir).as_posix()

    def home_of(self, key: str) -> Path:
        """The home of the run at `key` (which must be a run key: see `is_run_name`)."""
        if not is_run_name(key):
            raise RunDirectoryError(self.runs_dir / key, "is not a run of the runs directory")
        run_dir = self.runs_dir / key
        if self.output is None:
            return run_dir
        mirrored = self.output / key
        if (
            self.every_run_to_output
            or storage.is_real_dir(mirrored)
            or not os.access(run_dir, os.W_OK | os.X_OK)
        ):
            return mirrored
        return run_dir

    def root_of(self, home: Path) -> Path:
        """The folder below which `home` lies and no link may be: the mirror or the runs."""
        if self.output is not None and home.is_relative_to(self.output):
            return self.output
        return self.runs_dir

    def make_home(self, key: str) -> Path:
        """`home_of(key)`, with its folders in the mirror made (each refusing a link)."""
        home = self.home_of(key)
        if self.output is not None and home != self.runs_dir / key:
            make_dirs(self.output, key.split("/"))
        return home


def make_dirs(root: Path, parts: list[str]) -> None:
    """`root/a/b/c` for parts [a, b, c], each folder made in the one above through a
    descriptor opened without following a link: a link planted in the mirror is refused
    (UnsafePathError), never followed. Any other failure (a read-only mirror) is a
    RunDirectoryError naming the folder that could not be made, not just its last part."""
    made = root
    try:
        fd = storage.open_dir(root)
        try:
            for part in parts:
                made = made / part
                storage.make_dir(Path(part), dir_fd=fd)
                inner = storage.open_dir(Path(part), dir_fd=fd)
                os.close(fd)
                fd = inner
        finally:
            os.close(fd)
    except LossReportError:
        raise
    except OSError as exc:
        raise RunDirectoryError(made, f"cannot be made ({exc.strerror or exc})") from exc
