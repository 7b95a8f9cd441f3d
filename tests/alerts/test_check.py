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
    Rising,
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
    assert alert.detail == (
        "mse_loss is NaN at step 4; its last finite value was 0.7 at step 3 (rule non-finite)."
    )
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

# Spans of 10 values: a floor is the 2nd lowest of ten (nine are at or above it), a level the
# median. A jump is a floor above 4 x the span before's level; an explosion 10 x the lowest level.
DIVERGING = Divergence(factor=10.0, jump=4.0, patience=10, warmup=0)


def _feed(run_dir: Path, rules: AlertRules, values: list[float], shard_rows: int) -> list[Alert]:
    checker = RunChecker(rules)
    alerts: list[Alert] = []
    for seq, first in enumerate(range(0, len(values), shard_rows), start=1):
        rows = values[first : first + shard_rows]
        _shard(run_dir, seq, list(range(first, first + len(rows))), mse_loss=rows)
        alerts += checker.check(run_dir)
    return alerts


@pytest.mark.parametrize("shard_rows", [1, 7, 1000])
def test_a_jump_that_stays_fires_once_nine_in_the_last_ten_are_above(
    run_dir: Path, shard_rows: int
) -> None:
    values = [1.0] * 30 + [5.0] * 30
    [alert] = _feed(run_dir, _only(DIVERGING), values, shard_rows)
    assert (alert.rule, alert.loss, alert.step, alert.value) == (DIVERGENCE, "mse_loss", 38, 5.0)
    assert alert.detail == (
        "mse_loss rose 5x in 10 steps, from 1 at step 28 to 5 at step 38, and stayed there: "
        "9 of its last 10 values are at least 5 (rule divergence)."
    )


@pytest.mark.parametrize(("dips", "fires"), [(1, True), (2, False)])
def test_one_value_in_ten_may_dip_below_a_jump(run_dir: Path, dips: int, fires: bool) -> None:
    jumped = [5.0] * (10 - dips) + [1.0] * dips
    values = [1.0] * 30 + jumped + [1.0] * 30
    alerts = _feed(run_dir, _only(DIVERGING), values, 1000)
    assert [a.step for a in alerts] == ([38] if fires else [])


@pytest.mark.parametrize(
    "spiky",
    [
        [1.0] * 30 + [100.0] * 8 + [1.0] * 30,  # resampling: a spike that recovers
        [1e6 if i % 5 == 0 else 1.0 for i in range(100)],  # a bad batch every fifth step
        [1.0 if i % 2 else 0.01 for i in range(100)],  # half the batches tiny
    ],
)
def test_spikes_and_noise_never_fire(run_dir: Path, spiky: list[float]) -> None:
    assert _feed(run_dir, _only(DIVERGING), spiky, 1000) == []


@pytest.mark.parametrize("shard_rows", [1, 13, 1000])
def test_a_slow_explosion_fires_against_the_lowest_level(run_dir: Path, shard_rows: int) -> None:
    """1.2x a step from index 20: no span is 4x the one before it, but the floor passes 10 x
    the lowest level (1, first of the span that ended at step 9) at index 40, where the 2nd
    lowest of the last ten is 1.2 ** 13 = 10.7."""
    values = [1.0] * 20 + [1.2 ** (i - 19) for i in range(20, 60)]
    [alert] = _feed(run_dir, _only(DIVERGING), values, shard_rows)
    assert alert.step == 40 and alert.value == pytest.approx(1.2**13)
    assert alert.detail.startswith(
        "mse_loss rose 10.7x in 31 steps, from 1 at step 9 (its lowest level) to 10.7 at step 40,"
    )


def test_a_big_shard_and_long_spans_give_what_small_shards_give(run_dir: Path) -> None:
    """Spans of 2000: a shard of 12,000 values is taken in chunks of 500."""
    rules = _only(Divergence(patience=2000, warmup=0))
    values = [1.0 + 0.1 * math.sin(i) for i in range(6000)] + [30.0] * 6000
    [whole] = _feed(run_dir, rules, values, 12_000)
    other = run_dir.parent / "other"
    (other / runformat.LOSSES_DIR).mkdir(parents=True)
    [pieces] = _feed(other, rules, values, 999)
    assert whole == pieces and whole.step == 7799
    assert "1,800 of its last 2,000 values" in whole.detail


def test_the_warmup_values_never_count(run_dir: Path) -> None:
    """Ten values of 0.001 would make a lowest level of 0.001, which 1.0 is 1000x above."""
    values = [0.001] * 10 + [1.0] * 50
    assert len(_feed(run_dir, _only(DIVERGING), values, 1000)) == 1
    other = run_dir.parent / "other"
    (other / runformat.LOSSES_DIR).mkdir(parents=True)
    assert (
        _feed(other, _only(Divergence(factor=10.0, jump=4.0, patience=10, warmup=10)), values, 7)
        == []
    )


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_a_loss_whose_level_is_not_positive_never_diverges(run_dir: Path, low: float) -> None:
    values = [low] * 30 + [50.0] * 30
    assert _feed(run_dir, _only(DIVERGING), values, 1000) == []


def test_nan_and_inf_are_passed_over(run_dir: Path) -> None:
    values = [1.0] * 30 + [5.0, NAN, 5.0, INF] * 5
    [alert] = _feed(run_dir, _only(DIVERGING), values, 1000)
    assert alert.step == 46  # the ninth finite value of the jump


def test_divergence_applies_to_the_matching_losses_only(run_dir: Path) -> None:
    values = [1.0] * 20 + [50.0] * 20
    steps = list(range(len(values)))
    _shard(run_dir, 1, steps, l1_loss=values, mse_loss=values)
    rules = _only(Divergence(patience=10, warmup=0, losses=("mse_*",)))
    [alert] = RunChecker(rules).check(run_dir)
    assert alert.loss == "mse_loss"
    assert RunChecker(_only(Divergence(patience=10, warmup=0, losses=("x",)))).check(run_dir) == []


def test_a_loss_can_have_a_divergence_rule_of_its_own(run_dir: Path) -> None:
    """The auxiliary loss, left out of the built-in rule, held to a 100x jump."""
    values = [1.0] * 20 + [50.0] * 10 + [500.0] * 20
    steps = list(range(len(values)))
    _shard(run_dir, 1, steps, auxiliary_reconstruction_loss=values)
    own = Rising("aux jumps", "aux*", Divergence(jump=100.0, patience=10, losses=("aux*",)))
    [alert] = RunChecker(AlertRules(divergence=None, user=(own,))).check(run_dir)
    assert (alert.rule, alert.loss, alert.step) == (
        "aux jumps",
        "auxiliary_reconstruction_loss",
        38,
    )
    assert alert.detail.endswith('(rule "aux jumps").')


def test_by_default_the_overall_and_reconstruction_losses_are_watched_not_penalties(
    run_dir: Path,
) -> None:
    """A penalty term rising 1000x is not, by itself, a run diverging."""
    steps = list(range(600))
    rising = [0.01] * 300 + [10.0] * 300
    flat = [0.5] * 600
    _shard(run_dir, 1, steps, l1_loss=rising, l0_loss=rising, mse_loss=flat, overall_loss=flat)
    _shard(run_dir, 2, steps, rank=None, writer="t2", auxiliary_reconstruction_loss=rising)
    assert RunChecker(AlertRules()).check(run_dir) == []
    for loss in ("overall_loss", "mse_loss"):
        other = run_dir.parent / loss
        (other / runformat.LOSSES_DIR).mkdir(parents=True)
        _shard(other, 1, steps, **{loss: rising})
        [alert] = RunChecker(AlertRules()).check(other)
        assert (alert.rule, alert.loss) == (DIVERGENCE, loss)


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
