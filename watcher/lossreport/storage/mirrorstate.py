"""What a store mirror fetched, kept on disk in its folder, so that a restarted daemon fetches
only the objects that changed while it was stopped instead of the whole prefix again.

One SQLite file (`.lossreport-mirror.sqlite`, hidden: no daemon takes it for a run) maps each
object's path under the prefix to what the listing said of it when it was fetched (or
uploaded) and to what the local copy was then. A poll writes only its changes, in one
transaction, so a mirror of 100,000 runs is not rewritten every poll. The file is only ever a
shortcut: one missing, unreadable or of another version is started afresh, and the mirror
then fetches everything once, as a first start does.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

from .local import open_dir, remove_at

logger = logging.getLogger(__name__)

STATE_FILE = ".lossreport-mirror.sqlite"
VERSION = 1
BUSY_SECONDS = 5.0  # another process on the same mirror folder (`serve` beside `watch`)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fetched (key TEXT PRIMARY KEY, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, local_size INTEGER NOT NULL, local_ns INTEGER NOT NULL) "
    "WITHOUT ROWID"
)

Stamp = tuple[int, int]  # (size, time of last write in ns)


class Entry(NamedTuple):
    """One object the mirror holds: what the listing said of it, and what its local copy was
    (the same for a fetched object, which is given the object's time; not for an upload)."""

    stored: Stamp
    local: Stamp


class MirrorState:
    """The state file of the mirror folder `root`."""

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_FILE
        self._failing = False

    def load(self) -> dict[str, Entry]:
        """Every entry kept, or none when there is no usable file (then it is made anew)."""
        try:
            with closing(self._connect()) as db:
                rows = db.execute("SELECT key, size, mtime_ns, local_size, local_ns FROM fetched")
                return {key: Entry((a, b), (c, d)) for key, a, b, c, d in rows}
        except (OSError, sqlite3.Error) as exc:
            logger.warning(
                "%s: mirror state unusable, fetching everything again: %s", self.path, exc
            )
            self._discard()
            return {}

    def save(self, changes: Mapping[str, Entry | None]) -> bool:
        """Write `changes` (None: the object is gone) in one transaction; whether it was
        written. A failure is logged once while it lasts: the caller keeps the changes."""
        if not changes:
            return True
        gone = [(key,) for key, entry in changes.items() if entry is None]
        kept = [(key, *e.stored, *e.local) for key, e in changes.items() if e is not None]
        try:
            with closing(self._connect()) as db, db:
                db.executemany("DELETE FROM fetched WHERE key = ?", gone)
                db.executemany("INSERT OR REPLACE INTO fetched VALUES (?, ?, ?, ?, ?)", kept)
        except (OSError, sqlite3.Error) as exc:
            if not self._failing:
                logger.warning("%s: mirror state not saved: %s", self.path, exc)
            self._failing = True
            return False
        self._failing = False
        return True

    def _connect(self) -> sqlite3.Connection:
        """The file, made if missing; never through a link or onto anything but a file."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(mode):
                raise OSError(f"{self.path}: not a regular file; not used")
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, VERSION):
                raise sqlite3.DatabaseError(f"version {version}, this lossreport reads {VERSION}")
            if version == 0:
                with db:
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA user_version = {VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _discard(self) -> None:
        try:
            folder = open_dir(self.path.parent)
            try:
                remove_at(self.path.name, folder)  # the entry itself, never through a link
            finally:
                os.close(folder)
        except OSError:
            pass
