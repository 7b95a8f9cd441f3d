"""The daemon's presence file: what makes a daemon count as live for a closing trainer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from lossreport import runformat
from lossreport.clock import utc_time
from lossreport.runformat import presence
from tests.support.deadline import fails_if_blocked


def _claim(runs_dir: Path, *, host: str, pid: int, age: float) -> None:
    beat = (utc_time() - timedelta(seconds=age)).isoformat(timespec="milliseconds")
    doc = {"host": host, "pid": pid, "heartbeat_at": beat}
    (runs_dir / runformat.PRESENCE_FILE).write_text(json.dumps(doc))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_fresh_heartbeat_from_a_live_process_counts(runs_dir: Path) -> None:
    presence.write_presence(runs_dir)
    live = runformat.live_daemon(runs_dir)
    assert live is not None and (live.host, live.pid) == (socket.gethostname(), os.getpid())


def test_another_hosts_fresh_heartbeat_counts_as_its_pid_cannot_be_checked(runs_dir: Path) -> None:
    _claim(runs_dir, host="gpu-node-17", pid=_dead_pid(), age=5)
    assert runformat.live_daemon(runs_dir) is not None


def test_an_old_heartbeat_a_dead_pid_or_a_future_heartbeat_does_not_count(runs_dir: Path) -> None:
    here = socket.gethostname()
    _claim(runs_dir, host="gpu-node-17", pid=os.getpid(), age=presence.LIVE_SECS + 1)
    assert runformat.live_daemon(runs_dir) is None
    _claim(runs_dir, host=here, pid=_dead_pid(), age=0)
    assert runformat.live_daemon(runs_dir) is None
    _claim(runs_dir, host=here, pid=os.getpid(), age=-3600)  # an hour ahead: forged or broken
    assert runformat.live_daemon(runs_dir) is None


def test_anything_but_our_document_reads_as_no_daemon_without_blocking(
    runs_dir: Path, tmp_path: Path
) -> None:
    path = runs_dir / runformat.PRESENCE_FILE
    for content in ("", "not json", "[]", '{"host": "h", "pid": "1", "heartbeat_at": "now"}'):
        path.write_text(content)
        assert runformat.live_daemon(runs_dir) is None, content
    path.write_text(" " * (presence.MAX_PRESENCE_BYTES + 1))
    assert runformat.live_daemon(runs_dir) is None
    path.unlink()
    os.mkfifo(path)  # opening it for reading would block for ever
    with fails_if_blocked(10):
        assert runformat.live_daemon(runs_dir) is None
    path.unlink()
    dummy = tmp_path / "dummy.json"
    presence.write_presence(tmp_path)
    (tmp_path / runformat.PRESENCE_FILE).rename(dummy)
    path.symlink_to(dummy)  # a valid document, but through a link: not followed
    assert runformat.live_daemon(runs_dir) is None


def test_a_daemon_withdraws_only_its_own_presence(runs_dir: Path) -> None:
    _claim(runs_dir, host="gpu-node-17", pid=1234, age=0)
    presence.remove_presence(runs_dir)
    assert (runs_dir / runformat.PRESENCE_FILE).exists()  # another daemon's: left alone
    presence.write_presence(runs_dir)
    presence.remove_presence(runs_dir)
    assert not (runs_dir / runformat.PRESENCE_FILE).exists()
