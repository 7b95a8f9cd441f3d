"""Checking one run against its alert rules while it trains, a new shard at a time.

A `RunChecker` keeps, per loss and rule, a few numbers (a best, a count, the last finite
value; the divergence rule its last 2 x patience - 1 values), so a `check` costs what the shards
it has not read yet cost, plus listing `losses/`, not what the run holds. Within a shard each
rule is numpy over the whole column (the divergence rule a chunk of at most a million span
values at a time); only the plateau rule loops in Python, and only over the values that are a
new lowest.

Shards are known by name and read once (a writer never replaces one). New shards are fed in
write order; one that appears with a lower number than a shard already read (a second writer
of the run) is fed after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from .. import runformat
from . import words
from .rules import DIVERGENCE, NON_FINITE, STALLED, AlertRules, Divergence, Plateau, Threshold

logger = logging.getLogger(__name__)

# How many values (spans x their length) the divergence rule orders at once: 8 MB of float64.
_SPAN_BUDGET = 1_000_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_Values = tuple[FloatArray, BoolArray | None]  # a loss in a shard: values, rows logged (None: all)


@dataclass(frozen=True)
class Alert:
    """One rule firing: the loss, step and value it is about (None for a rule about the whole
    run), and `detail`, one plain sentence naming them and the rule, for mail and logs."""

    rule: str
    loss: str | None
    step: int | None
    value: float | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        """Strict JSON (no NaN or Infinity tokens, which many parsers refuse): a value that is
        not finite is the string "nan", "inf" or "-inf"."""
        value: float | str | None = self.value
        if self.value is not None and not math.isfinite(self.value):
            value = str(self.value)
        return dict(rule=self.rule, loss=self.loss, step=self.step, value=value, detail=self.detail)


class RunChecker:
    """One run's detectors, fed each shard once, in write order."""

    def __init__(self, rules: AlertRules, already_fired: Iterable[str] = ()) -> None:
        """`already_fired`: rules an earlier checker of this run fired (a restarted daemon's
        record), never returned again."""
        self._rules = rules
        self._fired = set(already_fired)
        self._shard_rules = {name for name in rules.names() if name != STALLED}
        self._read: set[str] = set()  # shard names, read or found unreadable
        self._detectors: dict[str, list[_Detector]] = {}  # per loss, made when it first appears

    def check(self, run_dir: Path) -> list[Alert]:
        """The alerts the run's new shards raise. Only unranked and rank-0 shards make the
        history. A shard that cannot be read, or would take more than a run's read budget
        (storage.budget) once decoded, is passed over for good (the report names it): shards
        are read one at a time, so a check holds at most one budget's worth.

        Raises RunDirectoryError (UnsafePathError among them) when `losses/` cannot be listed.
        """
        if self._shard_rules <= self._fired:
            return []  # nothing left that a shard could fire
        alerts: list[Alert] = []
        for _seq, rank, path in runformat.iter_shards(run_dir, skip=self._read):
            self._read.add(path.name)
            if rank not in (None, 0):
                continue
            try:
                steps, losses = _columns(runformat.read_shard(path))
            # CorruptShardError and ReadBudgetError are OSErrors; ArrowException: a value
            # that cannot be converted (a uint64 step above int64)
            except (OSError, pa.ArrowException) as exc:
                logger.info("alerts pass over a shard: %s", exc)
                continue
            alerts += self._feed(steps, losses)
        return alerts

    def check_table(self, table: pa.Table) -> list[Alert]:
        """The alerts new rows of another tool's run raise (`step`, then one number column per
        loss, as a source's wide table has them), fed once each, in step order."""
        if self._shard_rules <= self._fired or not table.num_rows:
            return []
        return self._feed(*_columns(table))

    def _feed(self, steps: IntArray, losses: dict[str, _Values]) -> list[Alert]:
        hits: dict[str, tuple[int, Alert]] = {}  # per rule: its first row in the shard
        for loss, (values, logged) in losses.items():
            if loss not in self._detectors:
                self._detectors[loss] = _detectors_for(loss, self._rules)
            active = [d for d in self._detectors[loss] if d.rule not in self._fired]
            if not active:
                continue
            column = _Column(steps, values, logged)
            for detector in active:
                hit = detector.scan(column)
                if hit is not None and (
                    detector.rule not in hits or hit[0] < hits[detector.rule][0]
                ):
                    hits[detector.rule] = hit
        self._fired.update(hits)
        return [alert for _row, alert in sorted(hits.values(), key=lambda hit: hit[0])]


def _columns(table: pa.Table) -> tuple[IntArray, dict[str, _Values]]:
    """The rows' steps, and per loss its values as float64 with NaN where a row did not log
    it, and a mask of the rows that did (None: all of them). Rows without a step are dropped.
    `table` is as `runformat.read_shard` gives it: an integer `step` and number columns."""
    step = table.column(runformat.STEP)
    if step.null_count:
        table = table.filter(step.is_valid())
    steps = table.column(runformat.STEP).cast(pa.int64()).to_numpy()
    losses: dict[str, _Values] = {}
    for name in table.column_names:
        if name in runformat.RESERVED_COLUMNS:
            continue
        values = table.column(name).cast(pa.float64(), safe=False)
        logged = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else None
        losses[name] = (values.to_numpy(zero_copy_only=False), logged)
    return steps, losses


class _Column:
    """One loss in one shard: each row's step and value (NaN where not logged), which rows
    logged it (None: all), and the finite values with their steps and rows, found once for
    every rule."""

    def __init__(self, steps: IntArray, values: FloatArray, logged: BoolArray | None) -> None:
        self.steps = steps
        self.values = values
        self.logged = logged
        self.finite = np.isfinite(values)
        self.rows = np.flatnonzero(self.finite)
        self.finite_values = values[self.finite]
        self.finite_steps = steps[self.finite]


class _Detector(Protocol):
    rule: str

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        """Take in one shard's column; the row and alert where the rule fires, if it does."""


def _detectors_for(loss: str, rules: AlertRules) -> list[_Detector]:
    found: list[_Detector] = []
    if rules.non_finite:
        found.append(_NonFinite(loss))
    divergence = rules.divergence
    if divergence is not None and any(fnmatchcase(loss, p) for p in divergence.losses):
        found.append(_Diverging(loss, divergence, DIVERGENCE))
    for rule in rules.user:
        if not fnmatchcase(loss, rule.loss):
            continue
        if isinstance(rule, Threshold):
            found.append(_Above(loss, rule))
        elif isinstance(rule, Plateau):
            found.append(_Flat(loss, rule))
        else:
            found.append(_Diverging(loss, rule.settings, rule.name))
    return found


class _NonFinite:
    """The first logged NaN, inf or -inf; and the last finite value before it, to say where the
    loss was."""

    def __init__(self, loss: str) -> None:
        self.rule = NON_FINITE
        self.loss = loss
        self.last: tuple[int, float] | None = None  # the last finite value's step and value

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        bad = ~column.finite if column.logged is None else ~column.finite & column.logged
        rows = np.flatnonzero(bad)
        finite = column.rows
        if not rows.size:
            if finite.size:
                self.last = int(column.finite_steps[-1]), float(column.finite_values[-1])
            return None
        row = int(rows[0])
        before = int(np.searchsorted(finite, row))  # finite values in rows before it
        if before:
            last = before - 1
            self.last = int(column.finite_steps[last]), float(column.finite_values[last])
        step, value = int(column.steps[row]), float(column.values[row])
        was = (
            f"; its last finite value was {words.number(self.last[1])} at step "
            f"{words.count(self.last[0])}"
            if self.last is not None
            else ""
        )
        detail = (
            f"{self.loss} is {words.number(value)} at step {words.count(step)}{was} "
            f"(rule {self.rule})."
        )
        return row, Alert(self.rule, self.loss, step, value, detail)


class _Diverging:
    """The divergence rule on one loss (rules.py defines it). It keeps the last 2 x patience - 1
    finite values (with their steps), enough for the next value to have its two spans, how many
    values it has taken, and the lowest level so far with the step its span ended.

    It looks at every `patience // 10`-th value (every value for a patience under 20): each look
    orders two spans, so looking at every value would cost 2 x patience per value; a rise is
    still seen within a tenth of a span."""

    def __init__(self, loss: str, settings: Divergence, rule: str) -> None:
        self.rule = rule
        self.loss = loss
        self.settings = settings
        self.warmup_left = settings.warmup
        self.values: FloatArray = np.empty(0)
        self.steps: IntArray = np.empty(0, dtype=np.int64)
        self.taken = 0  # values fed so far: the looks fall on the same ones however they come
        self.stride = max(1, settings.patience // 10)
        self.lowest, self.lowest_step = math.inf, 0

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        values, steps, rows = column.finite_values, column.finite_steps, column.rows
        if self.warmup_left:
            skip = min(self.warmup_left, len(values))
            self.warmup_left -= skip
            values, steps, rows = values[skip:], steps[skip:], rows[skip:]
        # Each value costs a sort of two spans: a chunk at a time bounds the memory it takes.
        chunk = max(1, _SPAN_BUDGET // self.settings.patience)
        for start in range(0, len(values), chunk):
            hit = self._take(values[start : start + chunk], steps[start : start + chunk])
            if hit is not None:
                at, alert = hit
                return int(rows[start + at]), alert
        return None

    def _take(self, values: FloatArray, steps: IntArray) -> tuple[int, Alert] | None:
        """Feed these values: where the rule fires (an index into them) and its alert, if it
        does."""
        carried, first = len(self.values), self.taken - len(self.values)  # values[0]'s number
        self.taken += len(values)
        values = np.concatenate((self.values, values))
        steps = np.concatenate((self.steps, steps))
        span = self.settings.patience
        keep = 2 * span - 1  # never more, so the first new value is at or past this index
        ends = np.arange(keep, len(values))
        ends = ends[(first + ends + 1) % self.stride == 0]
        if ends.size:
            # Index e ends the span e - span + 1, whose floor is compared with the level of
            # the span before it, e - 2 span + 1 (ending at e - span). Spans are zero-copy views.
            spans = np.lib.stride_tricks.sliding_window_view(values, span)
            floor = _order_statistic(spans[ends - span + 1], span // 10)
            before = _order_statistic(spans[ends - keep], span // 2)
            lowest = np.minimum(self.lowest, np.minimum.accumulate(before))
            jumped = (before > 0) & (floor > self.settings.jump * before)
            exploded = (lowest > 0) & (floor > self.settings.factor * lowest)
            fired = np.flatnonzero(jumped | exploded)
            count = int(fired[0]) + 1 if fired.size else len(ends)
            self._lower(before[:count], steps[ends[:count] - span])
            if fired.size:
                i = int(fired[0])
                at = int(ends[i])
                if jumped[i]:
                    reference, since, from_lowest = float(before[i]), int(steps[at - span]), False
                else:
                    reference, since, from_lowest = self.lowest, self.lowest_step, True
                alert = self._alert(float(floor[i]), int(steps[at]), reference, since, from_lowest)
                return at - carried, alert
        self.values, self.steps = values[-keep:], steps[-keep:]
        return None

    def _lower(self, levels: FloatArray, steps: IntArray) -> None:
        """Take in the levels of spans that ended at `steps`: the lowest so far, and where."""
        if len(levels):
            low = int(np.argmin(levels))
            if levels[low] < self.lowest:
                self.lowest, self.lowest_step = float(levels[low]), int(steps[low])

    def _alert(
        self, floor: float, step: int, reference: float, reference_step: int, from_lowest: bool
    ) -> Alert:
        """`reference`: the level it rose from, that of the span that ended at
        `reference_step`: the span just before, or (`from_lowest`) the lowest so far."""
        settings = self.settings
        lowest = " (its lowest level)" if from_lowest else ""
        detail = (
            f"{self.loss} rose {words.number(floor / reference)}x in "
            f"{words.count(step - reference_step)} steps, from {words.number(reference)} at "
            f"step {words.count(reference_step)}{lowest} to {words.number(floor)} at step "
            f"{words.count(step)}, and stayed there: "
            f"{words.count(settings.patience - settings.patience // 10)} of its last "
            f"{words.count(settings.patience)} "
            f"values are at least {words.number(floor)} ({_rule_words(self.rule)})."
        )
        return Alert(self.rule, self.loss, step, floor, detail)


def _rule_words(rule: str) -> str:
    """`rule divergence` for the built-in rule, `rule "aux explodes"` for a user's."""
    return f"rule {rule}" if rule == DIVERGENCE else f'rule "{rule}"'


def _order_statistic(spans: FloatArray, k: int) -> FloatArray:
    """Each row's k-th smallest value (a copy is partitioned, not sorted)."""
    rows = np.array(spans)
    rows.partition(k, axis=1)
    return rows[:, k]


class _Above:
    """A threshold rule on one loss; it needs no state."""

    def __init__(self, loss: str, rule: Threshold) -> None:
        self.rule = rule.name
        self.loss = loss
        self.settings = rule

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        rule = self.settings
        hits = np.flatnonzero(
            (column.finite_values > rule.above) & (column.finite_steps >= rule.after_step)
        )
        if not hits.size:
            return None
        at = int(hits[0])
        step, value = int(column.finite_steps[at]), float(column.finite_values[at])
        since = f" from step {words.count(rule.after_step)} on" if rule.after_step else ""
        detail = (
            f"{self.loss} is {words.number(value)} at step {words.count(step)}, above "
            f'{words.number(rule.above)}{since} (rule "{rule.name}").'
        )
        return int(column.rows[at]), Alert(self.rule, self.loss, step, value, detail)


class _Flat:
    """A plateau rule on one loss: its best (moved only by an improvement of more than
    min_delta) and that best's step, and the lowest value seen (bounds where one can be)."""

    def __init__(self, loss: str, rule: Plateau) -> None:
        self.rule = rule.name
        self.loss = loss
        self.settings = rule
        self.best, self.best_step = math.inf, 0
        self.lowest = math.inf

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        values, steps = column.finite_values, column.finite_steps
        if not len(values):
            return None
        # An improvement is below best - min_delta, and best - min_delta is never above the
        # lowest value before it: only a new lowest can be one, so only those are looped over.
        before = np.minimum.accumulate(np.concatenate(([self.lowest], values[:-1])))
        improved = np.zeros(len(values), dtype=bool)
        best = self.best
        for i in np.flatnonzero(values < before).tolist():
            if values[i] < best - self.settings.min_delta:
                best = float(values[i])
                improved[i] = True
        last = np.maximum.accumulate(np.where(improved, np.arange(len(values)), -1))
        best_steps = np.where(last >= 0, steps[last], self.best_step)
        fired = np.flatnonzero(~improved & (steps - best_steps >= self.settings.steps))
        if fired.size:
            at = int(fired[0])
            best_then = float(values[last[at]]) if last[at] >= 0 else self.best
            return int(column.rows[at]), self._alert(at, values, steps, best_then, best_steps)
        self.best, self.best_step = best, int(best_steps[-1])
        self.lowest = min(float(before[-1]), float(values[-1]))
        return None

    def _alert(
        self, at: int, values: FloatArray, steps: IntArray, best: float, best_steps: IntArray
    ) -> Alert:
        step, value, best_step = int(steps[at]), float(values[at]), int(best_steps[at])
        detail = (
            f"{self.loss} has not improved by more than {words.number(self.settings.min_delta)} "
            f"in {words.count(step - best_step)} steps: {words.number(value)} at step "
            f"{words.count(step)}, best {words.number(best)} at step {words.count(best_step)} "
            f'(rule "{self.rule}").'
        )
        return Alert(self.rule, self.loss, step, value, detail)
