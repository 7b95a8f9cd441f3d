"""The prefetcher process of prefetch.py: it reads, or lstats, the runs it is told of, several
at once, and keeps nothing.

Its command line: the runs directory, then what to do as JSON (`what`: "read" or "stat";
`paths`: the (folder or "", file or None for the folder's listing) of a run to read or lstat;
`most_bytes`: the largest file it reads). Its stdin: the runs' folder names, each ended by a
NUL. It imports nothing but the standard library, so it costs a few MB, and it is told the
run directory's names rather than importing runformat.

Every name is opened relative to its folder's descriptor with no link followed, without
blocking, regular files only; an error is the look's to meet and report, not its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS = 8  # reads waited for at once: a disk's queue, an NFS client's slots
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def main() -> None:
    """Read or lstat each run named on stdin until stdin ends (or it is killed: Ctrl-C is
    the daemon's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    told: dict[str, Any] = json.loads(sys.argv[2])
    paths = [(str(folder), None if file is None else str(file)) for folder, file in told["paths"]]
    most = int(told["most_bytes"])
    reads = told["what"] == "read"
    with contextlib.suppress(OSError):
        root = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with ThreadPoolExecutor(THREADS) as pool:
            rest = b""
            while chunk := os.read(sys.stdin.fileno(), 65536):
                *names, rest = (rest + chunk).split(b"\0")
                for name in names:
                    pool.submit(_visit, root, name, paths, most, reads)


def _visit(
    root: int, name: bytes, paths: list[tuple[str, str | None]], most: int, reads: bool
) -> None:
    """Read (or lstat) each of `paths` in the run folder `name`."""
    with contextlib.suppress(OSError):
        if not reads:
            os.stat(name, dir_fd=root, follow_symlinks=False)
        run = os.open(name, _DIR_FLAGS, dir_fd=root)
        try:
            for folder, file in paths:
                with contextlib.suppress(OSError):
                    _one(run, folder, file, most, reads)
        finally:
            os.close(run)


def _one(run: int, folder: str, file: str | None, most: int, reads: bool) -> None:
    """Read (or lstat) `file` in `folder` of the run; list it, lstatting each entry, if None."""
    inside = os.open(folder, _DIR_FLAGS, dir_fd=run) if folder else run
    try:
        if file is None:
            with os.scandir(inside) as entries:
                for entry in entries:
                    entry.stat(follow_symlinks=False)
        elif not reads:
            os.stat(file, dir_fd=inside, follow_symlinks=False)
        else:
            fd = os.open(file, _FILE_FLAGS, dir_fd=inside)
            try:
                found = os.fstat(fd)
                if stat.S_ISREG(found.st_mode) and found.st_size <= most:
                    os.read(fd, found.st_size)
            finally:
                os.close(fd)
    finally:
        if inside != run:
            os.close(inside)
