"""The one retry rule shared by the daemon's renders and the mail sender."""

from __future__ import annotations

from lossreport.backoff import Backoff
from lossreport.daemon.watch import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS


def test_the_wait_doubles_from_the_first_and_stops_at_the_cap() -> None:
    backoff = Backoff(first=5.0, maximum=600.0)
    assert [backoff.delay(attempt) for attempt in range(1, 10)] == [
        5.0,
        10.0,
        20.0,
        40.0,
        80.0,
        160.0,
        320.0,
        600.0,
        600.0,
    ]
    assert backoff.delay(10_000) == 600.0  # no overflow, however long the outage


def test_the_documented_render_retry_is_5_seconds_doubling_to_10_minutes() -> None:
    render = Backoff(FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS)
    assert (render.delay(1), render.delay(100)) == (5.0, 600.0)
