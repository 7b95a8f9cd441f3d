"""The daemon's presence file, `RUNS_DIR/.lossreport-daemon.json`: a live `lossreport watch`
says here that it follows the runs directory, with a heartbeat.

A trainer closing a run with `report_on_close="auto"` reads it to decide whether to render the
report itself: a daemon that will render the run saves the trainer the work; a dead daemon
(heartbeat older than `LIVE_SECS`, or on this host a pid that is gone) does not count. Several
daemons on one directory share the file: each rewrites it at every heartbeat, so it names the
one that wrote last. The file is a hint, never trusted for more: anyone who can write the runs
directory can forge it, which only costs the trainers their own report at close (the daemon's
or a later `lossreport render` still makes it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..clock import utc_now, utc_time
from ..processes import pid_alive
from .layout import PRESENCE_FILE
from .record import parse_time

logger = logging.getLogger(__name__)

HEARTBEAT_SECS = 15.0  # how often a daemon rewrites the file
# A heartbeat older than this is a dead (or hung) daemon. Four beats: one missed write on a
# slow NFS server does not make a live daemon look dead, and clocks of two hosts may differ.
LIVE_SECS = 4 * HEARTBEAT_SECS
MAX_PRESENCE_BYTES = 4096


@dataclass(frozen=True)
class DaemonPresence:
    host: str
    pid: int
    heartbeat_at: str

    def is_live(self) -> bool:
        """Heartbeat younger than LIVE_SECS and, when it runs on this host, its pid alive."""
        age = (utc_time() - parse_time(self.heartbeat_at)).total_seconds()
        if not -LIVE_SECS < age < LIVE_SECS:  # far in the future: a forged or broken clock
            return False
        return self.host != socket.gethostname() or pid_alive(self.pid)


def write_presence(runs_dir: Path) -> None:
    """Say (again) that this process follows `runs_dir`. Raises OSError when it cannot."""
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_at": utc_now()}
    storage.atomic_write(runs_dir / PRESENCE_FILE, json.dumps(doc).encode())


def read_presence(runs_dir: Path) -> DaemonPresence | None:
    """The last daemon that said it follows `runs_dir`, or None (no file, or not ours)."""
    return storage.read_json_or(runs_dir / PRESENCE_FILE, MAX_PRESENCE_BYTES, _presence, None)


def live_daemon(runs_dir: Path) -> DaemonPresence | None:
    """A daemon following `runs_dir` now, or None."""
    presence = read_presence(runs_dir)
    return presence if presence is not None and presence.is_live() else None


def remove_presence(runs_dir: Path) -> None:
    """Withdraw this process's presence on a clean exit; another daemon's is left alone."""
    presence = read_presence(runs_dir)
    if presence is None or (presence.host, presence.pid) != (socket.gethostname(), os.getpid()):
        return
    try:
        with storage.opened_dir(runs_dir) as runs_fd:
            storage.remove_at(PRESENCE_FILE, runs_fd)
    except OSError as exc:
        logger.warning("cannot remove %s: %s", runs_dir / PRESENCE_FILE, exc)


def _presence(doc: Any) -> DaemonPresence:
    pid = doc["pid"]
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise TypeError("pid")
    presence = DaemonPresence(str(doc["host"]), pid, str(doc["heartbeat_at"]))
    parse_time(presence.heartbeat_at)  # ValueError: read as no presence
    return presence
