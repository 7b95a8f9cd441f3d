"""A local mirror of the runs under an `s3://` prefix, so that the daemon, the renderer and the
sources read runs on an object store exactly as they read a disk, and never learn the difference.

There is no inotify on a store: the mirror polls. One poll is one recursive listing of the
prefix (a LIST request per 1,000 objects); each object's size and time of last write, which the
listing returns anyway, decide whether it changed, so an unchanged run costs no request of its
own. Changed objects are downloaded whole into a temp file, given the object's time, and moved
into place: the daemon's inotify watch sees the move, and the inputs' fingerprint (names, sizes,
times) is the same on every daemon's mirror, so a render marker made by one daemon is valid
for all. Objects gone from the store are removed from the mirror; nothing else is.

What was fetched is kept in the mirror folder (mirrorstate.py): a restarted daemon lists the
prefix once and fetches only what changed since it stopped, or what was changed or removed
in the mirror meanwhile (each kept entry is checked against its local copy at the start).

After a render, the report folder is uploaded beside the run, its render marker last, so a
reader that sees the marker finds the whole report.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import s3
from .local import (
    MAX_SHARD_BYTES,
    atomic_file,
    made_beneath,
    opened_beneath,
    read_bytes,
    remove_at,
    remove_empty_at,
)
from .mirrorstate import STATE_FILE, Entry, MirrorState, Stamp

logger = logging.getLogger(__name__)

FETCHERS = 16  # objects downloaded at once
NAMED_FAILURES = 5  # objects newly failing that a poll names in the log; the rest counted
UNCHECKED: Stamp = (-1, -1)  # a kept entry whose local copy is not what was fetched


class Remote(Protocol):
    """What the daemon tells the store its runs live on, if any."""

    def claim(self, run: str) -> bool:
        """Whether this daemon may render `run` now (no other daemon is rendering it)."""

    def rendered(self, run: str, report: Path) -> None:
        """`run`'s report folder `report` is new: send it where the run lives."""


class Claims(Protocol):
    def claim(self, run: str) -> bool:
        """Whether this process may render `run` now."""


class NoRemote:
    """Runs on a filesystem: the render lock in the run's folder keeps daemons apart."""

    def claim(self, run: str) -> bool:
        return True

    def rendered(self, run: str, report: Path) -> None:
        return None


@dataclass(frozen=True)
class MirrorRules:
    """Which objects are copied down and which report files go back. The run format's names
    are runformat's to know, so the caller says."""

    wanted: Callable[[tuple[str, ...]], bool]  # an object's path under the prefix, in parts
    report_dir: str  # a run's report folder
    report_last: str  # in it: the file uploaded after all others (the render marker)


@dataclass
class SyncResult:
    listed: int = 0  # objects under the prefix: a LIST request per 1,000
    fetched: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0


class Mirror:
    """The runs under `url`, mirrored into the local folder `root` (the mirror's alone)."""

    def __init__(self, url: s3.StoreUrl, root: Path, rules: MirrorRules) -> None:
        self.url = url
        self.root = root
        self._rules = rules
        root.mkdir(parents=True, exist_ok=True)
        self._state = MirrorState(root)
        # object path under the prefix -> what was fetched; those since the last save
        self._seen: dict[str, Entry] = self._checked(self._state.load())
        self._unsaved: dict[str, Entry | None] = {}
        self._sent: dict[str, Stamp] = {}  # local report file -> its stamp when uploaded
        self._failing: set[str] = set()  # objects the last poll could not fetch (logged)
        self._lock = threading.Lock()  # sync (poller thread) against rendered (uploader thread)
        self._synced = False

    def sync(self) -> SyncResult:
        """One poll: list, fetch what changed, drop what is gone. A failed fetch is retried at
        the next poll; a failed listing raises OSError (the store is down: nothing is removed)."""
        started = time.monotonic()
        result = SyncResult()
        listed = [item for item in s3.listing(self.url, recursive=True) if item.is_file]
        result.listed = len(listed)  # objects: the folders pyarrow infers from keys are not
        prefix = f"{self.url.path}/"
        present: set[str] = set()
        changed: list[tuple[str, Stamp]] = []
        with self._lock:
            for item in listed:
                if not item.path.startswith(prefix):
                    continue
                name = item.path[len(prefix) :]
                parts = tuple(name.split("/"))
                if not self._wanted(parts):
                    continue
                present.add(name)
                stamp = (int(item.size or 0), int(item.mtime_ns or 0))
                seen = self._seen.get(name)
                if seen is None or seen.stored != stamp:
                    changed.append((name, stamp))
            # Requests to a store take milliseconds each, mostly waiting: a first start over
            # thousands of runs fetches them side by side.
            with ThreadPoolExecutor(FETCHERS) as pool:
                outcomes = list(pool.map(self._fetch, changed))
            failures: dict[str, OSError] = {}
            for (name, stamp), fetched in zip(changed, outcomes, strict=True):
                if isinstance(fetched, OSError):
                    failures[name] = fetched
                    continue
                self._record(name, Entry(stamp, fetched))
                result.fetched += 1
            result.failed = len(failures)
            self._log_failures(failures)
            for name in set(self._seen) - present:
                self._record(name, None)
                self._remove(name)
                result.removed += 1
            if not self._synced:
                self._synced = True
                self._forget_unsent_renders(present)
            if self._state.save(self._unsaved):
                self._unsaved.clear()
        result.seconds = time.monotonic() - started
        return result

    def _log_failures(self, failures: dict[str, OSError]) -> None:
        """Name the objects that could not be fetched, each once while it fails (a poll tries
        them again every --poll-interval) and a few at a time (a store that fails mid-sync
        fails thousands): the log of a daemon left running does not fill with one broken key."""
        new = [name for name in failures if name not in self._failing]
        for name in new[:NAMED_FAILURES]:
            logger.warning("%s: not mirrored: %s", self.url.child(name), failures[name])
        if len(new) > NAMED_FAILURES:
            logger.warning(
                "%s: %d more objects not mirrored; each is tried again at every poll",
                self.url,
                len(new) - NAMED_FAILURES,
            )
        self._failing = set(failures)

    def rendered(self, run: str, report: Path) -> bool:
        """Upload `report` (the run's report folder in the mirror) beside the run on the store,
        its marker last; what is unchanged since the last upload is not sent again. Whether
        all of it is there now: a failure is logged, and the caller tries again."""
        run = "" if run == "." else run  # the mirror's root is the run itself
        run_url = self.url.child(run) if run else self.url
        target = run_url.child(self._rules.report_dir)
        try:
            names = sorted(e.name for e in os.scandir(report) if e.is_file(follow_symlinks=False))
        except OSError as exc:
            logger.error("%s: report not uploaded: %s", target, exc)
            return False
        last = self._rules.report_last
        names = [name for name in names if name != last] + ([last] if last in names else [])
        with self._lock:
            for name in names:
                local = report / name
                try:
                    info = local.lstat()
                    stamp = (info.st_size, info.st_mtime_ns)
                    if self._sent.get(str(local)) == stamp:
                        continue
                    s3.put(target.child(name).path, read_bytes(local, MAX_SHARD_BYTES))
                    self._sent[str(local)] = stamp
                    # Sent by this mirror: the next poll must not fetch it back over the local copy.
                    uploaded = s3.info(target.child(name).path)
                    key = "/".join(filter(None, (run, self._rules.report_dir, name)))
                    if self._wanted(tuple(key.split("/"))):  # else never listed, nor removed
                        stored = (int(uploaded.size or 0), int(uploaded.mtime_ns or 0))
                        self._record(key, Entry(stored, stamp))
                except OSError as exc:
                    logger.error("%s: report not uploaded: %s", target.child(name), exc)
                    return False  # the marker is never sent without the files before it
        return True

    def _wanted(self, parts: tuple[str, ...]) -> bool:
        """Whether the object at `parts` is mirrored: the rules' choice, never a name that
        cannot be a file here nor the mirror's own state file."""
        if parts[0].startswith(STATE_FILE) or not self._rules.wanted(parts):
            return False  # the rules first: they turn down most of a listing (reports)
        return _plain(parts)

    def _record(self, name: str, entry: Entry | None) -> None:
        """What the mirror holds of `name` now (None: nothing), saved at the poll's end."""
        if entry is None:
            self._seen.pop(name, None)
        else:
            self._seen[name] = entry
        self._unsaved[name] = entry

    def _checked(self, kept: dict[str, Entry]) -> dict[str, Entry]:
        """The kept entries these rules mirror, each whose local copy is no longer what was
        fetched (changed, removed or replaced by something else) marked to be fetched again;
        one lstat each, no request."""
        checked: dict[str, Entry] = {}
        root = str(self.root)
        for name, entry in kept.items():
            parts = tuple(name.split("/"))
            if not self._wanted(parts):
                continue  # another command's on this folder (`serve` mirrors reports too)
            try:
                info = os.lstat(f"{root}/{name}")  # plain parts (`_wanted`): no `..`, no `//`
                local = (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None
            except OSError:
                local = None
            checked[name] = entry if local == entry.local else Entry(UNCHECKED, entry.local)
        return checked

    def _forget_unsent_renders(self, present: set[str]) -> None:
        """At the first sync, remove the render markers this mirror holds that the store does
        not (a daemon stopped before it uploaded them): the store is the truth, so those runs
        are rendered and sent again rather than taken as done."""
        root, report_dir = str(self.root), self._rules.report_dir
        for folder, _, files in os.walk(root):  # links to folders are not entered
            if os.path.basename(folder) != report_dir or self._rules.report_last not in files:
                continue
            name = f"{folder[len(root) + 1 :]}/{self._rules.report_last}"  # under root
            if name not in present:
                logger.info("%s: its report never reached the store; rendering it again", name)
                self._remove(name, prune=False)

    def _fetch(self, change: tuple[str, Stamp]) -> Stamp | OSError:
        """Download one object whole into a temp file given the object's time, moved into
        place (storage's `atomic_file`, in folders made and opened without following a link);
        the local copy's stamp, or the error if it failed."""
        name, (_, written) = change
        *folders, file_name = name.split("/")
        try:
            data = s3.get(self.url.child(name).path, MAX_SHARD_BYTES)
            with (
                made_beneath(self.root, folders) as fd,
                atomic_file(Path(file_name), dir_fd=fd) as handle,
            ):
                handle.write(data)
                handle.flush()  # else the buffered write lands after the time is set
                os.utime(handle.fileno(), ns=(written, written))
        except OSError as exc:
            return exc
        return (len(data), written)

    def _remove(self, name: str, prune: bool = True) -> None:
        """Remove a fetched file gone from the store and, with `prune`, the folders it leaves
        empty; each folder is opened without following a link."""
        *folders, file_name = name.split("/")
        try:
            with opened_beneath(self.root, folders) as fd:
                remove_at(file_name, fd)
            while prune and folders:
                last = folders.pop()
                with opened_beneath(self.root, folders) as fd:
                    if not remove_empty_at(last, fd):
                        return
        except OSError:
            return  # gone already, or no longer a plain folder: left alone


class StoreRemote:
    """Runs on an object store: a lease per run keeps daemons apart, and reports go back beside
    the run (`publish`) or stay where the daemon's --output puts them.

    Uploads are a thread's work, never the daemon loop's: a store that hangs holds up reports,
    not renders or the systemd watchdog. A report that could not be sent is tried again every
    `retry` seconds until it is."""

    def __init__(self, mirror: Mirror, leases: Claims, publish: bool, retry: float) -> None:
        self._mirror = mirror
        self._leases = leases
        self._publish = publish
        self._retry = retry
        self._pending: dict[str, Path] = {}  # run -> its report folder, not yet on the store
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._upload, name="lossreport-uploader")
        self._thread.daemon = True
        if publish:
            self._thread.start()

    def claim(self, run: str) -> bool:
        return self._leases.claim(run)

    def rendered(self, run: str, report: Path) -> None:
        if self._publish:
            with self._lock:
                self._pending[run] = report
            self._wake.set()

    def close(self, timeout: float) -> None:
        """Send what is pending, waiting at most `timeout` seconds."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._pending:
            logger.error(
                "%d reports not sent to the store; they are sent when the daemon starts again",
                len(self._pending),
                extra={"event": "reports_unsent"},
            )

    def _upload(self) -> None:
        while True:
            self._wake.wait(self._retry)
            self._wake.clear()
            with self._lock:
                pending = list(self._pending.items())
            for run, report in pending:
                if self._mirror.rendered(run, report):
                    with self._lock:
                        if self._pending.get(run) == report:
                            del self._pending[run]
            if self._stopping.is_set():
                return


_NOT_NAMES = frozenset(("", ".", ".."))


def _plain(parts: tuple[str, ...]) -> bool:
    """Whether each key part can be a file name here: S3 keys may hold `..`, empty parts or
    NULs, and parts longer than a file name (255 bytes; 63 characters are at most 252)."""
    return (
        _NOT_NAMES.isdisjoint(parts)
        and not any("\0" in part for part in parts)
        and all(len(part) <= 63 or len(part.encode()) <= 255 for part in parts)
    )
