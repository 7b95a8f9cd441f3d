"""Sweeps: runs that share model, hook and architecture and differ in config values.

A sweep is named by those three; its *varying keys* are the config keys whose value is not
the same in all of its runs (or that some of its runs lack). Ranking its runs by a loss is a
`RunQuery` with the three as filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .query import RunQuery, counted, where_clause
from .store import Catalog

MAX_VARYING = 12  # config keys shown per sweep; the rest are named as a count
MIN_RUNS = 2  # a sweep is this many runs or more: one run alone is no sweep
Names = tuple[str, str, str]  # model, hook, architecture
MAX_NAMES_BOUND = 300  # (model, hook, architecture) triples bound in one query
NUMBER = "(SELECT id FROM sweeps WHERE model = ? AND hook = ? AND architecture = ?)"
SIZE = f"SELECT COALESCE(SUM(counted), 0) FROM run_counts WHERE sweep = {NUMBER}"  # its runs


@dataclass
class Sweep:
    model: str
    hook: str
    architecture: str
    runs: int
    varying: list[str] = field(default_factory=list)
    more_varying: int = 0  # keys that vary beyond MAX_VARYING

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hook": self.hook,
            "architecture": self.architecture,
            "runs": self.runs,
            "varying": self.varying,
            "more_varying": self.more_varying,
        }


def sweeps(catalog: Catalog, query: RunQuery) -> tuple[int, list[Sweep]]:
    """The groups of two runs or more among those `query` filters (its sort is ignored:
    largest first), the page it asks for, and how many groups there are in all."""
    where, parameters = where_clause(query, catalog.dialect)
    # Counted as the runs are written (`run_counts`), where the filters allow.
    runs = "SUM(runs.counted)" if counted(query) else "COUNT(*)"
    grouped = (
        f"SELECT runs.sweep AS sweep, {runs} AS runs"
        f" FROM {'run_counts AS runs' if counted(query) else 'runs'} {where}"
        f" GROUP BY runs.sweep HAVING {runs} >= {MIN_RUNS}"
    )
    with catalog.reading() as connection:
        total = connection.execute(
            f"SELECT COUNT(*) FROM ({grouped}) AS grouped", parameters
        ).fetchone()[0]
        found = connection.execute(
            f"SELECT model, hook, architecture, runs FROM ({grouped}) AS grouped"
            " JOIN sweeps ON sweeps.id = sweep"
            " ORDER BY runs DESC, model, hook, architecture LIMIT ? OFFSET ?",
            [*parameters, query.per_page, (query.page - 1) * query.per_page],
        ).fetchall()
    groups = [Sweep(model, hook, architecture, runs) for model, hook, architecture, runs in found]
    for group in groups:
        _find_varying(catalog, group)
    return int(total), groups


def sweep_of(catalog: Catalog, model: str, hook: str, architecture: str) -> Sweep | None:
    """The sweep named by the three, or None when fewer than two runs share them."""
    with catalog.reading() as connection:
        runs = connection.execute(SIZE, (model, hook, architecture)).fetchone()[0]
    if runs < MIN_RUNS:
        return None
    group = Sweep(model, hook, architecture, int(runs))
    _find_varying(catalog, group)
    return group


def in_sweeps(catalog: Catalog, names: Iterable[Names]) -> set[Names]:
    """Those of `names` that name a sweep (`MIN_RUNS` runs or more share them): the index
    links a run to its sweep's page only where there is one. One query per page, each name
    an index lookup that stops at its sweep's second run, however large the sweep."""
    wanted = list(dict.fromkeys(names))
    found: set[Names] = set()
    with catalog.reading() as connection:
        for start in range(0, len(wanted), MAX_NAMES_BOUND):
            chunk = wanted[start : start + MAX_NAMES_BOUND]
            triples = ", ".join(["(?, ?, ?)"] * len(chunk))
            rows = connection.execute(
                f"WITH wanted (model, hook, architecture) AS (VALUES {triples})"
                " SELECT model, hook, architecture FROM wanted JOIN sweeps"
                " USING (model, hook, architecture) WHERE EXISTS (SELECT 1 FROM runs"
                " WHERE runs.sweep = sweeps.id LIMIT 1 OFFSET ?)",
                [*(value for triple in chunk for value in triple), MIN_RUNS - 1],
            )
            found |= {(model, hook, architecture) for model, hook, architecture in rows}
    return found


def _find_varying(catalog: Catalog, group: Sweep) -> None:
    """The keys that vary across the whole sweep, whatever filter found it."""
    sweep = (group.model, group.hook, group.architecture)
    with catalog.reading() as connection:
        size = connection.execute(SIZE, sweep).fetchone()[0]
        # Each setting (a name and a value) its sweep's runs have, counted from the index;
        # a name varies where it has several values, or fewer runs than the sweep.
        found = connection.execute(
            f"SELECT name FROM (SELECT setting, COUNT(*) AS runs FROM config WHERE sweep ="
            f" {NUMBER} GROUP BY setting) AS counted JOIN settings ON settings.id = setting"
            " GROUP BY name HAVING COUNT(*) > 1 OR SUM(runs) < ? ORDER BY name",
            (*sweep, size),
        ).fetchall()
    names = [name for (name,) in found]
    group.varying = names[:MAX_VARYING]
    group.more_varying = max(0, len(names) - MAX_VARYING)


def losses_of(catalog: Catalog, group: Sweep) -> list[str]:
    """The losses any run of the sweep logged, by name."""
    with catalog.reading() as connection:
        found = connection.execute(
            "SELECT DISTINCT loss_names.name FROM runs"
            " JOIN loss_values ON loss_values.run = runs.id"
            f" JOIN loss_names ON loss_names.id = loss_values.loss WHERE runs.sweep = {NUMBER}"
            " ORDER BY 1",
            (group.model, group.hook, group.architecture),
        ).fetchall()
    return [loss for (loss,) in found]
