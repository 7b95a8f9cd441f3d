"""How long a failing job waits before its next try: the daemon's render retries and the mail
sender's share this one rule, so both back off alike (first, doubling, capped)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """`first` seconds after the first failure, doubling after each, never more than
    `maximum`: fast on a hiccup, and no busy loop on a lasting outage."""

    first: float
    maximum: float

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th failure in a row (1 for the first). The exponent is
        capped: past about a thousand failures (days of an outage) 2.0 ** n overflows."""
        return min(self.maximum, self.first * 2.0 ** min(max(0, attempts - 1), 64))
