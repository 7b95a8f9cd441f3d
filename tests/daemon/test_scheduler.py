"""The daemon's schedule on its own: times passed in, no processes, no sleeps."""

from __future__ import annotations

import pytest

from lossreport.backoff import Backoff
from lossreport.daemon.scheduler import (
    HEALTH_EVERY_SECONDS,
    MIN_SLEEP_SECONDS,
    RENDER_BACKOFF,
    STEADY_SECONDS,
    TAIL_EVERY_SECONDS,
    RenderQueue,
    Scheduler,
)


def _scheduler(
    *,
    debounce: float = 0.25,
    live_every: float | None = None,
    health_every: float = HEALTH_EVERY_SECONDS,
) -> Scheduler:
    return Scheduler(debounce=debounce, live_every=live_every, health_every=health_every)


def test_a_burst_of_events_is_looked_at_once_after_the_debounce() -> None:
    schedule = _scheduler()
    schedule.changed("a", 10.0)
    schedule.changed("a", 10.2)  # a later write does not push the look back
    schedule.changed("b", 10.1)
    assert schedule.sleep_time(10.2) == pytest.approx(0.05)
    assert schedule.due(10.24) == []
    assert schedule.due(10.25) == ["a"]
    assert schedule.due(10.35) == ["b"]
    assert schedule.due(20.0) == []


def test_backoff_doubles_from_first_and_stops_at_maximum() -> None:
    delays = [RENDER_BACKOFF.delay(attempt) for attempt in range(1, 10)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0]
    assert Backoff(30.0, 3600.0).delay(8) == 3600.0
    # A run failing every ten minutes makes attempt 1025 in a week: 2**1024 is no float.
    assert RENDER_BACKOFF.delay(1025) == RENDER_BACKOFF.delay(10**6) == 600.0
    with pytest.raises(ValueError, match="first=0"):
        Backoff(0.0, 600.0)
    with pytest.raises(ValueError, match="maximum=1"):
        Backoff(5.0, 1.0)


def test_failed_renders_are_retried_with_doubling_delays_capped_at_ten_minutes() -> None:
    schedule = _scheduler()
    now, seen = 0.0, []
    for _ in range(9):
        schedule.render_started("r", now)
        attempt, delay = schedule.failed("r", now)
        seen.append((attempt, delay))
        assert schedule.due(now + delay - 0.01) == []
        now += delay
        assert schedule.due(now) == ["r"]
    assert seen == [
        (1, 5.0),
        (2, 10.0),
        (3, 20.0),
        (4, 40.0),
        (5, 80.0),
        (6, 160.0),
        (7, 320.0),
        (8, 600.0),
        (9, 600.0),
    ]
    schedule.render_started("r", now)
    assert schedule.render_finished("r") is False
    assert schedule.failed("r", now) == (1, 5.0)  # a success starts the count afresh


def test_a_run_waiting_for_its_retry_ignores_events_and_scans() -> None:
    schedule = _scheduler()
    assert schedule.failed("r", 0.0) == (1, 5.0)  # a look failed (a hostile run.json)
    schedule.changed("r", 1.0)
    assert schedule.due(2.0) == []
    assert schedule.request("r") is False
    assert schedule.due(5.0) == ["r"]
    schedule.settled("r")  # the retried look found nothing to render
    assert schedule.request("r") is True
    assert schedule.due(100.0) == []


def test_a_busy_run_is_looked_at_again_after_five_seconds_and_is_no_failure() -> None:
    schedule = _scheduler()
    schedule.render_started("r", 0.0)
    schedule.failed("r", 0.0)
    schedule.render_started("r", 5.0)
    schedule.failed("r", 5.0)
    schedule.render_started("r", 15.0)
    schedule.render_busy("r", 16.0)  # another daemon holds its lock
    assert schedule.due(20.99) == []
    assert schedule.due(21.0) == ["r"]
    schedule.render_started("r", 21.0)
    assert schedule.failed("r", 22.0) == (1, 5.0)


def test_a_running_run_is_rendered_live_every_live_every_seconds() -> None:
    schedule = _scheduler(live_every=10.0)
    schedule.saw("r", running=True)
    assert schedule.live_due("r", 0.0) is True  # never rendered yet
    schedule.render_started("r", 3.0)
    schedule.render_finished("r")
    assert schedule.live_due("r", 12.9) is False
    assert schedule.live_due("r", 13.0) is True
    schedule.saw("r", running=False)
    assert schedule.live_due("r", 100.0) is False
    assert _scheduler().live_due("r", 100.0) is False  # no --live-every


def test_running_runs_are_looked_at_again_every_health_period() -> None:
    schedule = _scheduler()
    schedule.saw("running", running=True)
    schedule.saw("finished", running=False)
    assert schedule.health_check(100.0) is False  # the first call starts the period
    assert schedule.sleep_time(100.0) == pytest.approx(2.0)
    assert schedule.health_check(101.9) is False
    assert schedule.due(101.9) == []
    assert schedule.health_check(102.0) is True
    assert schedule.due(102.0) == ["running"]
    schedule.saw("running", running=False)  # it completed
    assert schedule.health_check(104.0) is True
    assert schedule.due(104.0) == []


def test_a_run_whose_log_grows_in_place_is_looked_at_every_tail_period_while_it_runs() -> None:
    """A W&B run appends to its .wandb file: no watched event says so, and the stall check
    comes every 30 s at the default --stale-after; its NaN must not wait for that."""
    schedule = _scheduler(health_every=30.0)
    schedule.saw("wandb/offline-run-1", running=True, appending=True)
    schedule.saw("trainer-run", running=True)  # its shards land by rename: events say so
    schedule.tail_check(100.0)  # the first call starts the period
    assert schedule.sleep_time(100.0) == pytest.approx(TAIL_EVERY_SECONDS)
    schedule.tail_check(100.0 + TAIL_EVERY_SECONDS)
    assert schedule.due(100.0 + TAIL_EVERY_SECONDS) == ["wandb/offline-run-1"]
    schedule.saw("wandb/offline-run-1", running=False)  # it finished
    schedule.tail_check(100.0 + 2 * TAIL_EVERY_SECONDS)
    assert schedule.due(100.0 + 2 * TAIL_EVERY_SECONDS) == []
    schedule.health_check(100.0)
    assert schedule.sleep_time(110.0) == pytest.approx(20.0)  # no tail deadline left


def test_changed_inputs_are_rendered_once_they_stay_as_they_are_for_the_steady_period() -> None:
    """`rm -rf` of a rendered run goes file by file: each look sees other inputs, so the run
    is never rendered half gone; inputs that stop changing are rendered STEADY_SECONDS on."""
    schedule = _scheduler()
    assert schedule.steady("r", "shards 1-300", 10.0) is False
    assert schedule.sleep_time(10.0) == pytest.approx(STEADY_SECONDS)
    assert schedule.steady("r", "shards 1-200", 11.0) is False  # a scan meanwhile: still going
    assert schedule.due(10.0 + STEADY_SECONDS) == ["r"]  # as asked first
    assert schedule.steady("r", "shards 1-200", 10.0 + STEADY_SECONDS) is False
    assert schedule.due(11.0 + STEADY_SECONDS - 0.01) == []  # then when they would be steady
    assert schedule.due(11.0 + STEADY_SECONDS) == ["r"]
    assert schedule.steady("r", "shards 1-200", 11.0 + STEADY_SECONDS) is True
    assert schedule.steady("r", "shards 1-200", 20.0) is False  # a new change: waits again
    schedule.settled("r")  # a look found it as rendered (changed back): nothing held of it
    assert schedule.steady("r", "shards 1-200", 20.1) is False
    schedule.forget("r")
    assert schedule.steady("r", "shards 1-200", 20.2 + STEADY_SECONDS) is False  # counts anew


def test_a_stall_check_of_a_run_being_rendered_waits_for_the_render() -> None:
    schedule = _scheduler()
    schedule.saw("r", running=True)
    schedule.health_check(0.0)
    schedule.render_started("r", 1.0)
    assert schedule.health_check(2.0) is True
    assert schedule.due(2.0) == []
    assert schedule.render_finished("r") is True  # looked at again as soon as it ends


def test_a_vanished_run_is_forgotten() -> None:
    schedule = _scheduler(live_every=10.0)
    schedule.health_check(0.0)
    schedule.saw("r", running=True)
    schedule.render_started("r", 0.0)
    schedule.failed("r", 0.0)
    schedule.forget("r")
    assert schedule.due(50.0) == []  # no retry
    assert schedule.health_check(50.0) is True
    assert schedule.due(50.0) == []  # no stall check
    assert schedule.live_due("r", 50.0) is False
    assert schedule.sleep_time(50.0) == pytest.approx(2.0)
    assert schedule.request("r") is True  # a run of that name made again is looked at
    assert schedule.failed("r", 50.0) == (1, 5.0)  # with a fresh count


def test_a_run_vanishing_mid_render_stays_in_flight_until_the_render_ends() -> None:
    schedule = _scheduler()
    schedule.render_started("r", 0.0)
    schedule.forget("r")
    assert schedule.request("r") is False  # never two renders of one run at once
    assert schedule.render_finished("r") is True


def test_a_run_asked_for_during_its_render_is_looked_at_again_once_when_it_ends() -> None:
    schedule = _scheduler()
    schedule.render_started("r", 0.0)
    schedule.changed("r", 0.0)
    assert schedule.due(1.0) == []
    assert schedule.request("r") is False  # a scan, too
    assert schedule.render_finished("r") is True
    schedule.render_started("r", 2.0)
    assert schedule.render_finished("r") is False


def test_sleep_never_drops_below_the_floor() -> None:
    schedule = _scheduler(debounce=0.0)
    schedule.health_check(0.0)
    schedule.changed("r", 0.0)
    assert schedule.sleep_time(0.0) == MIN_SLEEP_SECONDS
    assert schedule.sleep_time(30.0) == MIN_SLEEP_SECONDS  # a deadline long passed
    assert _scheduler().sleep_time(7.0) == pytest.approx(2.0)  # nothing scheduled at all


def test_sleep_ignores_the_retry_of_a_run_being_rendered() -> None:
    schedule = _scheduler(health_every=60.0)
    schedule.health_check(0.0)
    schedule.failed("r", 0.0)
    assert schedule.sleep_time(1.0) == pytest.approx(4.0)
    assert schedule.due(5.0) == ["r"]
    schedule.render_started("r", 5.0)
    # Its retry time has passed, but the render's end wakes the loop: no spinning till then.
    assert schedule.sleep_time(6.0) == pytest.approx(54.0)
    assert schedule.due(6.0) == []
    assert schedule.failed("r", 6.0) == (2, 10.0)
    assert schedule.sleep_time(6.0) == pytest.approx(10.0)


def test_the_index_is_written_once_per_batch_of_changes() -> None:
    schedule = _scheduler(health_every=60.0)
    schedule.health_check(0.0)
    schedule.index_changed(0.0, 1.0)
    schedule.index_changed(0.5, 1.0)  # joins the pending write
    assert schedule.sleep_time(0.5) == pytest.approx(0.5)
    assert schedule.index_write_due(0.9) is False
    assert schedule.index_write_due(1.0) is True
    assert schedule.index_write_due(1.0) is False
    schedule.index_changed(2.0, 1.0)
    assert schedule.index_write_due(2.0, force=True) is True  # on exit
    assert schedule.index_write_due(10.0, force=True) is False  # nothing changed since
    schedule.index_changed(11.0)  # a run dropped: at once
    assert schedule.index_write_due(11.0) is True


def _drain(queue: RenderQueue[str]) -> list[tuple[str, bool]]:
    """Each render as one free worker takes it, a quick one queued again for its charts as it
    ends: (run, quick) in the order they start."""
    started = []
    while queue:
        name, item, quick = queue.take(1)
        started.append((name, quick))
        if quick:
            queue.summarised(name, item)
    return started


def test_a_backlog_gets_every_summary_first_then_every_chart_in_order() -> None:
    queue: RenderQueue[str] = RenderQueue()
    for name in "abcd":
        queue.add(name, f"job-{name}", summary_first=True)
    assert _drain(queue) == [
        ("a", True), ("b", True), ("c", True), ("d", True),
        ("a", False), ("b", False), ("c", False), ("d", False),
    ]  # fmt: skip


def test_no_backlog_renders_in_full_at_once_as_before() -> None:
    queue: RenderQueue[str] = RenderQueue()
    queue.add("a", "job-a", summary_first=True)
    assert queue.take(1) == ("a", "job-a", False)
    for name in "bc":
        queue.add(name, f"job-{name}", summary_first=True)
    assert queue.take(2)[2] is False and queue.take(1)[2] is False  # as many waiting as free
    assert not queue


def test_a_run_that_finished_during_the_charts_is_summarised_before_them() -> None:
    queue: RenderQueue[str] = RenderQueue()
    for name in "ab":
        queue.add(name, name, summary_first=True)
    for _ in range(2):
        name, item, quick = queue.take(1)
        assert quick
        queue.summarised(name, item)
    queue.add("late", "late", summary_first=True)
    assert queue.take(1) == ("late", "late", True)
    queue.summarised("late", "late")
    assert [queue.take(1)[0] for _ in range(3)] == ["a", "b", "late"]


def test_running_runs_are_never_summarised_first() -> None:
    """A live re-render of a training run is rendered in full in its turn: summaries are for
    finished runs."""
    queue: RenderQueue[str] = RenderQueue()
    queue.add("live", "live", summary_first=False)
    queue.add("done", "done", summary_first=True)
    assert queue.take(1) == ("done", "done", True)
    queue.summarised("done", "done")
    assert [queue.take(1)[:1] for _ in range(2)] == [("live",), ("done",)]
