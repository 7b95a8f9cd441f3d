"""Which series of a run are losses, and which of them a report draws: `--series`,
`--exclude-series` and `--max-charts`.

Other tools log learning rates, gradient norms, epochs and throughput beside their losses, all
as scalar series; SAE trainers may log one series per feature. A filter first keeps the series
matching any `include` pattern (all when none is given) and drops those matching any `exclude`
pattern: a dropped series is in no output. Of the rest, the losses are drawn and summarised,
at most `max_charts` of them, the ones that matter first (`rank`); the others, and the series
that are not losses (`is_loss`), are kept in the CSV and named in the report as not drawn.

Which series are not losses is guessed from their names (`NOT_A_LOSS`) only when no `include`
pattern is given: with `--series` the user says what the losses are, and every series it
matches is one (`--series '*'` draws the learning rate too). Patterns are shell-style
(`train/*`, `lr*`), matched case-sensitively against the whole series name (fnmatch: the
standard library's, no dependency).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import pyarrow as pa

from ..runformat import RESERVED_COLUMNS

MAX_CHARTS = 12  # losses drawn by default: per-feature series would make hundreds of charts
MOST_CHARTS = 1000  # the most --max-charts takes (a chart costs about 0.2 s and 0.5 MB)
# A part of a series name (split at `/` and `.`, lower case) that says it is not a loss: the
# optimizer's settings, where training is, its gradients, and how fast it goes.
NOT_A_LOSS = re.compile(
    r"(lr|learning_rate)([-_].*)?|.*_(lr|learning_rate)|momentum|weight_decay"
    r"|epoch|epochs|step|steps|global_step|iteration|iterations"
    r"|.*grad(ient)?_?norm.*|grad_scale"
    r"|.*per_sec(ond)?|.*throughput.*|(.*_)?(runtime|time|seconds)|(total_)?flos"
    r"|(num_)?(input_)?(tokens|samples)(_seen)?"
    r"|system"  # W&B's system metrics: system/gpu.0.temp
)
# What matters first among losses, by a part of the lower-case name; the first match ranks.
RANKS = (
    (0, re.compile(r"overall|total|^(.*[/.])?((train|training|val|valid|eval|test)_)?loss$")),
    (3, re.compile(r"aux")),
    (1, re.compile(r"mse|recon")),
    (2, re.compile(r"(^|[^a-z0-9])l[01]([^a-z0-9]|$)|sparsit")),
    (4, re.compile(r"loss")),
)
OTHER_RANK = 5
_DIGITS = re.compile(r"(\d+)")


def is_loss_name(name: str) -> bool:
    """False for a series whose name says it is a learning rate, an epoch, a gradient norm or
    a throughput (`NOT_A_LOSS`), unless it says `loss` too (`epoch_loss` is one)."""
    lower = name.lower()
    if "loss" in lower:
        return True
    return not any(NOT_A_LOSS.fullmatch(part) for part in re.split(r"[/.]", lower))


def rank(name: str) -> tuple[int, list[str | int]]:
    """Sort key of a loss: overall/total loss, reconstruction (mse), sparsity (l1, l0),
    auxiliary, other losses, then the rest; by name within each, numbers in order (`feature_2`
    before `feature_10`)."""
    lower = name.lower()
    tier = next((tier for tier, pattern in RANKS if pattern.search(lower)), OTHER_RANK)
    key: list[str | int] = [int(p) if p.isdigit() else p for p in _DIGITS.split(lower)]
    return tier, key


@dataclass(frozen=True)
class Drawn:
    """The losses a report draws, the losses past the cap, and the series that are not losses,
    each in the run's order."""

    losses: list[str]
    not_drawn: list[str] = field(default_factory=list)
    not_losses: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SeriesFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_charts: int = MAX_CHARTS

    def __post_init__(self) -> None:
        if not 1 <= self.max_charts <= MOST_CHARTS:
            raise ValueError(f"max_charts must be from 1 to {MOST_CHARTS}, got {self.max_charts}")

    def __bool__(self) -> bool:
        """False for the default filter (`series or SeriesFilter()` keeps any other)."""
        return bool(self.include or self.exclude) or self.max_charts != MAX_CHARTS

    def keeps(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, pattern) for pattern in self.include):
            return False
        return not any(fnmatchcase(name, pattern) for pattern in self.exclude)

    def apply(self, table: pa.Table) -> tuple[pa.Table, list[str]]:
        """`table` with only the kept series (`step` and `wall_time` always stay), and the
        names of those left out."""
        dropped = [
            name
            for name in table.column_names
            if name not in RESERVED_COLUMNS and not self.keeps(name)
        ]
        if not dropped:
            return table, []
        return table.drop_columns(dropped), dropped

    def drawn(self, names: list[str]) -> Drawn:
        """Of the kept series `names`, the losses to draw (the first `max_charts` by `rank`),
        the losses past that, and those that are not losses (guessed only without `include`)."""
        losses = [name for name in names if self.include or is_loss_name(name)]
        chosen = set(sorted(losses, key=rank)[: self.max_charts])
        return Drawn(
            [name for name in losses if name in chosen],
            [name for name in losses if name not in chosen],
            [name for name in names if not (self.include or is_loss_name(name))],
        )

    def describe(self) -> str:
        parts = []
        if self.include:
            parts.append("only " + ", ".join(self.include))
        if self.exclude:
            parts.append("not " + ", ".join(self.exclude))
        return "; ".join(parts)
