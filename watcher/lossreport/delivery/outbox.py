"""The persisted outbox: a run's email, and an alert's email or webhook post, survives an SMTP
or webhook outage and a daemon restart, and goes out once.

A render worker (or the daemon, for an alert) writes each message, whole, to
`RUNS/.lossreport/outbox/` (`KEY.eml`, or `KEY.post.json` for a webhook post) before the render
or alert is recorded as done, so no crash can lose it. The daemon's sender threads, one per
destination, hand each message to the SMTP server (or the webhook) within a total deadline,
record its key in the run's `.lossreport-mailed.json`, then remove it from the outbox; a
message whose key is already recorded is never sent again. The one window left is a crash
between the server's acceptance and that record: the message would be resent (a mail with the
same Message-ID, which mail clients use to drop duplicates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from .. import runformat, storage
from ..backoff import Backoff
from ..clock import utc_now
from ..errors import LossReportError, MailError, RunBusy, UnsafePathError, WebhookError
from ..runformat import OUTBOX_DIR, SENT_FILE, Homes
from . import smtp, webhook
from .message import HEADER_KEY, HEADER_RUN, MAIL_POLICY

logger = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 3600.0
MAX_MESSAGE_BYTES = 64 * 2**20  # a message is a few KB, plus the CSV (left out past 10 MB)
MESSAGE_SUFFIX, POST_SUFFIX = ".eml", ".post.json"


@dataclass(frozen=True)
class Senders:
    """How each kind of queued item goes out: SMTP for mail, and the webhook if one is set."""

    smtp: smtp.SmtpSettings
    webhook: webhook.WebhookSettings | None = None


class Outbox:
    """The queue folder, `RUNS/.lossreport/outbox/`. The runs directory is shared, so the
    folder must be this user's (made 0700), and only regular files this user wrote in it are
    ever sent: nobody else can queue mail through the daemon's SMTP login."""

    def __init__(self, homes: Homes) -> None:
        self.homes = homes
        self.folder = homes.state_dir / OUTBOX_DIR

    def wants(self, run_name: str, key: str, suffix: str = MESSAGE_SUFFIX) -> bool:
        """Whether an item with `key` is neither sent nor queued: asked before building one."""
        return key not in sent_keys(self.homes.home_of(run_name)) and not storage.lexists(
            self._path(key, suffix)
        )

    def add(self, message: EmailMessage) -> Path:
        """Queue `message` (written whole); returns its file."""
        return self._write(self._path(str(message[HEADER_KEY])), message.as_bytes())

    def add_post(self, key: str, run_name: str, payload: dict[str, Any]) -> Path:
        """Queue a webhook post of `payload` for run `run_name`, sent once per `key`."""
        document = {"key": key, "run": run_name, "payload": payload}
        return self._write(self._path(key, POST_SUFFIX), json.dumps(document).encode())

    def _write(self, path: Path, data: bytes) -> Path:
        storage.make_dir(self.folder.parent, 0o700)  # refuses a link: never followed
        storage.make_dir(self.folder, 0o700)
        with self._opened() as folder:
            storage.atomic_write(path, data, dir_fd=folder)
        return path

    def _path(self, key: str, suffix: str = MESSAGE_SUFFIX) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}{suffix}"

    @contextmanager
    def _opened(self) -> Iterator[int]:
        """A descriptor of the outbox folder, checked to be this user's (UnsafePathError)."""
        with storage.opened_dir(self.folder.parent) as parent:
            _check_ours(self.folder.parent, parent)
            with storage.opened_dir(self.folder, dir_fd=parent) as folder:
                _check_ours(self.folder, folder)
                yield folder

    def pending(self) -> list[Path]:
        """Queued messages, oldest first: regular files this user wrote. Anything else in the
        folder (another user's file, a link) is never sent."""
        try:
            with self._opened() as folder, os.scandir(folder) as found:
                entries = [
                    (e.name, e.stat(follow_symlinks=False)) for e in found if _is_message(e.name)
                ]
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.error("cannot read the outbox %s: %s", self.folder, exc)
            return []
        ours = sorted((info.st_mtime_ns, name) for name, info in entries if _ours(info))
        return [self.folder / name for _, name in ours]

    def deliver(self, path: Path, senders: Senders) -> str | None:
        """Send one queued item; returns its run's name, or None if it was not ours to send
        (another daemon holds it, or it was sent already). Raises MailError or WebhookError,
        leaving it queued, and UnsafePathError for an item that is not this user's regular
        file."""
        with self._opened() as folder:
            try:
                with storage.exclusive_lock(path, wait=0, create=False, dir_fd=folder) as fd:
                    return self._deliver_held(path, folder, fd, senders)
            except (FileNotFoundError, RunBusy):
                return None  # delivered meanwhile, or another daemon is at it

    def _deliver_held(self, path: Path, folder: int, fd: int, senders: Senders) -> str | None:
        info = os.fstat(fd)
        if not _ours(info):
            raise UnsafePathError(path, "is not a file this user queued; not sent")
        current = os.lstat(path.name, dir_fd=folder)
        if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
            return None  # replaced meanwhile: the next pass looks at the new file
        data = storage.read_descriptor(fd, path, MAX_MESSAGE_BYTES)
        if path.name.endswith(POST_SUFFIX):
            return self._post(path, folder, data, senders.webhook)
        message = BytesParser(policy=MAIL_POLICY).parsebytes(data)
        key, run_name = str(message[HEADER_KEY]), str(message[HEADER_RUN])
        run_dir = self._run_dir(path, run_name)
        sent = key not in sent_keys(run_dir)
        if sent:
            smtp.send(senders.smtp, message)
            _record_sent(run_dir, key, str(message["Message-ID"]), str(message["To"]))
        storage.remove_at(path.name, folder)
        return run_name if sent else None

    def _post(
        self, path: Path, folder: int, data: bytes, settings: webhook.WebhookSettings | None
    ) -> str | None:
        try:
            document = json.loads(data)
            key, run_name, payload = document["key"], document["run"], dict(document["payload"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookError(f"{path}: not a queued webhook post ({exc}); not sent") from None
        if settings is None:
            raise WebhookError(f"{path}: queued for a webhook, but none is set (--alert-webhook)")
        run_dir = self._run_dir(path, str(run_name))
        sent = str(key) not in sent_keys(run_dir)
        if sent:
            webhook.post(settings, payload)
            _record_sent(run_dir, str(key), "", settings.where)
        storage.remove_at(path.name, folder)
        return str(run_name) if sent else None

    def describe(self, path: Path) -> tuple[str | None, str]:
        """A queued item's run, and what it is for a log line (`run=RUN alert RULE (webhook
        post)`, `run=RUN mail "SUBJECT"`); its file's name when it cannot be read."""
        try:
            data = storage.read_bytes(path, MAX_MESSAGE_BYTES)
            if path.name.endswith(POST_SUFFIX):
                document = json.loads(data)
                run_name, rule = str(document["run"]), str(document["payload"]["rule"])
                return run_name, f"run={run_name} alert {rule} (webhook post)"
            message = BytesParser(policy=MAIL_POLICY).parsebytes(data, headersonly=True)
            run_name = str(message[HEADER_RUN])
            return run_name, f"run={run_name} mail {str(message['Subject'])!r}"
        except (OSError, ValueError, KeyError, TypeError):
            return None, path.name

    def _run_dir(self, path: Path, run_name: str) -> Path:
        """The home of the run an item names, where its record of sent items is kept."""
        if not runformat.is_run_name(run_name):
            raise MailError(f"{path}: names no run of {self.homes.runs_dir}; not sent")
        return self.homes.home_of(run_name)


def _check_ours(path: Path, fd: int) -> None:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise UnsafePathError(path, f"belongs to uid {info.st_uid}, not this user; not used")


def _read_sent(run_dir: Path) -> list[dict[str, object]]:
    """The run's record of sent mail; empty when it is missing, unreadable or not ours."""
    return storage.read_json_or(run_dir / SENT_FILE, storage.MAX_RUN_FILE_BYTES, _sent, [])


def _sent(document: Any) -> list[dict[str, object]]:
    return [dict(entry) for entry in document["sent"]]


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
            "sent_at": utc_now("seconds"),
        }
    )
    try:
        storage.atomic_write(path, json.dumps({"sent": sent}, indent=1).encode())
    except OSError as exc:  # the run was deleted or made read-only: the mail went out anyway
        logger.warning("cannot record the sent mail in %s: %s", path, exc)


def _ours(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _is_message(name: str) -> bool:
    return name.endswith((MESSAGE_SUFFIX, POST_SUFFIX)) and not name.startswith(".")


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0


@dataclass
class _Lane:
    """One destination's share of the outbox (its kind of item), sent by a thread of its own:
    a slow SMTP server delays only mail, a slow webhook only its posts."""

    suffix: str
    destination: str  # for logs: the SMTP server, or the webhook without its path
    deadline: float  # the longest one delivery takes
    retries: dict[Path, _Retry] = field(default_factory=dict)
    wakeup: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass
class OutboxSender:
    """Delivers queued messages from threads of the daemon, one per destination (the SMTP
    server, the webhook), retrying failures with backoff (first_retry, doubling, at most an
    hour) for as long as the daemon runs. Each delivery has a total deadline
    (smtp.SmtpSettings.deadline, webhook.WebhookSettings.deadline): a destination that
    trickles its answer fails within it and is retried like one that is down."""

    outbox: Outbox
    senders: Senders
    first_retry: float = 30.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _delays: Backoff = field(init=False, repr=False)
    _lanes: tuple[_Lane, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._delays = Backoff(self.first_retry, max(self.first_retry, MAX_RETRY_SECONDS))
        hook = self.senders.webhook
        self._lanes = (
            _Lane(MESSAGE_SUFFIX, f"smtp {self.senders.smtp.where}", self.senders.smtp.deadline),
            _Lane(
                POST_SUFFIX,
                "webhook " + (hook.where if hook else "(none set)"),
                hook.deadline if hook else 0.0,
            ),
        )

    def start(self) -> None:
        for lane in self._lanes:
            name = "lossreport-mail" if lane.suffix == MESSAGE_SUFFIX else "lossreport-webhook"
            lane.thread = threading.Thread(target=self._run, args=(lane,), name=name, daemon=True)
            lane.thread.start()

    def wake(self) -> None:
        for lane in self._lanes:
            lane.wakeup.set()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout=lane.deadline + 5)

    def _run(self, lane: _Lane) -> None:
        while not self._stop.is_set():
            lane.wakeup.clear()
            try:
                self._send_due(lane)
            except Exception:  # the outbox folder itself broke: keep the thread, try again
                logger.exception("the %s sender hit an error; trying again later", lane.destination)
                lane.wakeup.wait(self.first_retry)
            dues = [retry.due for retry in lane.retries.values()]
            wait = max(0.05, min(dues) - time.monotonic()) if dues else None
            lane.wakeup.wait(wait)

    def send_due(self) -> int:
        """Try every queued message that is due, one destination after the other (`--once`);
        returns how many stay queued after failing."""
        return sum(self._send_due(lane) for lane in self._lanes)

    def _send_due(self, lane: _Lane) -> int:
        failed = 0
        pending = [path for path in self.outbox.pending() if path.name.endswith(lane.suffix)]
        for gone in lane.retries.keys() - set(pending):
            del lane.retries[gone]
        for path in pending:
            if self._stop.is_set():
                break
            retry = lane.retries.setdefault(path, _Retry())
            if retry.due > time.monotonic():
                failed += 1
                continue
            try:
                run_name = self.outbox.deliver(path, self.senders)
                lane.retries.pop(path, None)
                if run_name is not None:
                    posted = lane.suffix == POST_SUFFIX
                    logger.info(
                        "run=%s %s",
                        run_name,
                        "alert posted" if posted else "mailed",
                        extra={"run": run_name, "event": "posted" if posted else "mail_sent"},
                    )
            except Exception as exc:  # the destination, or a broken file: this message waits
                failed += 1
                retry.attempts += 1
                delay = self._delays.delay(retry.attempts)
                retry.due = time.monotonic() + delay
                run_name, what = self.outbox.describe(path)
                logger.error(
                    "%s not sent (attempt %d, retry in %.0fs): %s",  # the error names where
                    what,
                    retry.attempts,
                    delay,
                    exc if isinstance(exc, LossReportError) else f"{type(exc).__name__}: {exc}",
                    extra={
                        "event": "mail_failed",
                        "attempt": retry.attempts,
                        "run": run_name,
                        "destination": lane.destination,
                    },
                )
        return failed
