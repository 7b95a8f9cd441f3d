"""Retry delays that double up to a cap: failed renders (the daemon) and failed mail (the
outbox) back off alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry delays that double from `first` up to `maximum`: attempt 1 waits `first`."""

    first: float
    maximum: float

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.maximum:
            raise ValueError(
                f"Backoff needs 0 < first <= maximum, got first={self.first}, "
                f"maximum={self.maximum}"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failure in a row (counted from 1)."""
        # The exponent is capped: 2**1024 is too large for a float, and a run failing every ten
        # minutes gets there in a week. A float power past the cap saturates at inf instead.
        return min(self.maximum, self.first * 2.0 ** min(max(attempt, 1) - 1, 1023))
