"""The daemon's schedule as plain data: which runs to look at now, and how long to sleep.

`watch.Watcher` does the looking (reading run.json and markers, submitting renders, writing the
index) and tells the scheduler what happened; the scheduler keeps run names and deadlines only.
Times are monotonic seconds passed in by the caller, never read from a clock, so every rule
(debounce, retry backoff, busy retries, live re-renders, stall checks) is tested without a
process or a sleep. `RenderQueue` is the order in which decided renders reach the workers,
and which of them give a backlog its quick report first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..backoff import Backoff

MIN_SLEEP_SECONDS = 0.01  # a deadline already passed must not make the loop spin
HEALTH_EVERY_SECONDS = 2.0
# A running run whose writer appends to its log in place (W&B's .wandb file): no watched event
# says that it grew, so it is looked at this often (a look with nothing new reads nothing).
TAIL_EVERY_SECONDS = 2.0
BUSY_RETRY_SECONDS = 5.0
# How long a rendered run's changed inputs must stay as they are before it is rendered again:
# `rm -rf` of a run (or a copy into the tree) goes file by file, for seconds on NFS.
STEADY_SECONDS = 5.0
RENDER_BACKOFF = Backoff(5.0, 600.0)
Item = TypeVar("Item")


@dataclass(frozen=True)
class _Retry:
    attempts: int  # failures in a row; 0 after a busy run (another process was rendering it)
    due: float


class Scheduler:
    """When each run of one daemon is looked at.

    A run is looked at `debounce` seconds after its first event (a burst of writes makes one
    look), every `health_every` seconds while it runs (a SIGKILLed trainer writes nothing, so
    only a look sees it stall), every `tail_every` seconds while it trains if its log grows in
    place (no event says so), when a failed look or render is retried, and again when a render
    that an event arrived during ends, and when its changed inputs would have been steady
    for `steady` seconds. Never while it is being rendered, and not for events while a failure
    waits for its retry.
    """

    def __init__(
        self,
        *,
        debounce: float,
        live_every: float | None,
        backoff: Backoff = RENDER_BACKOFF,
        busy_retry: float = BUSY_RETRY_SECONDS,
        health_every: float = HEALTH_EVERY_SECONDS,
        tail_every: float = TAIL_EVERY_SECONDS,
        steady: float = STEADY_SECONDS,
    ) -> None:
        self.debounce = debounce
        self.live_every = live_every
        self.backoff = backoff
        self.busy_retry = busy_retry
        self.health_every = health_every
        self.tail_every = tail_every
        self.steady_seconds = steady
        self._dirty: dict[str, float] = {}  # run -> when to look at it
        self._in_flight: set[str] = set()
        self._again: set[str] = set()  # asked for while rendered: look when the render ends
        self._retries: dict[str, _Retry] = {}
        self._running: set[str] = set()
        self._appending: set[str] = set()  # running runs whose log grows in place
        self._changing: dict[str, tuple[str, float]] = {}  # run -> inputs, when first seen
        self._last_started: dict[str, float] = {}  # run -> when its last render began
        self._next_health: float | None = None
        self._next_tail: float | None = None
        self._index_due: float | None = None

    # -- what happened ----------------------------------------------------------------------
    def changed(self, name: str, now: float) -> None:
        """A filesystem event for run `name`: look at it once its writes have settled."""
        self._dirty.setdefault(name, now + self.debounce)

    def saw(self, name: str, *, running: bool, appending: bool = False) -> None:
        """A look found run `name` running (checked again for stalls) or not; `appending`:
        its writer appends to its log in place (looked at every `tail_every` seconds)."""
        if running:
            self._running.add(name)
        else:
            self._running.discard(name)
        if running and appending:
            self._appending.add(name)
        else:
            self._appending.discard(name)

    def settled(self, name: str) -> None:
        """A look found nothing to render: an earlier failure of `name` is over."""
        self._retries.pop(name, None)
        self._changing.pop(name, None)

    def steady(self, name: str, inputs: str, now: float) -> bool:
        """Whether run `name`'s inputs (their fingerprint) were the same `steady` seconds ago,
        as far as its looks saw. If not, the run is due again when they would have been: a
        run deleted, or copied in, file by file must not be rendered half there."""
        first = self._changing.get(name)
        if first is None or first[0] != inputs:
            first = self._changing[name] = (inputs, now)
        elif now - first[1] >= self.steady_seconds:
            del self._changing[name]
            return True
        self._dirty[name] = min(first[1] + self.steady_seconds, self._dirty.get(name, math.inf))
        return False

    def render_started(self, name: str, now: float) -> None:
        self._in_flight.add(name)
        self._last_started[name] = now

    def render_finished(self, name: str) -> bool:
        """A render ended with nothing to retry (it was made, or its run is gone). True: look
        at the run again now, it was asked for while it was rendered."""
        self._in_flight.discard(name)
        self._retries.pop(name, None)
        if name in self._again:
            self._again.discard(name)
            return True
        return False

    def render_busy(self, name: str, now: float) -> None:
        """Another process holds the run's render lock: look again in `busy_retry` seconds.
        Not a failure: the next failure counts from attempt 1."""
        self._in_flight.discard(name)
        self._retries[name] = _Retry(0, now + self.busy_retry)

    def failed(self, name: str, now: float) -> tuple[int, float]:
        """A look at or a render of `name` failed: (attempt, seconds until it is retried)."""
        self._in_flight.discard(name)
        previous = self._retries.get(name)
        attempt = 1 if previous is None else previous.attempts + 1
        delay = self.backoff.delay(attempt)
        self._retries[name] = _Retry(attempt, now + delay)
        return attempt, delay

    def forget(self, name: str) -> None:
        """Run `name` is no longer there (deleted, renamed): drop what was known of it. A
        render in flight still ends with its own notification."""
        self._retries.pop(name, None)
        self._running.discard(name)
        self._appending.discard(name)
        self._last_started.pop(name, None)
        self._again.discard(name)
        self._changing.pop(name, None)

    def index_changed(self, now: float, delay: float = 0.0) -> None:
        """The runs index needs writing, `delay` seconds from now or with an earlier change."""
        if self._index_due is None:
            self._index_due = now + delay

    # -- what to do ---------------------------------------------------------------------------
    def request(self, name: str) -> bool:
        """May run `name` be looked at now (a scan asks)? Not while it is rendered (it is
        looked at when that ends instead), nor while a failure waits for its retry."""
        if name in self._in_flight:
            self._again.add(name)
            return False
        return name not in self._retries

    def due(self, now: float) -> list[str]:
        """The runs to look at now: those whose time has come, as `request` allows, and the
        retries that are due."""
        names = []
        for name, at in list(self._dirty.items()):
            if at <= now:
                del self._dirty[name]
                if self.request(name):
                    names.append(name)
        names += [
            name
            for name, retry in self._retries.items()
            if retry.due <= now and name not in self._in_flight
        ]
        return names

    def live_due(self, name: str, now: float) -> bool:
        """Whether running run `name` is due a live re-render (`live_every` since its last
        render began)."""
        if self.live_every is None or name not in self._running:
            return False
        last = self._last_started.get(name)
        return last is None or now - last >= self.live_every

    def health_check(self, now: float) -> bool:
        """True every `health_every` seconds, counted from the first call; each running run is
        then due to be looked at again."""
        if self._next_health is None:
            self._next_health = now + self.health_every
            return False
        if now < self._next_health:
            return False
        for name in self._running:
            self._dirty.setdefault(name, now)
        self._next_health = now + self.health_every
        return True

    def tail_check(self, now: float) -> None:
        """Every `tail_every` seconds, each running run whose log grows in place is due."""
        if not self._appending:
            self._next_tail = None
        elif self._next_tail is None:
            self._next_tail = now + self.tail_every
        elif now >= self._next_tail:
            for name in self._appending:
                self._dirty.setdefault(name, now)
            self._next_tail = now + self.tail_every

    def index_write_due(self, now: float, *, force: bool = False) -> bool:
        """Whether to write the runs index now (`force`: whenever it changed, as on exit)."""
        if self._index_due is None or (now < self._index_due and not force):
            return False
        self._index_due = None
        return True

    def sleep_time(self, now: float) -> float:
        """How long the loop may sleep: until the next deadline, but at least
        MIN_SLEEP_SECONDS. The retry of a run being rendered is no deadline: the render's end
        wakes the loop, and counting it would spin the loop until then."""
        deadlines = [
            *self._dirty.values(),
            *(r.due for name, r in self._retries.items() if name not in self._in_flight),
        ]
        deadlines += [
            at for at in (self._next_health, self._next_tail, self._index_due) if at is not None
        ]
        return max(MIN_SLEEP_SECONDS, min(deadlines, default=now + self.health_every) - now)


class RenderQueue(Generic[Item]):
    """Renders decided on, waiting for a free worker: summary first, pictures after, under a
    backlog.

    A full render costs about twenty quick reports (the charts are nearly all of its CPU), so
    when more runs wait than workers are free, each waiting finished run gets its quick report
    first (everything but the charts), oldest first, and then its full render, in the order the
    quick ones ended. With no backlog the oldest run is rendered in full at once, as always.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, Item] = {}  # oldest first
        self._owing: dict[str, None] = {}  # those of them owed a quick report, oldest first

    def add(self, name: str, item: Item, *, summary_first: bool) -> None:
        """Queue run `name`; `summary_first`: it is finished, so a backlog summarises it first."""
        self._waiting[name] = item
        if summary_first:
            self._owing[name] = None

    def take(self, free: int) -> tuple[str, Item, bool]:
        """The render a free worker starts now, of the `free` there are: the run, its item, and
        whether only its quick report (it comes back with `summarised`)."""
        quick = len(self._waiting) > free and bool(self._owing)
        name = next(iter(self._owing if quick else self._waiting))
        self._owing.pop(name, None)
        return name, self._waiting.pop(name), quick

    def summarised(self, name: str, item: Item) -> None:
        """Run `name` has its quick report: its full render waits behind the runs queued."""
        self._waiting[name] = item

    def clear(self) -> None:
        self._waiting.clear()
        self._owing.clear()

    def __len__(self) -> int:
        return len(self._waiting)
