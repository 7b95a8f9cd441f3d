"""The rule for runs that kill render workers, as plain data (the daemon's test kills real
workers: test_isolation.py)."""

from __future__ import annotations

from lossreport.daemon.crashes import Crashes


def test_a_second_crash_with_the_same_inputs_sets_the_run_aside() -> None:
    crashes = Crashes()
    assert not crashes.crashed("run", "inputs-1")
    assert not crashes.set_aside("run", "inputs-1")  # retried after one crash
    assert crashes.crashed("run", "inputs-1")
    assert crashes.set_aside("run", "inputs-1")
    assert not crashes.set_aside("other", "inputs-1")


def test_new_inputs_end_the_set_aside_and_count_afresh() -> None:
    crashes = Crashes()
    crashes.crashed("run", "inputs-1")
    assert not crashes.crashed("run", "inputs-2")  # other inputs: a first crash
    assert crashes.crashed("run", "inputs-2")
    assert not crashes.set_aside("run", "inputs-3")
    assert not crashes.crashed("run", "inputs-3")


def test_a_render_or_a_vanished_run_clears_its_crashes() -> None:
    crashes = Crashes()
    crashes.crashed("run", "inputs-1")
    crashes.forget("run")
    assert not crashes.crashed("run", "inputs-1")
