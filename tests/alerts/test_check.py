"""RunChecker on real run directories: each rule fires once, where the rule says, from shards
read once each; unreadable shards and other ranks' shards are passed over."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import lossreport
from lossreport import runformat
from lossreport.alerts import (
    DIVERGENCE,
    NON_FINITE,
    STALLED,
    Alert,
    AlertRules,
    Divergence,
    Plateau,
    RunChecker,
    Threshold,
)
from lossreport.errors import UnsafePathError

NAN, INF = math.nan, math.inf
ONLY_NON_FINITE = AlertRules(divergence=None)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    (path / runformat.LOSSES_DIR).mkdir(parents=True)
    return path


def _table(steps: list[int], **losses: list[float | None]) -> pa.Table:
    columns = {"step": pa.array(steps, pa.int64()), "wall_time": pa.array([0.0] * len(steps))}
    columns |= {name: pa.array(values, pa.float64()) for name, values in losses.items()}
    return pa.table(columns)


def _shard(
    run_dir: Path,
    seq: int,
    steps: list[int],
    rank: int | None = None,
    writer: str = "t1",
    **losses: list[float | None],
) -> Path:
    return runformat.write_shard(run_dir, seq, _table(steps, **losses), rank=rank, writer=writer)


def _only(rule: Divergence | Threshold | Plateau) -> AlertRules:
    if isinstance(rule, Divergence):
        return AlertRules(non_finite=False, divergence=rule)
    return AlertRules(non_finite=False, divergence=None, user=(rule,))


def _decreasing(start: int, count: int) -> list[float]:
    """A noisy falling curve: 1/sqrt(step) with a few percent of deterministic wobble."""
    return [(1 + 0.03 * math.sin(7.3 * s)) / math.sqrt(s + 1) for s in range(start, start + count)]


# --- clean runs, non-finite values -------------------------------------------------------------


def test_a_clean_falling_curve_fires_nothing(run_dir: Path) -> None:
    rules = AlertRules(
        divergence=Divergence(patience=5, warmup=10),
        user=(Threshold("high", "*", above=2.0), Plateau("flat", "*", steps=200, min_delta=1e-4)),
    )
    checker = RunChecker(rules)
    for seq in range(1, 6):
        steps = list(range((seq - 1) * 100, seq * 100))
        curve = _decreasing(steps[0], 100)
        _shard(run_dir, seq, steps, mse_loss=curve, l1_loss=[v / 2 for v in curve])
        assert checker.check(run_dir) == []


def test_the_first_nan_in_a_later_shard_fires_once(run_dir: Path) -> None:
    checker = RunChecker(ONLY_NON_FINITE)
    _shard(run_dir, 1, [0, 1, 2], mse_loss=[1.0, 0.9, 0.8])
    assert checker.check(run_dir) == []
    _shard(run_dir, 2, [3, 4, 5], mse_loss=[0.7, NAN, INF], l1_loss=[0.1, 0.1, NAN])
    [alert] = checker.check(run_dir)
    assert (alert.rule, alert.loss, alert.step) == (NON_FINITE, "mse_loss", 4)
    assert alert.value is not None and math.isnan(alert.value)
    assert "mse_loss" in alert.detail and "step 4" in alert.detail and "nan" in alert.detail
    _shard(run_dir, 3, [6], mse_loss=[NAN])
    assert checker.check(run_dir) == []


def test_the_earliest_row_wins_across_losses_and_inf_counts(run_dir: Path) -> None:
    _shard(run_dir, 1, [10, 11, 12], a_loss=[1.0, 1.0, NAN], b_loss=[1.0, -INF, 1.0])
    [alert] = RunChecker(ONLY_NON_FINITE).check(run_dir)
    assert (alert.loss, alert.step, alert.value) == ("b_loss", 11, -INF)


def test_a_null_is_not_logged_not_a_non_finite_value(run_dir: Path) -> None:
    _shard(run_dir, 1, [0, 1, 2], mse_loss=[1.0, None, 0.5], l1_loss=[None, None, 0.1])
    assert RunChecker(ONLY_NON_FINITE).check(run_dir) == []


def test_a_loss_that_appears_in_a_later_shard_is_checked(run_dir: Path) -> None:
    rules = AlertRules(divergence=None, user=(Threshold("aux high", "aux_*", above=1.0),))
    checker = RunChecker(rules)
    _shard(run_dir, 1, [0, 1], mse_loss=[1.0, 0.9])
    assert checker.check(run_dir) == []
    _shard(run_dir, 2, [2, 3, 4], mse_loss=[0.8, 0.7, 0.6], aux_loss=[0.5, 3.0, NAN])
    alerts = checker.check(run_dir)
    assert [(a.rule, a.loss, a.step) for a in alerts] == [
        ("aux high", "aux_loss", 3),
        (NON_FINITE, "aux_loss", 4),
    ]
    assert alerts[0].value == 3.0
    assert alerts[1].value is not None and math.isnan(alerts[1].value)


def test_a_run_logged_through_the_public_api_is_checked(tmp_path: Path) -> None:
    run = lossreport.start_run(tmp_path, model="m", hook="h", report_on_close=False)
    checker = RunChecker(AlertRules())
    try:
        for step in range(50):
            run.log(step, mse_loss=1.0 / (step + 1))
        run.flush()
        assert checker.check(run.path) == []
        run.log(50, mse_loss=INF)
        run.flush()
        [alert] = checker.check(run.path)
    finally:
        run.close()
    assert (alert.rule, alert.loss, alert.step, alert.value) == (NON_FINITE, "mse_loss", 50, INF)


# --- divergence ------------------------------------------------------------------------------

# Warm-up of two values (the second would make a best of 0.01), then a best of 1.0 at step 2:
# the line is 2.0 (factor 2).
WARMUP = [5.0, 0.01]
DIVERGING = Divergence(factor=2.0, patience=3, warmup=2)


@pytest.mark.parametrize(("above", "fires"), [(2, False), (3, True)])
def test_divergence_needs_patience_values_in_a_row_above_the_line(
    run_dir: Path, above: int, fires: bool
) -> None:
    values = [*WARMUP, 1.0, 1.5, *[2.5] * above, 1.9]
    _shard(run_dir, 1, list(range(len(values))), mse_loss=values)
    alerts = RunChecker(_only(DIVERGING)).check(run_dir)
    if not fires:
        assert alerts == []
        return
    [alert] = alerts
    # The streak's first step and value (4, 2.5); the detail names where it completed (step 6)
    # and the best, 1.0 at step 2.
    assert (alert.rule, alert.loss, alert.step, alert.value) == (DIVERGENCE, "mse_loss", 4, 2.5)
    assert "since step 4" in alert.detail and "at step 6" in alert.detail
    assert "best, 1 at step 2" in alert.detail


def test_a_value_on_the_line_breaks_a_streak_and_nan_does_not(run_dir: Path) -> None:
    values = [*WARMUP, 1.0, 2.5, 2.5, 2.0, 2.5, NAN, 2.5, None, 2.7]
    _shard(run_dir, 1, list(range(len(values))), mse_loss=values)
    [alert] = RunChecker(_only(DIVERGING)).check(run_dir)
    assert (alert.step, alert.value) == (6, 2.5)
    assert "with 2.7 at step 10" in alert.detail


def test_a_streak_and_the_warmup_carry_across_shards(run_dir: Path) -> None:
    checker = RunChecker(_only(DIVERGING))
    _shard(run_dir, 1, [0], mse_loss=[5.0])
    _shard(run_dir, 2, [1, 2, 3, 4], mse_loss=[0.01, 1.0, 2.5, 2.5])
    assert checker.check(run_dir) == []
    _shard(run_dir, 3, [5], mse_loss=[2.6])
    [alert] = checker.check(run_dir)
    assert (alert.step, alert.value) == (3, 2.5)  # where it began, in the shard before
    assert "with 2.6 at step 5" in alert.detail
    assert "best, 1 at step 2" in alert.detail


def test_the_warmup_values_never_set_the_best(run_dir: Path) -> None:
    """Had 0.01 counted, 1.0 would be far above 2 x best from step 2 on."""
    values = [*WARMUP, *[1.0] * 10]
    _shard(run_dir, 1, list(range(len(values))), mse_loss=values)
    assert RunChecker(_only(DIVERGING)).check(run_dir) == []


@pytest.mark.parametrize("best", [0.0, -1.0])
def test_a_loss_whose_best_is_not_positive_never_diverges(run_dir: Path, best: float) -> None:
    values = [best, *[50.0] * 10]
    _shard(run_dir, 1, list(range(len(values))), mse_loss=values)
    rules = _only(Divergence(patience=2, warmup=0))
    assert RunChecker(rules).check(run_dir) == []


def test_divergence_applies_to_the_matching_losses_only(run_dir: Path) -> None:
    values = [1.0, 5.0, 5.0, 5.0]
    _shard(run_dir, 1, [0, 1, 2, 3], l1_loss=values, mse_loss=values)
    rules = _only(Divergence(patience=3, warmup=0, losses=("mse_*",)))
    [alert] = RunChecker(rules).check(run_dir)
    assert alert.loss == "mse_loss"
    assert RunChecker(_only(Divergence(patience=3, warmup=0, losses=("x",)))).check(run_dir) == []


# --- threshold and plateau -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "values", "step", "value"),
    [
        ([98, 99, 100, 101], [0.9, 0.9, 0.6, 0.7], 100, 0.6),  # from after_step on
        ([100, 101, 102], [0.5, INF, 0.6], 102, 0.6),  # strictly above, and finite
    ],
)
def test_threshold_fires_from_after_step_on_strictly_above(
    run_dir: Path, steps: list[int], values: list[float], step: int, value: float
) -> None:
    _shard(run_dir, 1, steps, mse_loss=values)
    rule = Threshold("mse high", "mse_*", above=0.5, after_step=100)
    [alert] = RunChecker(_only(rule)).check(run_dir)
    assert (alert.rule, alert.loss, alert.step, alert.value) == (
        "mse high",
        "mse_loss",
        step,
        value,
    )
    assert '"mse high"' in alert.detail and f"step {step}" in alert.detail


FLAT = Plateau("flat", "mse_loss", steps=10, min_delta=0.1)


@pytest.mark.parametrize(("last_step", "fires"), [(9, False), (10, True)])
def test_plateau_fires_steps_after_the_best(run_dir: Path, last_step: int, fires: bool) -> None:
    # 0.95 improves on 1.0 by less than min_delta: the best stays 1.0 at step 0.
    steps = list(range(last_step + 1))
    _shard(run_dir, 1, steps, mse_loss=[1.0] + [0.95] * last_step)
    alerts = RunChecker(_only(FLAT)).check(run_dir)
    if not fires:
        assert alerts == []
        return
    [alert] = alerts
    assert (alert.rule, alert.step, alert.value) == ("flat", 10, 0.95)
    assert "best 1 at step 0" in alert.detail


def test_an_improvement_above_min_delta_restarts_the_plateau_across_shards(run_dir: Path) -> None:
    checker = RunChecker(_only(FLAT))
    _shard(run_dir, 1, [0, 3, 5], mse_loss=[1.0, NAN, 0.85])
    _shard(run_dir, 2, [10, 14], mse_loss=[0.8, 0.8])
    assert checker.check(run_dir) == []
    _shard(run_dir, 3, [15, 16], mse_loss=[0.76, 0.5])
    [alert] = checker.check(run_dir)
    assert (alert.step, alert.value) == (15, 0.76)
    assert "best 0.85 at step 5" in alert.detail


# --- what is read, and when ------------------------------------------------------------------


def test_already_fired_rules_are_not_returned_again(run_dir: Path) -> None:
    _shard(run_dir, 1, [0], mse_loss=[NAN])
    assert RunChecker(ONLY_NON_FINITE, already_fired={NON_FINITE}).check(run_dir) == []
    assert len(RunChecker(ONLY_NON_FINITE).check(run_dir)) == 1


def test_once_every_shard_rule_fired_a_check_reads_nothing(run_dir: Path) -> None:
    checker = RunChecker(ONLY_NON_FINITE, already_fired={NON_FINITE})
    shutil.rmtree(run_dir / runformat.LOSSES_DIR)
    (run_dir / runformat.LOSSES_DIR).write_text("not a folder")
    assert checker.check(run_dir) == []
    with pytest.raises(UnsafePathError):  # what a checker that still listed would meet
        RunChecker(AlertRules(non_finite=False)).check(run_dir)


def test_a_corrupt_shard_is_passed_over_and_later_ones_checked(run_dir: Path) -> None:
    checker = RunChecker(ONLY_NON_FINITE)
    _shard(run_dir, 1, [0], mse_loss=[1.0])
    bad = run_dir / runformat.LOSSES_DIR / runformat.shard_name(9, writer="bad")
    bad.write_bytes(b"not parquet at all")
    assert checker.check(run_dir) == []
    _shard(run_dir, 10, [5], mse_loss=[NAN])
    [alert] = checker.check(run_dir)
    assert alert.step == 5


def test_other_ranks_shards_are_ignored(run_dir: Path) -> None:
    _shard(run_dir, 1, [0], rank=1, mse_loss=[NAN])
    checker = RunChecker(ONLY_NON_FINITE)
    assert checker.check(run_dir) == []
    _shard(run_dir, 1, [0], rank=0, mse_loss=[NAN])
    assert len(checker.check(run_dir)) == 1


def test_each_shard_is_read_once(run_dir: Path, tmp_path: Path) -> None:
    checker = RunChecker(ONLY_NON_FINITE)
    first = _shard(run_dir, 1, [0], mse_loss=[1.0])
    assert checker.check(run_dir) == []
    assert checker.check(run_dir) == []
    # Were it read again, the same name now holding a NaN would fire.
    other = tmp_path / "other"
    (other / runformat.LOSSES_DIR).mkdir(parents=True)
    first.write_bytes(_shard(other, 1, [0], mse_loss=[NAN]).read_bytes())
    assert checker.check(run_dir) == []
    assert len(RunChecker(ONLY_NON_FINITE).check(run_dir)) == 1  # a fresh checker reads it


def test_a_linked_losses_folder_is_refused(run_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (run_dir / runformat.LOSSES_DIR).rename(elsewhere)
    (run_dir / runformat.LOSSES_DIR).symlink_to(elsewhere)
    with pytest.raises(UnsafePathError):
        RunChecker(AlertRules()).check(run_dir)


def test_another_writers_types_are_read(run_dir: Path) -> None:
    table = pa.table(
        {
            "step": pa.array([1, 2, None], pa.int32()),
            "mse_loss": pa.array([1.0, NAN, NAN], pa.float32()),
            "count_loss": pa.array([1, 2, 3], pa.int16()),
            "note": pa.array(["a", "b", "c"]),
        }
    )
    runformat.write_shard(run_dir, 1, table, writer="other")
    runformat.write_shard(run_dir, 2, pa.table({"step": pa.array(["1"])}), writer="other")
    [alert] = RunChecker(ONLY_NON_FINITE).check(run_dir)  # the shard of text steps is passed over
    assert (alert.loss, alert.step) == ("mse_loss", 2)


def test_stalled_is_a_rule_name_but_no_shard_fires_it(run_dir: Path) -> None:
    assert STALLED in AlertRules().names()
    _shard(run_dir, 1, [0, 1_000_000], mse_loss=[1.0, 1.0])
    assert RunChecker(AlertRules(non_finite=False, divergence=None)).check(run_dir) == []


# --- Alert as JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"), [(0.25, 0.25), (NAN, "nan"), (INF, "inf"), (-INF, "-inf"), (None, None)]
)
def test_an_alert_is_strict_json(value: float | None, stored: object) -> None:
    alert = Alert(NON_FINITE, "mse_loss", 3, value, "mse_loss is nan at step 3.")
    doc = json.loads(json.dumps(alert.to_json(), allow_nan=False))
    assert doc == {
        "rule": NON_FINITE,
        "loss": "mse_loss",
        "step": 3,
        "value": stored,
        "detail": "mse_loss is nan at step 3.",
    }
