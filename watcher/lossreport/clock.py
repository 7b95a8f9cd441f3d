"""The one source of timestamps: every time lossreport writes (run.json, markers, mail records,
pages, log lines, file names) is UTC, so runs from hosts in different zones sort and compare."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_time(timestamp: float | None = None) -> datetime:
    """Now, or a POSIX `timestamp`, as an aware UTC datetime."""
    return datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def utc_now(timespec: str = "milliseconds") -> str:
    """Now as ISO 8601 with its offset (`2026-01-01T12:00:00.000+00:00`), as run.json has it."""
    return utc_time().isoformat(timespec=timespec)


def format_duration(seconds: float) -> str:
    """A duration as the command line writes one: 300.0 -> "5m", 30.0 -> "30s", 7200.0 -> "2h"."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
