"""What a look at a run found settled, kept in the catalog so that a restart need not look again.

A full look at a rendered run reads its run.json and its render marker (a few KiB of JSON with
the index row's curves) and asks the catalog for its row: about a millisecond, so a restart
over 100,000 runs took 42 s. When a look finds nothing to do for a finished (or stalled) run
of lossreport's own, the daemon records a stamp of what it saw: a hash of the run's key, the
fingerprint of its inputs (names, sizes and modification times: `stat_fingerprint`), the
identity of its marker file (inode, size, modification time) and the settings the decision
depended on (mail, the stall alert). The next look, in this daemon or the next one, takes the
fingerprint and the marker's lstat again (a dozen system calls, nothing opened but the
losses folder) and, where the stamp is the same, knows the answer: nothing to render, nothing
to list. Anything that changed (a shard, run.json, the alert log, the marker rewritten or
removed, a setting) gives another stamp, and the run gets the full look.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..runformat import GRAPHS_DIR, MARKER


def marker_identity(home: str | Path) -> str | None:
    """The marker file's inode, size and modification time (lstat: a link is not followed),
    or None when there is none. Taken before the marker is read: a marker replaced after
    this has another identity, so its stamp never matches one recorded from older text."""
    try:
        info = os.lstat(os.path.join(home, GRAPHS_DIR, MARKER))
    except OSError:
        return None
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def stamp(key: str, fingerprint: str, marker: str, settings: str) -> int:
    """A signed 64-bit hash of what a look saw (module docstring), as SQLite stores it."""
    text = "\0".join((key, fingerprint, marker, settings))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
