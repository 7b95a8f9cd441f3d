"""The persisted outbox: a run's email survives an SMTP outage and a daemon restart, and goes
out once.

A render worker writes each message, whole, to `RUNS/.lossreport/outbox/` before the render is
recorded as done, so no crash can lose it. The daemon's sender thread hands each message to
the SMTP server, records its key in the run's `.lossreport-mailed.json`, then removes it from
the outbox; a message whose key is already recorded is never sent again. The one window left
is a crash between the server's acceptance and that record: the message would be resent with
the same Message-ID, which mail clients use to drop duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from . import rundir, smtp, storage
from .errors import RunBusy
from .message import HEADER_KEY, HEADER_RUN, MAIL_POLICY

logger = logging.getLogger(__name__)

OUTBOX_DIR = Path(".lossreport") / "outbox"
SENT_FILE = ".lossreport-mailed.json"
MAX_RETRY_SECONDS = 3600.0
MAX_MESSAGE_BYTES = 64 * 2**20  # a message is a few KB, plus the CSV (left out past 10 MB)


class Outbox:
    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.folder = runs_dir / OUTBOX_DIR

    def wants(self, run_name: str, key: str) -> bool:
        """Whether a message with `key` is neither sent nor queued: asked before building one."""
        return key not in sent_keys(self.runs_dir / run_name) and not self._path(key).exists()

    def add(self, message: EmailMessage) -> Path:
        """Queue `message` (written whole); returns its file."""
        storage.make_dir(self.folder.parent)  # refuses a symlink: the outbox is never followed
        storage.make_dir(self.folder)
        path = self._path(str(message[HEADER_KEY]))
        storage.atomic_write(path, message.as_bytes())
        return path

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.eml"

    def pending(self) -> list[Path]:
        """Queued messages, oldest first: regular files this user wrote. Anything else in the
        folder (another user's file, a link) is never sent: the runs tree is shared."""
        if not storage.is_real_dir(self.folder):
            return []
        try:
            with os.scandir(self.folder) as found:
                entries = [(e, e.stat(follow_symlinks=False)) for e in found if _is_message(e.name)]
        except OSError:
            return []
        ours = [(e, info) for e, info in entries if _ours(info)]
        return [Path(e.path) for e, info in sorted(ours, key=lambda pair: pair[1].st_mtime_ns)]

    def deliver(self, path: Path, settings: smtp.SmtpSettings) -> str | None:
        """Send one queued message; returns its run's name, or None if it was not ours to send
        (another daemon holds it, or it was sent already). Raises MailError, leaving it queued."""
        try:
            with storage.exclusive_lock(path, wait=False, create=False):
                if not path.exists():  # another daemon delivered it while we waited
                    return None
                data = storage.read_bytes(path, MAX_MESSAGE_BYTES)
                message = BytesParser(policy=MAIL_POLICY).parsebytes(data)
                key, run_name = str(message[HEADER_KEY]), str(message[HEADER_RUN])
                if not rundir.is_run_name(run_name):
                    raise smtp.MailError(f"{path}: names no run of {self.runs_dir}; not sent")
                run_dir = self.runs_dir / run_name
                sent = key not in sent_keys(run_dir)
                if sent:
                    smtp.send(settings, message)
                    _record_sent(run_dir, key, str(message["Message-ID"]), str(message["To"]))
                path.unlink(missing_ok=True)
                return run_name if sent else None
        except (FileNotFoundError, RunBusy):
            return None


def _read_sent(run_dir: Path) -> list[dict[str, object]]:
    """The run's record of sent mail; empty when it is missing, unreadable or not ours."""
    try:
        document = json.loads(storage.read_bytes(run_dir / SENT_FILE, storage.MAX_RUN_FILE_BYTES))
        return [dict(entry) for entry in document["sent"]]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []


def sent_keys(run_dir: Path) -> set[str]:
    return {str(entry.get("key")) for entry in _read_sent(run_dir)}


def _record_sent(run_dir: Path, key: str, message_id: str, recipients: str) -> None:
    path = run_dir / SENT_FILE
    sent = _read_sent(run_dir)
    sent.append(
        {
            "key": key,
            "message_id": message_id,
            "to": recipients,
            "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    try:
        storage.atomic_write(path, json.dumps({"sent": sent}, indent=1).encode())
    except OSError as exc:  # the run was deleted or made read-only: the mail went out anyway
        logger.warning("cannot record the sent mail in %s: %s", path, exc)


def _ours(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _is_message(name: str) -> bool:
    return name.endswith(".eml") and not name.startswith(".")


@dataclass
class _Backoff:
    attempts: int = 0
    due: float = 0.0


@dataclass
class OutboxSender:
    """Delivers queued messages from a thread of the daemon, retrying failures with backoff
    (first_retry, doubling, at most an hour) for as long as the daemon runs."""

    outbox: Outbox
    settings: smtp.SmtpSettings
    first_retry: float = 30.0
    _backoff: dict[Path, _Backoff] = field(default_factory=dict)
    _wakeup: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lossreport-mail", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=smtp.TIMEOUT_SECONDS + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.clear()
            self.send_due()
            dues = [b.due for b in self._backoff.values()]
            wait = max(0.05, min(dues) - time.monotonic()) if dues else None
            self._wakeup.wait(wait)

    def send_due(self) -> int:
        """Try every queued message that is due; returns how many stay queued after failing."""
        failed = 0
        pending = self.outbox.pending()
        for gone in self._backoff.keys() - set(pending):
            del self._backoff[gone]
        for path in pending:
            if self._stop.is_set():
                break
            backoff = self._backoff.setdefault(path, _Backoff())
            if backoff.due > time.monotonic():
                failed += 1
                continue
            try:
                run_name = self.outbox.deliver(path, self.settings)
                self._backoff.pop(path, None)
                if run_name is not None:
                    logger.info(
                        "run=%s mailed", run_name, extra={"run": run_name, "event": "mail_sent"}
                    )
            except smtp.MailError as exc:
                failed += 1
                backoff.attempts += 1
                delay = min(MAX_RETRY_SECONDS, self.first_retry * 2 ** (backoff.attempts - 1))
                backoff.due = time.monotonic() + delay
                logger.error(
                    "mail %s not sent (attempt %d, retry in %.0fs): %s",
                    path.name,
                    backoff.attempts,
                    delay,
                    exc,
                    extra={"event": "mail_failed", "attempt": backoff.attempts},
                )
        return failed
