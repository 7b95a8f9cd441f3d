"""Checking one run against its alert rules while it trains, a new shard at a time.

A `RunChecker` keeps, per loss and rule, a few numbers (a best, a streak, a count), so a
`check` costs what the shards it has not read yet cost, plus listing `losses/`, not what the
run holds. Within a shard each rule is numpy over the whole column; only the plateau rule
loops in Python, and only over the values that are a new lowest.

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
from .rules import DIVERGENCE, NON_FINITE, STALLED, AlertRules, Divergence, Plateau, Threshold

logger = logging.getLogger(__name__)

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
        found.append(_Diverging(loss, divergence))
    for rule in rules.user:
        if fnmatchcase(loss, rule.loss):
            found.append(_Above(loss, rule) if isinstance(rule, Threshold) else _Flat(loss, rule))
    return found


class _NonFinite:
    """The first logged NaN, inf or -inf."""

    def __init__(self, loss: str) -> None:
        self.rule = NON_FINITE
        self.loss = loss

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        bad = ~column.finite if column.logged is None else ~column.finite & column.logged
        rows = np.flatnonzero(bad)
        if not rows.size:
            return None
        row = int(rows[0])
        step, value = int(column.steps[row]), float(column.values[row])
        detail = f"{self.loss} is {value} at step {step} (rule {self.rule})."
        return row, Alert(self.rule, self.loss, step, value, detail)


class _Diverging:
    """The divergence rule on one loss: its warm-up left, best, and the streak above the line."""

    def __init__(self, loss: str, settings: Divergence) -> None:
        self.rule = DIVERGENCE
        self.loss = loss
        self.settings = settings
        self.warmup_left = settings.warmup
        self.best, self.best_step = math.inf, 0
        self.streak, self.streak_start = 0, 0  # values in a row above the line, the first's step
        self.streak_start_value = math.nan  # and its value

    def scan(self, column: _Column) -> tuple[int, Alert] | None:
        values, steps, rows = column.finite_values, column.finite_steps, column.rows
        if self.warmup_left:
            skip = min(self.warmup_left, len(values))
            self.warmup_left -= skip
            values, steps, rows = values[skip:], steps[skip:], rows[skip:]
        if not len(values) or self.best <= 0:  # a best of 0 or less only goes lower: never
            return None
        before = np.minimum.accumulate(np.concatenate(([self.best], values[:-1])))  # each's best
        line = before + (self.settings.factor - 1) * np.abs(before)  # inf while there is no best
        above = (values > line) & (before > 0)
        index = np.arange(len(values))
        # Where each streak began: the last value not above the line, before the shard for the
        # carried streak; so streak[i] counts the values in a row above the line up to i.
        last_below = np.maximum.accumulate(np.where(above, -1 - self.streak, index))
        streak = index - last_below
        fired = np.flatnonzero(streak >= self.settings.patience)
        if fired.size:
            at = int(fired[0])
            start = int(last_below[at]) + 1
            began = (
                (int(steps[start]), float(values[start]))
                if start >= 0
                else (self.streak_start, self.streak_start_value)
            )
            return int(rows[at]), self._alert(at, began, values, steps, before)
        self.streak = int(streak[-1])
        if self.streak and last_below[-1] >= -1:
            first = int(last_below[-1]) + 1
            self.streak_start, self.streak_start_value = int(steps[first]), float(values[first])
        lowest = int(np.argmin(values))  # the first of equal lows: the best is where it was set
        if values[lowest] < self.best:
            self.best, self.best_step = float(values[lowest]), int(steps[lowest])
        return None

    def _alert(
        self,
        at: int,
        began: tuple[int, float],
        values: FloatArray,
        steps: IntArray,
        before: FloatArray,
    ) -> Alert:
        """The alert's step and value are where the rise began (`began`); the detail adds
        where the streak completed and the best it rose from."""
        improved = np.flatnonzero(values[:at] < before[:at])
        best_step = int(steps[improved[-1]]) if improved.size else self.best_step
        best, value, step = float(before[at]), float(values[at]), int(steps[at])
        start, start_value = began
        detail = (
            f"{self.loss} is diverging since step {start} ({start_value:.6g}): with {value:.6g} "
            f"at step {step}, {self.settings.patience} logged values in a row are above "
            f"{self.settings.factor:g} x its best, {best:.6g} at step {best_step} "
            f"(rule {self.rule})."
        )
        return Alert(self.rule, self.loss, start, start_value, detail)


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
        since = f" from step {rule.after_step} on" if rule.after_step else ""
        detail = (
            f"{self.loss} is {value:.6g} at step {step}, above {rule.above:g}{since} "
            f'(rule "{rule.name}").'
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
            f"{self.loss} has not improved by more than {self.settings.min_delta:g} in "
            f"{step - best_step} steps: {value:.6g} at step {step}, best {best:.6g} at step "
            f'{best_step} (rule "{self.rule}").'
        )
        return Alert(self.rule, self.loss, step, value, detail)
