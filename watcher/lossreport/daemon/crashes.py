"""Which runs killed a render worker, and which are set aside for it: plain data, no clock.

A worker that dies while rendering a run (workers.py charges it to that run alone) may have
been killed for a reason of its own (the host ran out of memory): the run is retried, with the
backoff of any failed render. A run that kills a worker `limit` times with the same inputs
(its fingerprint) would keep doing so, costing a worker start each time: it is set aside, and
rendered again only once its inputs change.
"""

from __future__ import annotations

from dataclasses import dataclass

CRASHES_TO_SET_ASIDE = 2


@dataclass(frozen=True)
class _Crashes:
    fingerprint: str
    count: int


class Crashes:
    def __init__(self, limit: int = CRASHES_TO_SET_ASIDE) -> None:
        self.limit = limit
        self._runs: dict[str, _Crashes] = {}

    def crashed(self, name: str, fingerprint: str) -> bool:
        """A worker died rendering run `name` with inputs `fingerprint`. True: set it aside."""
        previous = self._runs.get(name)
        count = previous.count + 1 if previous and previous.fingerprint == fingerprint else 1
        self._runs[name] = _Crashes(fingerprint, count)
        return count >= self.limit

    def set_aside(self, name: str, fingerprint: str) -> bool:
        """Whether run `name` is set aside with these very inputs (new inputs end that)."""
        crashes = self._runs.get(name)
        if crashes is None or crashes.count < self.limit:
            return False
        if crashes.fingerprint != fingerprint:
            del self._runs[name]
            return False
        return True

    def forget(self, name: str) -> None:
        """Run `name` was rendered, or is gone."""
        self._runs.pop(name, None)
