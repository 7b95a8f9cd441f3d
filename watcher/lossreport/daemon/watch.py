"""`lossreport watch`: the daemon that renders each run once it completes, fails or stalls.

One main thread owns all state. The filesystem observer's handler only turns an event into a
run name on a queue (an exception there would kill watchdog's dispatcher), the schedule of
when to look at which run is `scheduler.Scheduler`'s (pure, so tested without a daemon), and
renders happen in warm worker processes (workers.py), one run each at a time, so that a worker
that dies costs only the run it held; runs wait their turn in order. A full scan at start and every
`rescan_every` seconds reconciles with the markers earlier renders left, which covers lost
events, restarts and runs that finished while the daemon was down; an inotify overflow (events
known to be lost) brings a full scan at once. inotify watches only the runs directory and the
top-level folders that may still change (`_saw_running`): finished runs are the scans'.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

from .. import runformat, sources, storage
from ..clock import utc_time
from ..delivery.alerting import AlertTarget
from ..delivery.outbox import Outbox, OutboxSender, Senders
from ..delivery.smtp import SmtpSettings
from ..errors import RenderWorkerDied, RunBusy, RunDirectoryError
from ..runformat import Homes, RenderedMarker, presence, read_marker
from . import prefetch, seen
from .alerting import LIVE_SOURCES, Alerter
from .crashes import Crashes
from .jobs import render_job
from .listing import Listing
from .netfs import filesystem_type, is_network_filesystem
from .options import WatchOptions as WatchOptions  # where it was, for callers
from .runstate import RunState, as_rendered, once_left, read_state, render_reason
from .scheduler import RenderQueue, Scheduler
from .sdnotify import Notifier
from .workers import EXIT_WAIT_SECONDS, Result, Workers

logger = logging.getLogger(__name__)

# Only what a writer's rename or close-after-write produces. Above all not opened/closed-no-write:
# the daemon's own reads would flood the inotify queue, and on overflow watchdog re-walks the
# whole tree, which reads directories, which overflows it again.
WATCHED_EVENTS = [
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
    EventsLostEvent,  # inotify's queue overflowed: events were lost, so the tree is scanned
]
LOST = ()  # on the events queue: events were lost (the runs directory's own parts)
INDEX_EVERY_SECONDS = 1.0
# A run found rendered in one of these is settled until its inputs or its marker change.
SETTLED_STATUSES = frozenset({runformat.COMPLETED, runformat.FAILED, runformat.STALLED})


@dataclass(frozen=True)
class _Queued:
    """A render decided on, waiting for a free worker."""

    job: Callable[..., Result]  # render_job with its arguments; quick=True for the quick report
    fingerprint: str
    reason: str


@dataclass(frozen=True)
class _Render:
    future: Future[Result]
    queued: _Queued  # what it does, queued again for the charts after a quick report
    worker: int  # the pid of the worker rendering it
    quick: bool  # the quick report only (scheduler.RenderQueue)


class Watcher:
    def __init__(
        self,
        runs_dir: Path,
        options: WatchOptions,
        stop: threading.Event | None = None,
        remote: storage.mirror.Remote | None = None,
    ) -> None:
        """`remote`: where the runs really live when `runs_dir` mirrors an object store."""
        if not runs_dir.is_dir():
            raise RunDirectoryError(runs_dir, "is not a directory")
        self.runs_dir = runs_dir.resolve()  # /data/runs -> /lustre/...: links inside are not
        self._runs_root = os.fspath(self.runs_dir)
        self.options = options
        output = options.output.resolve() if options.output is not None else None
        if output is not None and not storage.is_real_dir(output):
            raise RunDirectoryError(output, "is not a directory (--output)")
        # On a store, `runs_dir` is the mirror's cache: --output gets every report, not some.
        self.homes = Homes(self.runs_dir, output, every_run_to_output=remote is not None)
        self.stop = stop or threading.Event()
        self._remote = remote or storage.mirror.NoRemote()
        self._wakeup = threading.Event()
        self._events: queue.SimpleQueue[tuple[str, ...]] = queue.SimpleQueue()
        self._known: set[str] = set()  # the runs found so far, by key (their path under runs_dir)
        self._schedule = Scheduler(
            debounce=options.debounce,
            live_every=options.live_every,
            health_every=options.health_every,
        )
        self._queued: RenderQueue[_Queued] = RenderQueue()
        self._in_flight: dict[str, _Render] = {}
        self._workers = Workers(options.workers)
        self._crashes = Crashes()
        self._stopping = False
        self._listing = Listing(self.homes, options.catalog)
        self._failures = 0
        self._notifier = Notifier()
        self._observer: BaseObserver | None = None
        self._polling = False  # the observer walks the whole tree itself
        self._handler = _EventsToRuns(self.runs_dir, self._events, self._wakeup)
        self._watches: dict[str, ObservedWatch] = {}  # top-level folders followed, by name
        self._settled: set[str] = set()  # top-level runs left to the scans: _saw_running
        self._events_lost = 0  # times inotify's queue overflowed
        self._read = 0  # full looks at runs (their run.json and marker read): seen.py
        self._last_render: float | None = None
        self._advertised = self._presence_failed = False
        self._mailed: dict[str, str] = {}  # run -> the inputs whose email is sent or queued
        self._sender: OutboxSender | None = None
        if options.mail is not None or options.webhook is not None:
            senders = Senders(options.smtp or SmtpSettings(), options.webhook)
            self._sender = OutboxSender(Outbox(self.homes), senders, options.mail_retry)
        if options.stale_after < 2 * runformat.IDLE_HEARTBEAT_SECS:
            logger.warning(
                "--stale-after %.0fs is under twice the %.0f s in which an idle trainer "
                "refreshes its heartbeat: live trainers with nothing to write will be reported "
                "as stalled",
                options.stale_after,
                runformat.IDLE_HEARTBEAT_SECS,
                extra={"event": "short_stale_after"},
            )
        self._alerter: Alerter | None = None
        if options.alerts and not options.once:  # alerts are for runs that train, not cron
            target = AlertTarget(options.mail, options.webhook is not None, options.report_url)
            self._alerter = Alerter(self.homes, options.alert_rules, target, self._mail_queued)

    def run(self) -> int:
        """Watch until `stop` is set (or, with `once`, until nothing is pending)."""
        threading.Thread(target=self._wake_on_stop, name="lossreport-stop", daemon=True).start()
        try:
            if self._sender is not None and not self.options.once:
                self._sender.start()  # first, what a previous daemon left in the outbox
            # What is made by now (modules, settings: 80,000 objects) is kept for the daemon's
            # life: out of the cycle collector's sight, which otherwise goes through it all
            # again at each full collection while a scan makes every run's small objects.
            gc.freeze()
            started = time.monotonic()
            count = self._scan()
            logger.info(
                "scanned %d runs in %.2fs, %d read (the others unchanged since a look found "
                "them settled), %d to render",
                count,
                time.monotonic() - started,
                self._read,
                len(self._in_flight) + len(self._queued),
                extra={"event": "scan", "runs": count, "read": self._read},
            )
            if self.options.once:
                return self._finish_once()
            self._start_observer()
            self._advertise()
            self._notifier.notify("READY=1\nSTATUS=watching " + str(self.runs_dir))
            self._loop()
            return 0
        finally:
            self._notifier.notify("STOPPING=1")
            self._shutdown()

    def _wake_on_stop(self) -> None:
        """The loop sleeps until its next deadline (seconds away): `stop` ends that sleep."""
        self.stop.wait()
        self._wakeup.set()

    def _refresh_idle_workers(self, now: float) -> None:
        """Give back the memory used workers hold: one fresh warm worker waits instead."""
        if self._in_flight or self._queued or self._last_render is None:
            return
        if now - self._last_render < self.options.idle_restart:
            return
        self._last_render = None
        try:
            self._workers.refresh()
        except OSError as exc:  # no process could be started: the next render starts one
            logger.warning(
                "cannot start a fresh render worker: %s", exc, extra={"event": "worker_failed"}
            )
            return
        logger.info("replaced idle render workers", extra={"event": "workers_refreshed"})

    # -- the main loop ------------------------------------------------------------------
    def _loop(self) -> None:
        now = time.monotonic()
        next_rescan = now + self.options.rescan_every
        next_ping = now
        next_presence = now + presence.HEARTBEAT_SECS
        while not self.stop.is_set():
            self._wakeup.clear()
            now = time.monotonic()
            self._drain_events(now)
            self._collect_finished()
            self._refresh_idle_workers(now)
            for name in self._schedule.due(now):
                self._look(name)
            if self._schedule.health_check(now):  # running runs are due again: they may stall
                self._check_observer()
            self._schedule.tail_check(now)
            if now >= next_rescan:
                self._scan()
                next_rescan = now + self.options.rescan_every
            if self._notifier.watchdog_interval and now >= next_ping:
                self._notifier.notify("WATCHDOG=1")
                next_ping = now + self._notifier.watchdog_interval
            if now >= next_presence:
                self._advertise()
                self._listing.retry()  # rows a catalog server down could not take
                next_presence = now + presence.HEARTBEAT_SECS
            self._dispatch()
            self._write_index_if_due(now)
            deadlines = [self._schedule.sleep_time(now), next_presence - now, next_rescan - now]
            if self._notifier.watchdog_interval:  # systemd restarts a daemon that pings late
                deadlines.append(next_ping - now)
            self._wakeup.wait(max(min(deadlines), 0.0))

    def _drain_events(self, now: float) -> None:
        lost = False
        while True:
            try:
                parts = self._events.get_nowait()
            except queue.Empty:
                break
            if parts == LOST:
                lost = True
                continue
            if len(parts) == 1 or parts[0] not in self._settled:  # a new folder, say
                self._follow(parts[0])
            name = self._run_of(parts)
            if name is not None:
                self._schedule.changed(name, now)
        if lost:  # after the events that did come: the scan sees the tree as it is now
            self._rescan_lost()

    def _rescan_lost(self) -> None:
        """Events were lost (inotify's queue overflowed): a full scan, so no run is missed.
        Logged once at warning; it comes back whenever writes outrun the queue."""
        self._events_lost += 1
        level = logging.WARNING if self._events_lost == 1 else logging.DEBUG
        logger.log(
            level,
            "filesystem events were lost (inotify's queue overflowed); rescanning %s. Logged "
            "once: raise fs.inotify.max_queued_events if it keeps happening",
            self.runs_dir,
            extra={"event": "events_lost"},
        )
        self._scan()

    def _run_of(self, parts: tuple[str, ...]) -> str | None:
        """The run a changed path (relative to the runs directory) belongs to: the deepest
        known run above it, else the deepest folder above it that is a run now (a new one)."""
        if not runformat.watched_parts(parts):
            return None
        keys = ["/".join(parts[:depth]) for depth in range(len(parts), 0, -1)]
        known = next((index for index, key in enumerate(keys) if key in self._known), None)
        if known is not None:
            source = sources.find(self.runs_dir / keys[known])
            if source is None or not source.nests_runs:
                return keys[known]
            candidates = keys[:known]  # a new run below a known one (add_scalars' folders)
        else:
            candidates = keys
        for key in candidates:
            if runformat.is_run_name(key) and sources.find(self.runs_dir / key) is not None:
                self._known.add(key)
                return key
        return keys[known] if known is not None else None

    # -- deciding and submitting ----------------------------------------------------------
    def _run_keys(self, known: Callable[[str], bool], folders: list[str] | None) -> list[str]:
        if folders is None:  # the runs directory could not be listed (_top_folders said so)
            return []
        try:
            return sources.list_run_keys(self.runs_dir, known, folders)
        except OSError as exc:
            self._scan_failed(exc)
            return []

    def _top_folders(self) -> list[str] | None:
        """The runs directory's folders, listed once a scan, for its reader ahead and its
        listing; None when it cannot be listed."""
        try:
            return sorted(runformat.list_folder_names(self.runs_dir))
        except OSError as exc:
            self._scan_failed(exc)
            return None

    def _scan_failed(self, exc: OSError) -> None:
        logger.error("cannot list %s: %s", self.runs_dir, exc, extra={"event": "scan_failed"})

    def _scan(self) -> int:
        stamps = self._listing.stamps()  # one query, not one a run
        asked: set[str] = set()
        unchanged: set[str] = set()
        folders = self._top_folders()
        # A large tree's runs are read ahead from the listing on, whose lstats are a restart's
        # every cost; read whole where many have no stamp (a first start), see prefetch.py.
        feeder = prefetch.Feeder.for_scan(self._runs_root, folders or [], known=len(stamps))

        def settled(key: str) -> bool:
            """Whether the run in folder `key` is as its stamp says, asked as the listing
            finds it (a real folder: what _consider_run checks first): then it is lossreport's
            own run, and the listing need not look for its run.json again."""
            asked.add(key)
            if feeder is not None:
                feeder.reached(key)
            if self._schedule.request(key) and self._unchanged(key, stamps.get(key)):
                unchanged.add(key)
                return True
            return False

        try:
            keys = self._run_keys(settled, folders)
            self._known.update(keys)
            looked = [key for key in keys if key not in unchanged]
            if len(looked) >= prefetch.MIN_RUNS and (feeder is None or not feeder.reads):
                if feeder is not None:  # many runs changed since their stamps: read them
                    feeder.close()
                feeder = prefetch.Feeder.over(self._runs_root, looked)
            for key in looked:
                if feeder is not None and feeder.reads:  # lstats: the listing took them
                    feeder.reached(key)
                if not self._schedule.request(key):
                    continue
                if key in asked or not self._unchanged(key, stamps.get(key)):
                    self._look(key, stamp_checked=True)
        finally:
            if feeder is not None:
                feeder.close()
        for kept in (stamps, asked, unchanged):  # 100,000 keys: not held while pruning
            kept.clear()
        for name in self._known - set(keys):  # deleted or moved away
            self._forget(name)
        for name in self._settled & self._watches.keys():  # left to the scans from now on
            self._unfollow(name)
        self._listing.keep_only(keys)  # and those an earlier daemon listed
        return len(keys)

    def _mail_queued(self) -> None:
        if self._sender is not None:
            self._sender.wake()

    def _forget(self, name: str) -> None:
        """A run that is no longer there (deleted, renamed): drop all we knew of it."""
        self._schedule.forget(name)
        self._known.discard(name)
        self._settled.discard(name)
        self._unfollow(name)
        self._mailed.pop(name, None)
        self._crashes.forget(name)
        if self._alerter is not None:
            self._alerter.forget(name)
        if self._listing.is_listed(name):
            self._schedule.index_changed(time.monotonic())
        self._listing.forget(name)  # listed by an earlier daemon, perhaps

    def _consider(self, name: str) -> None:
        """Look at run `name` now, unless the schedule holds it back (a render in flight, a
        failure waiting for its retry)."""
        if self._schedule.request(name):
            self._look(name)

    def _look(self, name: str, stamp_checked: bool = False) -> None:
        """Decide whether run `name` needs a render and submit it. Whatever goes wrong with one
        run (a hostile run.json, a vanished folder) stays with that run. `stamp_checked`: a
        scan found just now that its stamp does not hold (it need not be asked again)."""
        try:
            self._consider_run(name, stamp_checked)
        except Exception as exc:
            self._schedule_retry(name, exc)

    def _consider_run(self, name: str, stamp_checked: bool = False) -> None:
        run_dir = self.runs_dir / name
        # A run's key is a path: a folder on it may have been swapped for a link since.
        plain = storage.is_plain_path(self.runs_dir, name.split("/"))
        source = sources.find(run_dir) if plain else None
        if source is None:
            self._forget(name)
            return
        if (
            source is sources.NATIVE
            and not stamp_checked
            and self._unchanged(name, self._listing.seen(name))
        ):
            return
        self._read += 1
        # Taken before anything is read: a change after this gives the run another stamp.
        folders = seen.folder_identity(os.fspath(run_dir)) if source is sources.NATIVE else None
        home = self.homes.home_of(name)
        rendered: tuple[str | None, RenderedMarker | None] | None = None  # (identity, marker)
        state = None
        if stamp_checked and source is sources.NATIVE and home == run_dir:  # a scan: most runs
            # are rendered as they are (home elsewhere: another filesystem's clock)
            marker_file = seen.marker_stat(home)  # one lstat for both
            rendered = seen.identity_of_marker(marker_file), read_marker(home)
            state = as_rendered(run_dir, rendered[1], marker_file)
        state = state or read_state(run_dir, source)
        now_utc = utc_time()
        once_foreign = self.options.once_foreign if self.options.once else None
        status = state.display_status(now_utc, self.options.stale_after, once_foreign)
        self._schedule.saw(
            name,
            running=state.status == runformat.RUNNING,
            # checked as they train, their logs grown in place; not once silent (a dead writer)
            appending=status is None and source.name in LIVE_SOURCES,
        )
        self._saw_running(name, state.status == runformat.RUNNING)
        if status is None and once_foreign is not None:  # a one-shot command says why not
            why = once_left(state, now_utc, self.options.stale_after, once_foreign)
            logger.info("run=%s not rendered: %s", name, why, extra={"run": name, "event": "left"})
        # Alerts read lossreport's own shards (and the runs of alerting.LIVE_SOURCES), and
        # log beside them.
        checked = (source is sources.NATIVE or source.name in LIVE_SOURCES) and home == run_dir
        alerted = checked and self._alert(name, state, status, now_utc, home)
        if alerted:  # the alert log is an input: the render records it
            state = read_state(run_dir, source)
        live = status is None and (alerted or self._schedule.live_due(name, time.monotonic()))
        if status is None and not live and self._listing.is_listed(name):
            self._schedule.settled(name)
            return  # running, and shown already: its marker need not be read again
        if rendered is None:
            rendered = (seen.marker_identity(home) if source is sources.NATIVE else None,
                        read_marker(home))  # fmt: skip
        identity, marker = rendered
        if (  # rendered earlier: listed unless the catalog has that render already
            marker is not None
            and not self._listing.is_listed(name)
            and self._listing.found(name, marker.entry)
        ):
            self._schedule.index_changed(time.monotonic())
        reason = render_reason(state, marker, now_utc, self.options.stale_after, once_foreign)
        if reason is None and status is not None and self._unmailed(name, state, status, marker):
            reason = f"{status}, rendered by another process but not mailed yet"
        if reason is None and live:
            why = "alert raised" if alerted else "live re-render"
            reason, status = f"running, {why}", runformat.RUNNING
        if reason is None or status is None:
            self._schedule.settled(name)
            if (
                folders is not None
                and identity is not None
                and marker is not None
                and status is not None
                and not alerted
            ):
                # Changed just now: settled, but looked at fully again (storage.RACY_NS).
                racy = storage.changed_too_recently(folders[1])
                stamp = None if racy else (folders[0], identity)
                self._saw_settled(name, state, status, marker, stamp)
            return
        if self._waits_for_steady_inputs(name, state, marker, status):
            return
        if self._crashes.set_aside(name, state.fingerprint):
            logger.debug(
                "run=%s is set aside: not rendered again until its inputs change",
                name,
                extra={"run": name, "event": "set_aside_kept"},
            )
            self._schedule.settled(name)
            return
        if not self._remote.claim(name):
            logger.info(
                "run=%s is leased by another daemon; checking again later",
                name,
                extra={"run": name, "event": "leased_elsewhere"},
            )
            self._schedule.render_busy(name, time.monotonic())
            return
        job = partial(
            render_job,
            self.homes,
            name,
            status,
            state.fingerprint,
            self.options.mail,
            self.options.series,
        )
        self._queued.add(
            name, _Queued(job, state.fingerprint, reason), summary_first=status in SETTLED_STATUSES
        )
        self._schedule.render_started(name, time.monotonic())

    def _waits_for_steady_inputs(
        self, name: str, state: RunState, marker: RenderedMarker | None, status: str
    ) -> bool:
        """Whether the render of run `name` waits until its inputs stop changing
        (`Scheduler.steady`): a run whose rendered inputs changed, or whose run.json is gone
        or unreadable, is also what a run being deleted or copied in file by file looks like
        meanwhile. Rendering it then wrote a report into a folder `rm -rf` was emptying (which
        then failed: not empty). Not a live render, nor `--once`'s one look."""
        if self.options.once or status == runformat.RUNNING:
            return False
        if status != runformat.UNKNOWN and (
            marker is None or marker.fingerprint == state.fingerprint
        ):
            return False
        if self._schedule.steady(name, state.fingerprint, time.monotonic()):
            return False
        logger.debug(
            "run=%s is changing: rendered once its inputs stay as they are for %.0f s",
            name,
            self._schedule.steady_seconds,
            extra={"run": name, "event": "changing"},
        )
        return True

    def _unchanged(self, name: str, recorded: tuple[int, bool] | None) -> bool:
        """Whether run `name` is as the look that `recorded` its stamp found it (seen.py):
        then there is nothing to render or list, and nothing of it is read. Paths as plain
        strings: a start asks this of every run."""
        if recorded is None or not runformat.is_run_name(name):
            return False
        stamp, running = recorded
        run_dir = f"{self._runs_root}/{name}"
        home = run_dir if self.homes.output is None else os.fspath(self.homes.home_of(name))
        identity = seen.marker_identity(home)
        folders = seen.folder_identity(run_dir) if identity is not None else None
        if identity is None or folders is None:
            return False
        if seen.stamp(name, folders[0], identity, self._settings(running)) != stamp:
            return False
        self._schedule.saw(name, running=running)
        self._schedule.settled(name)
        self._listing.checked(name)
        self._saw_running(name, running=False)  # settled: a stalled run's health looks ask this
        return True

    def _saw_settled(
        self,
        name: str,
        state: RunState,
        status: str,
        marker: RenderedMarker,
        seen_now: tuple[str, str] | None,
    ) -> None:
        """A full look found run `name` rendered as it is: if the same inputs and marker
        always mean the same answer (a finished or stalled run of lossreport's own whose mail,
        if any, its daemon render queued), it is left to the scans and its stamp (seen.py),
        `seen_now` (its folders' and marker's identity; None: they changed too recently to
        trust), is recorded."""
        if (
            status not in SETTLED_STATUSES
            or marker.status != status
            or marker.fingerprint != state.fingerprint
            or (self.options.mail is not None and not marker.by_daemon)
            or not self._listing.is_listed(name)
        ):
            return
        running = state.status == runformat.RUNNING
        if seen_now is not None:
            stamp = seen.stamp(name, *seen_now, self._settings(running))
            self._listing.saw(name, stamp, running)
        self._saw_running(name, running=False)

    def _settings(self, running: bool) -> str:
        """The settings a settled run's answer depends on: whether runs are mailed, and for a
        stalled one the alert rules (its stall is raised once, before its render)."""
        alerts = repr(self.options.alert_rules) if running and self._alerter else ""
        return f"mail={self.options.mail is not None}|alerts={alerts}"

    def _dispatch(self) -> None:
        """Start queued renders on free workers, in the order they were decided on; under a
        backlog, each finished run's quick report first (scheduler.RenderQueue)."""
        while self._queued and self._workers.free():
            name, queued, quick = self._queued.take(self._workers.free_count())
            try:
                future, worker = self._workers.submit(
                    partial(queued.job, quick=True) if quick else queued.job
                )
            except OSError as exc:  # no process could be started (memory, a process limit)
                self._schedule_retry(name, exc)
                continue
            what = "summarising, the charts after" if quick else "rendering"
            logger.info(
                "run=%s %s (%s) in worker %d",
                name,
                what,
                queued.reason,
                worker,
                extra={
                    "run": name,
                    "event": "render_started",
                    "reason": queued.reason,
                    "worker": worker,
                    "quick": quick,
                },
            )
            future.add_done_callback(lambda _: self._wakeup.set())
            self._in_flight[name] = _Render(future, queued, worker, quick)

    def _unmailed(
        self, name: str, state: RunState, status: str, marker: RenderedMarker | None
    ) -> bool:
        """Whether a finished run rendered by another process still needs its email. Asked
        once per state of its inputs, not at every rescan (it reads run.json and the run's
        mail record: 0.4 ms)."""
        if self.options.mail is None or marker is None or marker.by_daemon:
            return False  # a daemon's render job queued the mail itself
        if self._mailed.get(name) == state.fingerprint:
            return False
        if self.options.mail.unsent(self.homes, name, status):
            return True
        self._mailed[name] = state.fingerprint
        return False

    def _alert(
        self, name: str, state: RunState, status: str | None, now: datetime, home: Path
    ) -> bool:
        """Check the run for alerts (alerting.py); True if one was raised now."""
        if self._alerter is None:
            return False
        try:
            alerted = self._alerter.look(name, state, partial(_rendered_by_daemon, home))
            if status == runformat.STALLED and state.heartbeat is not None:
                silent_for = (now - state.heartbeat).total_seconds()
                alerted = self._alerter.stalled(name, state, silent_for) or alerted
        except Exception as exc:  # a run whose shards cannot be listed: its render says why
            logger.warning(
                "run=%s: not checked for alerts: %s: %s",
                name,
                type(exc).__name__,
                exc,
                extra={"run": name, "event": "alert_check_failed"},
            )
            return False
        return alerted

    def _collect_finished(self) -> None:
        for name, render in list(self._in_flight.items()):
            if not render.future.done():
                continue
            del self._in_flight[name]
            self._workers.done(render.worker)
            try:
                entry, fresh = render.future.result()
            except RunBusy:
                logger.info(
                    "run=%s is being rendered by another process; checking again later",
                    name,
                    extra={"run": name, "event": "busy"},
                )
                self._schedule.render_busy(name, time.monotonic())
                continue
            except RenderWorkerDied as exc:
                self._worker_died(name, render, exc)
                continue
            except Exception as exc:  # a render failure must never stop the daemon
                if sources.find(self.runs_dir / name) is not None:
                    self._schedule_retry(name, exc)
                else:  # deleted while it was rendered: nothing to retry
                    self._schedule.render_finished(name)
                    self._forget(name)
                continue
            if render.quick:
                self._summarised(name, render.queued, entry, fresh)
                continue
            again = self._schedule.render_finished(name)
            self._crashes.forget(name)
            if fresh:
                self._remote.rendered(name, self.homes.home_of(name) / runformat.GRAPHS_DIR)
            self._last_render = time.monotonic()
            self._listing.rendered(name, entry)
            self._schedule.index_changed(time.monotonic(), INDEX_EVERY_SECONDS)
            if fresh and self._sender is not None:
                self._sender.wake()
            if fresh:
                logger.info(
                    "run=%s rendered %s (%s)",
                    name,
                    entry["report"],
                    entry["status"],
                    extra={"run": name, "event": "rendered", "status": entry["status"]},
                )
            else:
                logger.info(
                    "run=%s was rendered by another daemon",
                    name,
                    extra={"run": name, "event": "rendered_elsewhere"},
                )
            if again:  # asked for while it was rendered
                self._consider(name)

    def _summarised(self, name: str, queued: _Queued, entry: dict[str, Any], fresh: bool) -> None:
        """Run `name` has its quick report (or, `fresh` False, had its full one already): it is
        listed with its figures, and its full render waits its turn. Its marker, its mail and
        its stamp (seen.py) wait for that render: nothing here says the report is final. Nor
        is it sent to an object store: the store gets the full report alone, marker last, so
        the mirror never holds a report folder without its marker (which a later poll took
        for a run never rendered, and rendered again)."""
        self._queued.summarised(name, queued)
        if not fresh:
            return
        self._last_render = time.monotonic()
        self._listing.rendered(name, entry)
        self._schedule.index_changed(time.monotonic(), INDEX_EVERY_SECONDS)
        logger.info(
            "run=%s summarised %s (%s); its charts follow",
            name,
            entry["report"],
            entry["status"],
            extra={"run": name, "event": "summarised", "status": entry["status"]},
        )

    def _worker_died(self, name: str, render: _Render, exc: RenderWorkerDied) -> None:
        """The worker rendering run `name` died: retried once, then set aside (crashes.py)."""
        if self._stopping:  # stopped at the stop deadline: the next start renders it
            logger.warning(
                "run=%s: render stopped with the daemon (%s)",
                name,
                exc.how,
                extra={"run": name, "event": "render_stopped"},
            )
            return
        if not self._crashes.crashed(name, render.queued.fingerprint):
            self._schedule_retry(name, exc)
            return
        self._failures += 1
        why = (
            f"set aside: render worker crashed twice ({exc.how}); "
            "not retried until its inputs change"
        )
        self._listing.failed(name, why)
        self._schedule.index_changed(time.monotonic(), INDEX_EVERY_SECONDS)
        logger.error(
            "run=%s %s (worker pid %d)",
            name,
            why,
            exc.pid,
            extra={"run": name, "event": "set_aside", "reason": exc.how},
        )
        if self._schedule.render_finished(name):  # asked for while it was rendered
            self._consider(name)

    def _schedule_retry(self, name: str, exc: BaseException) -> None:
        self._failures += 1
        # Shown in the index beside the run's name: its folder need not be repeated.
        error = str(exc).replace(f"{self.runs_dir / name}/", "") or type(exc).__name__
        self._listing.failed(name, error)
        self._schedule.index_changed(time.monotonic(), INDEX_EVERY_SECONDS)
        attempts, delay = self._schedule.failed(name, time.monotonic())
        logger.error(
            "run=%s render failed (attempt %d, retry in %.0fs): %s: %s",
            name,
            attempts,
            delay,
            type(exc).__name__,
            exc,
            extra={"run": name, "event": "render_failed", "attempt": attempts},
        )

    # -- the observer -------------------------------------------------------------------
    def _wants_polling(self) -> bool:
        if self.options.poll is not None:
            return self.options.poll
        fs_type = filesystem_type(self.runs_dir)
        if is_network_filesystem(fs_type):
            logger.info(
                "%s is on %s, where inotify misses other hosts' writes: polling every %.1fs",
                self.runs_dir,
                fs_type,
                self.options.poll_interval,
                extra={"event": "polling_chosen"},
            )
            return True
        return False

    def _start_observer(self) -> None:
        """inotify, or polling where asked or needed. Whatever breaks watching (the inotify
        watch limit, a folder nested thousands deep) falls back to depth-limited polling."""
        polling = self._wants_polling()
        try:
            self._observer = self._started(self._poller() if polling else Observer(), polling)
        except Exception as exc:
            if polling:
                raise
            logger.warning(
                "native watching failed (%s: %s); polling instead",
                type(exc).__name__,
                exc,
                extra={"event": "polling_fallback"},
            )
            self._observer = self._started(self._poller(), True)
        logger.info(
            "watching %s with %s",
            self.runs_dir,
            type(self._observer).__name__,
            extra={"event": "watching"},
        )

    def _started(self, observer: BaseObserver, polling: bool) -> BaseObserver:
        """The poller walks the whole tree (it reads only directories); inotify watches the
        runs directory itself and, below it, only the folders that can still change without
        a scan noticing soon (`_follow`)."""
        self._watches.clear()
        self._polling = polling
        observer.schedule(
            self._handler, str(self.runs_dir), recursive=polling, event_filter=WATCHED_EVENTS
        )
        try:
            observer.start()
            if not polling:
                self._observer = observer
                for name in runformat.list_folder_names(self.runs_dir):
                    if name not in self._settled:
                        self._follow(name)
        except BaseException:
            observer.stop()
            raise
        return observer

    def _saw_running(self, name: str, running: bool) -> None:
        """A look found run `name` training (`running`), or finished or settled (stalled and
        stamped, seen.py): a run at the top of the runs directory is watched only while it
        trains, or watches would grow with every run ever made. A finished run's changes are
        found by the scan every `rescan_every`, a stalled one's by its health look."""
        if "/" in name:  # below a folder that is followed whole
            return
        if running:
            self._settled.discard(name)
            self._follow(name)
        else:  # watched until the next scan: a trainer often resumes a run it just closed
            self._settled.add(name)

    def _follow(self, top: str) -> None:
        """Watch the folder `top` of the runs directory and all below it (a run's losses/,
        the runs a folder nests), if inotify watches and it is a real folder. A watch that
        cannot be added (the watch limit) leaves the folder to the scans."""
        if self._polling or self._observer is None or top in self._watches:
            return
        if not runformat.is_walked(top):
            return
        path = self.runs_dir / top
        if not storage.is_real_dir(path):  # never a link: it could lead out of the tree
            return
        try:
            self._watches[top] = self._observer.schedule(
                self._handler, str(path), recursive=True, event_filter=WATCHED_EVENTS
            )
        except OSError as exc:
            logger.warning(
                "cannot watch %s (%s); its changes are found by the scan every %.0f s",
                path,
                exc,
                self.options.rescan_every,
                extra={"event": "watch_failed"},
            )

    def _unfollow(self, top: str) -> None:
        watch = self._watches.pop(top, None)
        if watch is not None and self._observer is not None:
            with contextlib.suppress(KeyError, OSError):  # its folder went away, and its watch
                self._observer.unschedule(watch)

    def _poller(self) -> BaseObserver:
        """watchdog's polling observer, walking only what makes a run's inputs (the runs
        directory, each run, each losses/ folder) and never following a link: a run owner's
        link loops or deep folders cannot make it walk for ever."""
        return PollingObserverVFS(
            os.lstat,
            partial(_list_inputs, str(self.runs_dir)),
            polling_interval=self.options.poll_interval,
        )

    def _check_observer(self) -> None:
        if self._observer is not None and not self._observer.is_alive():
            logger.error(
                "the filesystem observer died; starting a new one and rescanning",
                extra={"event": "observer_restarted"},
            )
            self._start_observer()
            self._scan()

    # -- outputs and shutdown -----------------------------------------------------------
    def _advertise(self) -> None:
        """Tell trainers that a daemon follows this directory (presence.py), so those closing
        with report_on_close="auto" leave their report to it."""
        try:
            presence.write_presence(self.runs_dir)
        except OSError as exc:
            if not self._presence_failed:
                logger.warning(
                    "cannot write %s (%s): trainers will render their own reports at close",
                    self.runs_dir / runformat.PRESENCE_FILE,
                    exc,
                    extra={"event": "presence_failed"},
                )
            self._presence_failed = True
        else:
            self._presence_failed = False
            self._advertised = True

    def _write_index_if_due(self, now: float, force: bool = False) -> None:
        if not self._schedule.index_write_due(now, force=force):
            return
        self._listing.write_page()

    def _finish_once(self) -> int:
        while self._in_flight or self._queued:  # a run asked for again is queued when it ends
            self._dispatch()
            wait([render.future for render in self._in_flight.values()], None, FIRST_COMPLETED)
            self._collect_finished()
        self._write_index_if_due(time.monotonic(), force=True)
        unsent = self._sender.send_due() if self._sender is not None else 0
        if unsent:
            logger.error(
                "%d emails could not be sent; they stay in the outbox for the next run",
                unsent,
                extra={"event": "mail_unsent", "count": unsent},
            )
        return 1 if self._failures or unsent else 0

    def _shutdown(self) -> None:
        if self._advertised:
            presence.remove_presence(self.runs_dir)
        if self._observer is not None:
            self._observer.stop()
        if self._sender is not None:
            self._sender.stop()
        self._stop_workers()
        self._write_index_if_due(time.monotonic(), force=True)
        self._listing.close()
        if self._observer is not None:
            self._observer.join(timeout=5)

    def _stop_workers(self) -> None:
        """Renders in progress may finish within `stop_wait` seconds (each is atomic: one
        stopped leaves the old report); queued ones are dropped, found again by the next
        start's scan."""
        self._queued.clear()
        self._stopping = True  # a worker that dies now (Ctrl-C reached it) charges no run
        waiting = sorted(self._in_flight)
        if waiting:
            said = f"waiting up to {self.options.stop_wait:.0f} s for {len(waiting)} renders"
            said += "".join(f", run={name}" for name in waiting)
        else:
            said = "no render in progress"
        logger.info("stopping: %s", said, extra={"event": "stopping", "runs": waiting})
        futures = [render.future for render in self._in_flight.values()]
        late = wait(futures, self.options.stop_wait).not_done
        if late:
            names = sorted(name for name, r in self._in_flight.items() if r.future in late)
            logger.warning(
                "stopping: %d renders still running after %.0f s; stopping their workers%s",
                len(names),
                self.options.stop_wait,
                "".join(f", run={name}" for name in names),
                extra={"event": "stop_deadline", "runs": names},
            )
            self._workers.kill_busy()
            wait(futures, EXIT_WAIT_SECONDS + 1)
        self._collect_finished()
        self._workers.stop()


def _rendered_by_daemon(home: Path) -> str | None:
    """The inputs the last render of the run at `home` saw, if a daemon made it."""
    marker = read_marker(home)
    return marker.fingerprint if marker is not None and marker.by_daemon else None


def _list_inputs(root: str, path: str | None) -> Iterator[os.DirEntry[str]]:
    """os.scandir for the poller, empty below what the daemon reads: RUNS, RUNS/RUN and
    RUNS/RUN/losses."""
    parts = Path(os.path.relpath(path or root, root)).parts
    inside = [] if parts == (".",) else list(parts)
    if not runformat.holds_inputs(inside):
        return iter(())
    return os.scandir(path or root)


class _EventsToRuns(FileSystemEventHandler):
    """Turns filesystem events into paths that may be runs' inputs. Never raises: that would
    kill the observer."""

    def __init__(
        self, runs_dir: Path, events: queue.SimpleQueue[tuple[str, ...]], wakeup: threading.Event
    ) -> None:
        self._root = os.path.realpath(runs_dir)
        self._events = events
        self._wakeup = wakeup

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if isinstance(event, EventsLostEvent):
                self._events.put(LOST)
                self._wakeup.set()
                return
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                parts = self._parts(os.fsdecode(raw)) if raw else None
                if parts is not None:
                    self._events.put(parts)
                    self._wakeup.set()
        except Exception:
            logger.exception("ignoring a filesystem event that could not be handled")

    def _parts(self, path: str) -> tuple[str, ...] | None:
        """The path relative to the runs directory, if it can touch a run's inputs (the main
        thread finds which run: that can take stats, which do not belong in the observer)."""
        parts = Path(os.path.relpath(os.path.realpath(path), self._root)).parts
        return tuple(parts) if runformat.watched_parts(parts) else None
