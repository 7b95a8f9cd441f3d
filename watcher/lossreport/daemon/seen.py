"""What a look at a run found settled, kept in the catalog so that a restart need not look again.

A full look at a rendered run reads its run.json and its render marker (a few KiB of JSON with
the index row's curves) and asks the catalog for its row: about a millisecond, so a restart
over 100,000 runs took 42 s. When a look finds nothing to do for a finished (or stalled) run
of lossreport's own, the daemon records a stamp of what it saw: a hash of the run's key, the
identity of its folders (`folder_identity`), of its marker file (inode, size, modification
time) and the settings the decision depended on (mail, the stall alert). The next look, in
this daemon or the next one, takes four lstats again (nothing opened, no folder listed) and,
where the stamp is the same, knows the answer: nothing to render, nothing to list. Anything
that changed (a shard added, replaced or removed, run.json or the alert log replaced, the
marker rewritten or removed, a setting) gives another stamp, and the run gets the full look.

The folders stand for the files in them: every input of lossreport's own run is replaced by a
rename or added by a rename or a link (docs/run-directory-format.md), and each of those sets
the folder's change time (ctime, which no user can set back). run.json, the one file a person
may edit by hand, in place, is stamped by its own identity too. A folder changed within
`storage.RACY_NS` of a look is not stamped: a second change within the filesystem clock's tick could
leave its change time as it was (git's "racily clean" entries).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..runformat import GRAPHS_DIR, LOSSES_DIR, MARKER, RUN_FILE

_MARKER_PATH = f"{GRAPHS_DIR}/{MARKER}"


def marker_identity(home: str | Path) -> str | None:
    """The marker file's inode, size and modification time (lstat: a link is not followed),
    or None when there is none. Taken before the marker is read: a marker replaced after
    this has another identity, so its stamp never matches one recorded from older text."""
    return identity_of_marker(marker_stat(home))


def marker_stat(home: str | Path) -> os.stat_result | None:
    """The marker file's lstat, or None when there is none."""
    try:
        return os.lstat(f"{home}/{_MARKER_PATH}")
    except OSError:
        return None


def identity_of_marker(info: os.stat_result | None) -> str | None:
    """`marker_identity` from the marker's lstat, for a caller that needs the lstat too."""
    return None if info is None else f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def folder_identity(run_dir: str) -> tuple[str, int] | None:
    """The identity of the run's inputs from three lstats, without listing a folder: the run
    folder's and its losses folder's inode and modification and change times, and run.json's
    inode, size and times (module docstring); and the newest change time among them, for
    `storage.changed_too_recently`. None when the run folder is gone. Taken before a look
    reads anything: a change after it gives another identity."""
    try:
        folder = os.lstat(run_dir)
    except OSError:
        return None
    parts = [_identity(folder)]
    newest = folder.st_ctime_ns
    for name in (LOSSES_DIR, RUN_FILE):
        try:
            info = os.lstat(f"{run_dir}/{name}")  # plain strings: a start asks every run
        except OSError:
            parts.append("-")
            continue
        parts.append(_identity(info))
        newest = max(newest, info.st_ctime_ns)
    return "|".join(parts), newest


def stamp(key: str, folders: str, marker: str, settings: str) -> int:
    """A signed 64-bit hash of what a look saw (module docstring), as SQLite stores it."""
    text = "\0".join(("folders", key, folders, marker, settings))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _identity(info: os.stat_result) -> str:
    return f"{info.st_mode}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
