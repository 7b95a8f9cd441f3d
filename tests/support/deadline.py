"""A deadline for code that might block for ever (a FIFO opened for reading): the test fails
instead of hanging."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Blocked(Exception):
    pass


@contextmanager
def fails_if_blocked(seconds: int = 30) -> Iterator[None]:
    """Raise Blocked in the main thread if the block runs past `seconds` (SIGALRM)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Blocked(f"blocked for more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
