"""Reading a scan's files a little ahead of it, in a process of its own.

A first start lists every run of the tree (an lstat of its run.json), then looks at each, one
after another, and each look waits for its few small files (run.json, the `losses/` listing,
the render marker). On a cold cache (after a reboot, or a tree nobody read lately) each is a
disk read, on NFS a round trip: over 100,000 runs, close to half of a cold first start was
waiting (176 s cold, 98 s warm). A second process reads the same files ahead of the scan,
several at once, so the scan finds them in the page cache.

A process, not threads: threads would take turns with the look for Python's lock on every file
(tried: a scan of a warm tree took 40% longer). It imports nothing heavy, and is fed the runs'
folder names as the scan reaches them (its listing, then its looks), at most `AHEAD` ahead; a
write it cannot take at once is dropped (it is behind), so a prefetcher stuck on a hung server
never holds up the scan.

It reads as a look does: every name opened relative to its folder's descriptor (no link
followed anywhere below the runs directory), without blocking, regular files only, at most
`MOST_BYTES` each; nothing it reads is kept, and whatever it meets (a FIFO, a missing file) is
the look's to find and report. Only top-level runs (lossreport's own) are read ahead.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MIN_RUNS = 1000  # looks worth a process (a restart looks at few: its stamps hold)
AHEAD = 512  # runs read ahead of the look
THREADS = 8  # reads waited for at once, in the prefetcher: a disk's queue, an NFS client's
MOST_BYTES = 4 * 2**20  # a file read ahead (storage.MAX_MARKER_BYTES: run.json, a marker)
# What a look at lossreport's own run reads: (folder or "", file or None for its listing).
READS = (
    ("", "run.json"),
    ("", ".lossreport-alerts.json"),
    ("losses", None),
    ("loss_graphs", ".lossreport-rendered.json"),
)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Feeder:
    """A prefetcher process for a scan that reaches the runs `names` (sorted) in their order,
    told of each run up to `AHEAD` before the scan `reached` it."""

    def __init__(self, root: str, names: list[str]) -> None:
        self._names = names
        self._told = 0
        self._process = _start(root)

    @classmethod
    def over_tree(cls, root: str, known: int) -> Feeder | None:
        """A feeder for a scan of the whole tree at `root`, where it reads its top-level
        folders in order, if at least `MIN_RUNS` of them are more than the `known` runs (whose
        stamps spare them the looks: a restart)."""
        try:
            names = sorted(os.listdir(root))
        except OSError:
            return None
        return cls.over(root, names) if len(names) - known >= MIN_RUNS else None

    @classmethod
    def over(cls, root: str, names: list[str]) -> Feeder | None:
        """A feeder for `names`, if they are at least `MIN_RUNS`, and a process can be had."""
        if len(names) < MIN_RUNS:
            return None
        feeder = cls(root, names)
        return feeder if feeder._process is not None else None

    def reached(self, name: str) -> None:
        """The scan is at run `name`: tell the prefetcher of the runs up to `AHEAD` after it,
        in batches of half that."""
        number = bisect.bisect_left(self._names, name)
        if number < self._told - AHEAD // 2:
            return
        start = max(self._told, number)
        self._told = number + AHEAD
        batch = [name for name in self._names[start : self._told] if "/" not in name]
        if self._process is not None and self._process.stdin is not None and batch:
            with contextlib.suppress(OSError, ValueError):  # full (it is behind) or gone
                os.write(self._process.stdin.fileno(), b"".join(_fed(name) for name in batch))

    def close(self) -> None:
        """Its work is done or no longer wanted (on a hung server it may be stuck): killed."""
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        self._process.kill()
        self._process.wait()
        self._process = None


def command(root: str) -> tuple[list[str], dict[str, str]]:
    """The prefetcher's command line and environment: this very package's code, whatever
    else the path has (a test's checkout, an editable install of another)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    arguments = [sys.executable, "-c", f"from {__name__} import main; main()", root]
    return arguments, {**os.environ, "PYTHONPATH": path}


def _start(root: str) -> subprocess.Popen[bytes] | None:
    arguments, environment = command(root)
    try:
        feed = subprocess.Popen(
            arguments,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    if feed.stdin is not None:
        os.set_blocking(feed.stdin.fileno(), False)
    return feed


def _fed(name: str) -> bytes:
    """A folder's name as the prefetcher reads it: NUL-ended (a name holds no NUL)."""
    return os.fsencode(name) + b"\0"


def main() -> None:
    """The prefetcher: read each run named on stdin under the runs directory named first on
    the command line, until stdin ends (or it is killed: Ctrl-C is the daemon's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        root = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with ThreadPoolExecutor(THREADS) as pool:
            rest = b""
            while chunk := os.read(sys.stdin.fileno(), 65536):
                *names, rest = (rest + chunk).split(b"\0")
                pool.map(_read_run, [root] * len(names), names)


def _read_run(root: int, name: bytes) -> None:
    with contextlib.suppress(OSError):
        run = os.open(name, _DIR_FLAGS, dir_fd=root)
        try:
            for folder, file in READS:
                _read(run, folder, file)
        finally:
            os.close(run)


def _read(run: int, folder: str, file: str | None) -> None:
    """Read `file` in `folder` of the run (its listing and entries' lstats if None)."""
    with contextlib.suppress(OSError):
        inside = os.open(folder, _DIR_FLAGS, dir_fd=run) if folder else run
        try:
            if file is None:
                with os.scandir(inside) as entries:
                    for entry in entries:
                        entry.stat(follow_symlinks=False)
                return
            fd = os.open(file, _FILE_FLAGS, dir_fd=inside)
            try:
                found = os.fstat(fd)
                if stat.S_ISREG(found.st_mode) and found.st_size <= MOST_BYTES:
                    os.read(fd, found.st_size)
            finally:
                os.close(fd)
        finally:
            if inside != run:
                os.close(inside)
