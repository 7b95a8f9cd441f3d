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

A restart, whose stamps spare most runs their looks, takes 4 lstats a run (seen.py): 35 us on
a warm cache, where a prefetcher would only take a core from the workers starting, but 330 us
on a cold one (33 s over 100,000 runs). So a scan of lstats starts a prefetcher taking the
same lstats only once it goes slower than `SLOW_RUN_SECONDS` a run.

It reads as a look does (prefetcher.py, the process): every name opened relative to its
folder's descriptor (no link followed anywhere below the runs directory), without blocking,
regular files only, at most `storage.MAX_MARKER_BYTES` each; nothing it reads is kept, and
whatever it meets (a FIFO, a missing file) is the look's to find and report. Only top-level
runs (lossreport's own) are read ahead.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import subprocess
import sys
import time

from .. import storage
from ..runformat import ALERTS_FILE, GRAPHS_DIR, LOSSES_DIR, MARKER, RUN_FILE
from . import prefetcher

logger = logging.getLogger(__name__)

MIN_RUNS = 1000  # runs worth a process
# A restart's lstats of a run whose stamp holds take about 35 us on a warm cache; a scan slower
# than this a run is waiting for its disk or server, and only then starts a process to take
# them ahead (on a warm cache it would only take a core from the workers starting).
SLOW_RUN_SECONDS = 150e-6
SAMPLE = 2048  # runs a scan's pace is measured over: a collection of garbage (0.1 s) is no disk
AHEAD = 512  # runs read ahead of the look
# What a look at lossreport's own run reads: (folder or "", file or None for its listing).
READS = (
    ("", RUN_FILE),
    ("", ALERTS_FILE),
    (LOSSES_DIR, None),
    (GRAPHS_DIR, MARKER),
)
# What a scan asks of a run whose stamp holds (seen.py): lstats, of the folder itself too.
STATS = (("", LOSSES_DIR), ("", RUN_FILE), (GRAPHS_DIR, MARKER))


class Feeder:
    """A prefetcher process for a scan that reaches the runs `names` (sorted) in their order,
    told of each run up to `AHEAD` before the scan `reached` it. `reads`: it reads what a look
    reads; else it takes the lstats a stamp's check takes (a restart's)."""

    def __init__(self, root: str, names: list[str], reads: bool) -> None:
        self._names = names
        self._told = 0
        self._reached = 0  # runs the scan reached
        self._root = root
        self.reads = reads
        self._process = _start(root, reads) if reads else None
        # Where and when the pace of a scan of lstats was last measured; None once started.
        self._paced: tuple[int, float] | None = None if reads else (0, time.monotonic())

    @classmethod
    def for_scan(cls, root: str, folders: list[str], known: int) -> Feeder | None:
        """A feeder for a scan of the whole tree at `root`, which takes its top-level
        `folders` in order, if they are at least `MIN_RUNS`: one that reads if as many have
        no stamp among the `known` (a first start), else one that takes lstats (a restart)."""
        reads = len(folders) - known >= MIN_RUNS
        return cls.over(root, sorted(folders), reads)

    @classmethod
    def over(cls, root: str, names: list[str], reads: bool = True) -> Feeder | None:
        """A feeder for `names`, if they are at least `MIN_RUNS`, and a process can be had."""
        if len(names) < MIN_RUNS:
            return None
        feeder = cls(root, names, reads)
        return None if reads and feeder._process is None else feeder

    def reached(self, name: str) -> None:
        """The scan is at run `name`: tell the prefetcher of the runs up to `AHEAD` after it,
        in batches of half that."""
        self._reached += 1
        if self._process is None and not self._started_if_slow():
            return
        number = bisect.bisect_left(self._names, name)
        if number < self._told - AHEAD // 2:
            return
        start = max(self._told, number)
        self._told = number + AHEAD
        batch = [name for name in self._names[start : self._told] if "/" not in name]
        if self._process is not None and self._process.stdin is not None and batch:
            # Full (it is behind) or gone: dropped. A name a full pipe cuts short only reads
            # as a run not found.
            with contextlib.suppress(OSError, ValueError):
                os.write(self._process.stdin.fileno(), b"".join(_fed(name) for name in batch))

    def _started_if_slow(self) -> bool:
        """Start the process if a scan of lstats goes slower than `SLOW_RUN_SECONDS` a run
        over the last `SAMPLE` runs it reached; True if it was started now."""
        if self._paced is None:
            return False
        since, then = self._paced
        if self._reached - since < SAMPLE:
            return False
        now = time.monotonic()
        if (now - then) / (self._reached - since) <= SLOW_RUN_SECONDS:
            self._paced = (self._reached, now)  # measured again later: the cache may run cold
            return False
        self._paced = None
        self._process = _start(self._root, self.reads)
        return self._process is not None

    def close(self) -> None:
        """Its work is done or no longer wanted (on a hung server it may be stuck): killed."""
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        self._process.kill()
        # One stuck on a hung server dies when its read returns; Python reaps it later.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=1)
        self._process = None


def command(root: str, reads: bool = True) -> tuple[list[str], dict[str, str]]:
    """The prefetcher's command line (prefetcher.py, told what to read or lstat) and its
    environment: this very package's code, whatever else the path has (a test's checkout, an
    editable install of another)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    told = {
        "what": "read" if reads else "stat",
        "paths": READS if reads else STATS,
        "most_bytes": storage.MAX_MARKER_BYTES,
    }
    entry = f"from {prefetcher.__name__} import main; main()"
    arguments = [sys.executable, "-c", entry, root, json.dumps(told)]
    return arguments, {**os.environ, "PYTHONPATH": path}


def _start(root: str, reads: bool) -> subprocess.Popen[bytes] | None:
    arguments, environment = command(root, reads)
    try:
        feed = subprocess.Popen(
            arguments,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        logger.debug("not reading ahead of the scan: %s", exc)
        return None
    logger.debug(
        "reading ahead of the scan (%s): process %d",
        "read" if reads else "stat",
        feed.pid,
        extra={"event": "prefetching", "pid": feed.pid, "reads": reads},
    )
    if feed.stdin is not None:
        os.set_blocking(feed.stdin.fileno(), False)
    return feed


def _fed(name: str) -> bytes:
    """A folder's name as the prefetcher reads it: NUL-ended (a name holds no NUL)."""
    return os.fsencode(name) + b"\0"
