"""What to warn about while a run trains, and how `[alerts]` in a --config file says it.

Built-in rules (each fires at most once per run):

- **non-finite**: the first logged value that is NaN, inf or -inf, in any loss. A null is "not
  logged at this step", never a value.
- **divergence** (on by default): a watched loss (its name matches one of `losses`, fnmatch
  patterns) has risen far above where it was and stayed there. A loss's *level* over a span of
  logged values is their median (a bad batch, a heavy-tailed term or a spike moves it little);
  its *floor* over the last `patience` values is their 10th percentile (nine in ten are at or
  above it, so the rise has lasted). After the first `warmup` finite values, which are passed
  over, the rule fires at the first value where the floor of the last `patience` values is more
  than `jump` x the level of the `patience` values before them (a persistent jump), or more
  than `factor` x the lowest level of any `patience` values in a row so far (an explosion,
  however slow). Only a positive level counts: a ratio to zero or less means nothing. NaN and
  inf are passed over (the non-finite rule reports them). The rule looks at every
  `patience // 10`-th value (each look orders two spans), so it fires within a tenth of a span
  of the first value where this holds. The alert names the step where it fired, the floor
  there, and the level it rose from with its step.

  By default it watches the overall and the reconstruction loss (`losses`), which is what a
  person means by "diverging": a penalty term rising is normal in SAE training (the L1
  coefficient warms up, JumpReLU's sparsity target relaxes, top-k's auxiliary loss is noisy
  and starts at 0). `jump` 10 and `factor` 100 sit above what healthy runs show (resampling
  dead features spikes MSE ~10x for tens of steps, then it recovers; an L1 warm-up lifts
  MSE and the overall loss a few-fold above their early low); `patience` 100 outlasts a
  resampling spike and a run of bad batches. docs/alerts.md gives the corpus that checks it.
- **stalled**: a running run whose trainer stopped writing; the daemon judges it from run.json,
  so here it is only a switch.

User rules, each with its own name:

- **threshold** (`above`): the first finite logged value above `above` at a step of at least
  `after_step`.
- **plateau** (`no_improvement_steps`): the best value improves only when a finite value is
  below `best - min_delta` (it becomes the new best, at its step); the rule fires at the first
  finite logged value, not itself an improvement, at a step `no_improvement_steps` or more after
  the best's step.
- **divergence** (`jump` or `factor`, with `patience` and `warmup` if wanted): the divergence
  rule above with settings of its own, on the losses `loss` matches: one loss can be held to
  other thresholds than the built-in rule's (leave it out of that rule's `losses`).

    [alerts]
    non_finite = true                 # optional, default true
    stalled = true                    # optional, default true
    divergence = false                # optional: off; or a table:
    [alerts.divergence]
    factor = 30.0                     # above 1; default 100
    jump = 5.0                        # above 1; default 10
    patience = 200                    # 2 to 10000; default 100
    warmup = 500                      # 0 or more; default 0
    losses = ["overall_loss", "mse_*"]  # default: DEFAULT_DIVERGENCE_LOSSES
    [[alerts.rule]]
    name = "mse above 0.5 after warm-up"
    loss = "mse_loss"
    above = 0.5
    after_step = 1000                 # optional, default 0
    [[alerts.rule]]
    name = "overall stuck"
    loss = "overall_loss"
    no_improvement_steps = 5000
    min_delta = 0.001                 # optional, default 0
    [[alerts.rule]]
    name = "aux explodes"
    loss = "auxiliary_reconstruction_loss"
    factor = 1000.0                   # and/or jump; patience, warmup optional
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

NON_FINITE, DIVERGENCE, STALLED = "non-finite", "divergence", "stalled"
BUILT_IN = (NON_FINITE, DIVERGENCE, STALLED)

_T = TypeVar("_T")


# A divergence check orders each new value's two spans of `patience` values: its cost per value.
MAX_PATIENCE = 10_000
# The overall loss (as SAELens and most trainers name it) and the reconstruction loss.
DEFAULT_DIVERGENCE_LOSSES = (
    "overall_loss",
    "loss",
    "total_loss",
    "train_loss",
    "mse_loss",
    "reconstruction_loss",
)


@dataclass(frozen=True)
class Divergence:
    """The divergence rule's settings (the module docstring defines the rule); the ranges in
    the comments are checked by `parse_alert_rules`."""

    factor: float = 100.0  # above 1: an explosion, x the lowest level so far
    jump: float = 10.0  # above 1: a jump, x the level just before
    patience: int = 100  # 2 to MAX_PATIENCE
    warmup: int = 0  # 0 or more
    losses: tuple[str, ...] = DEFAULT_DIVERGENCE_LOSSES  # fnmatch patterns, at least one


@dataclass(frozen=True)
class Threshold:
    """A user rule: `loss` (an fnmatch pattern) above `above` (finite) from `after_step` on."""

    name: str
    loss: str
    above: float
    after_step: int = 0


@dataclass(frozen=True)
class Plateau:
    """A user rule: `loss` (an fnmatch pattern) not better by more than `min_delta` (0 or more)
    for `steps` (1 or more) steps."""

    name: str
    loss: str
    steps: int
    min_delta: float = 0.0


@dataclass(frozen=True)
class Rising:
    """A user rule: the divergence rule, with `settings` of its own, on `loss` (an fnmatch
    pattern; `settings.losses` is that one pattern)."""

    name: str
    loss: str
    settings: Divergence


@dataclass(frozen=True)
class AlertRules:
    """Which rules a run is checked against: the built-in ones (all on by default) and the
    config's own, `user`."""

    non_finite: bool = True
    divergence: Divergence | None = Divergence()  # None: off
    stalled: bool = True
    user: tuple[Threshold | Plateau | Rising, ...] = ()

    def names(self) -> list[str]:
        """Every enabled rule's name: the built-in ones first, then the user's in their order."""
        switches = (self.non_finite, self.divergence is not None, self.stalled)
        built_in = [name for name, on in zip(BUILT_IN, switches, strict=True) if on]
        return built_in + [rule.name for rule in self.user]


def parse_alert_rules(section: object, path: Path) -> AlertRules:
    """The rules of an `[alerts]` table, as `tomllib` gives it; a missing key keeps its default.

    Raises ConfigError, starting `{path}: ` and naming the table, the rule and the key, for an
    unknown key, a wrong type (a bool is not a number), a number that is not finite or out of
    range, or a rule that is not exactly one of a threshold and a plateau, or whose name is
    missing, empty, a built-in rule's or another rule's.
    """
    table = _table(section, path, "[alerts]")
    _known(table, _ALERT_KEYS, path, "[alerts]")
    rules = AlertRules()
    non_finite = _value(table, "non_finite", _flag, rules.non_finite, path, "[alerts]")
    stalled = _value(table, "stalled", _flag, rules.stalled, path, "[alerts]")
    divergence = rules.divergence
    if "divergence" in table:
        divergence = _divergence(table["divergence"], path)
    entries = table.get("rule", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: [alerts] rule = {entries!r}: expected [[alerts.rule]] tables")
    user: list[Threshold | Plateau | Rising] = []
    for number, entry in enumerate(entries, start=1):
        rule = _user_rule(entry, number, path)
        label = _rule_label(number, rule.name)
        if rule.name in BUILT_IN:
            raise ConfigError(
                f"{path}: {label}: the name of a built-in rule ({', '.join(BUILT_IN)}); "
                "choose another"
            )
        earlier = [i for i, other in enumerate(user, start=1) if other.name == rule.name]
        if earlier:
            raise ConfigError(
                f"{path}: {label}: rule {earlier[0]} has this name too; each rule needs its own"
            )
        user.append(rule)
    return AlertRules(non_finite, divergence, stalled, tuple(user))


def _divergence(value: object, path: Path) -> Divergence | None:
    if isinstance(value, bool):
        return Divergence() if value else None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: [alerts] divergence = {value!r}: expected true, false or a table"
        )
    where = "[alerts.divergence]"
    _known(value, _DIVERGENCE_KEYS, path, where)
    # The keys are Divergence's fields: one left out keeps its default.
    return Divergence(
        **{key: _checked(value, key, _DIVERGENCE_KEYS[key], path, where) for key in value}
    )


def _user_rule(entry: object, number: int, path: Path) -> Threshold | Plateau | Rising:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: [alerts] rule {number}: expected a table, got {entry!r}")
    label = _rule_label(number, entry.get("name"))
    where = f"{label}:"  # before a key: `[alerts] rule 2 ("x"): above = ...`
    _known(entry, _RULE_KEYS, path, where)
    for key in ("name", "loss"):
        if key not in entry:
            raise ConfigError(f"{path}: {label}: missing {key}")
    name = _value(entry, "name", _name, "", path, where)
    loss = _value(entry, "loss", _pattern, "", path, where)
    kinds = [kind for kind, (markers, _) in _KINDS.items() if any(k in entry for k in markers)]
    if len(kinds) != 1:
        count = "more than one" if kinds else "none"
        raise ConfigError(
            f"{path}: {label}: has {count} of above (a threshold), no_improvement_steps "
            "(a plateau) and jump or factor (a divergence); give exactly one"
        )
    kind = kinds[0]
    for other, (markers, keys) in _KINDS.items():
        for key in keys:
            if other != kind and key in entry and key not in _KINDS[kind][1]:
                raise ConfigError(
                    f"{path}: {label}: {key} belongs to a rule with {' or '.join(markers)}"
                )
    if kind == "threshold":
        return Threshold(
            name,
            loss,
            above=_value(entry, "above", _finite, 0.0, path, where),
            after_step=_value(entry, "after_step", _integer(0), 0, path, where),
        )
    if kind == "plateau":
        return Plateau(
            name,
            loss,
            steps=_value(entry, "no_improvement_steps", _integer(1), 1, path, where),
            min_delta=_value(entry, "min_delta", _min_delta, 0.0, path, where),
        )
    own = _KINDS[kind][1]
    settings = {k: _checked(entry, k, _DIVERGENCE_KEYS[k], path, where) for k in own if k in entry}
    return Rising(name, loss, Divergence(**settings, losses=(loss,)))


def _rule_label(number: int, name: object) -> str:
    """`[alerts] rule 2 ("overall stuck")`, or without the name while it is not a usable one."""
    if isinstance(name, str) and name:
        return f'[alerts] rule {number} ("{name}")'
    return f"[alerts] rule {number}"


def _table(value: object, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where} must be a table, not {value!r}")
    return value


def _known(table: dict[str, Any], keys: Collection[str], path: Path, where: str) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(f"{path}: {where} unknown key {key!r} (known: {', '.join(keys)})")


def _only_with(table: dict[str, Any], key: str, other: str, path: Path, label: str) -> None:
    if key in table:
        raise ConfigError(f"{path}: {label}: {key} belongs to a rule with {other}")


def _value(
    table: dict[str, Any],
    key: str,
    check: Callable[[object], _T],
    default: _T,
    path: Path,
    where: str,
) -> _T:
    return _checked(table, key, check, path, where) if key in table else default


def _checked(
    table: dict[str, Any], key: str, check: Callable[[object], _T], path: Path, where: str
) -> _T:
    value = table[key]
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {where} {key} = {value!r}: expected {exc}") from None


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _finite(value: object) -> float:
    """A finite float; an int is one too, a bool is not."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("a finite number")
    return float(value)


def _factor(value: object) -> float:
    number = _finite(value)
    if number <= 1:
        raise ValueError("a number above 1")
    return number


def _min_delta(value: object) -> float:
    number = _finite(value)
    if number < 0:
        raise ValueError("a number, 0 or more")
    return number


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"an integer, {low} or more" if high is None else range_)
        if high is not None and value > high:
            raise ValueError(range_)
        return value

    range_ = f"an integer from {low} to {high}"
    return check


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty name")
    if any(unicodedata.category(char)[0] == "C" for char in value):
        raise ValueError("a name without control characters")  # names go into mail and logs
    return value


def _pattern(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a loss name or fnmatch pattern (a non-empty string)")
    return value


def _patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list of loss names or fnmatch patterns")
    return tuple(_pattern(item) for item in value)


# The keys each table takes, in the order error messages list them. [alerts.divergence]'s
# are Divergence's fields, with what checks and converts each.
_ALERT_KEYS = ("non_finite", "stalled", "divergence", "rule")
_DIVERGENCE_KEYS: dict[str, Callable[[object], Any]] = {
    "factor": _factor,
    "jump": _factor,
    "patience": _integer(2, MAX_PATIENCE),
    "warmup": _integer(0),
    "losses": _patterns,
}
_RULE_KEYS = (
    "name",
    "loss",
    "above",
    "after_step",
    "no_improvement_steps",
    "min_delta",
    "factor",
    "jump",
    "patience",
    "warmup",
)
# Each kind of user rule: the keys that make a rule that kind (any of them), and its own keys.
_KINDS = {
    "threshold": (("above",), ("above", "after_step")),
    "plateau": (("no_improvement_steps",), ("no_improvement_steps", "min_delta")),
    "divergence": (("jump", "factor"), ("jump", "factor", "patience", "warmup")),
}
