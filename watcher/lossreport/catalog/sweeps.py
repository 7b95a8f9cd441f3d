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
            f"SELECT id, model, hook, architecture, runs FROM ({grouped}) AS grouped"
            " JOIN sweeps ON sweeps.id = sweep"
            " ORDER BY runs DESC, model, hook, architecture LIMIT ? OFFSET ?",
            [*parameters, query.per_page, (query.page - 1) * query.per_page],
        ).fetchall()
    groups = {  # PostgreSQL's SUM of integers is a decimal
        number: Sweep(model, hook, architecture, int(runs))
        for number, model, hook, architecture, runs in found
    }
    _find_varying(catalog, groups)
    return int(total), list(groups.values())


def sweep_of(catalog: Catalog, model: str, hook: str, architecture: str) -> Sweep | None:
    """The sweep named by the three, or None when fewer than two runs share them."""
    with catalog.reading() as connection:
        runs = connection.execute(SIZE, (model, hook, architecture)).fetchone()[0]
    if runs < MIN_RUNS:
        return None
    group = Sweep(model, hook, architecture, int(runs))
    with catalog.reading() as connection:
        number = connection.execute(f"SELECT {NUMBER}", (model, hook, architecture)).fetchone()[0]
    _find_varying(catalog, {int(number): group})
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


def _find_varying(catalog: Catalog, groups: dict[int, Sweep]) -> None:
    """The keys that vary across each whole sweep (by its number), whatever filter found
    it: one query for a page of sweeps."""
    if not groups:
        return
    with catalog.reading() as connection:
        # Each setting (a name and a value) a sweep's runs have, as counted when written;
        # a name varies where it has several values, or fewer runs than the sweep.
        found = connection.execute(
            "SELECT counted.sweep, name FROM setting_counts AS counted"
            " JOIN settings ON settings.id = setting"
            f" WHERE counted.sweep IN ({', '.join('?' * len(groups))})"
            " GROUP BY counted.sweep, name HAVING COUNT(*) > 1 OR SUM(counted.counted) <"
            " (SELECT SUM(runs.counted) FROM run_counts AS runs WHERE runs.sweep = counted.sweep)"
            " ORDER BY counted.sweep, name",
            list(groups),
        ).fetchall()
    names: dict[int, list[str]] = {number: [] for number in groups}
    for number, name in found:
        names[number].append(name)
    for number, group in groups.items():
        group.varying = names[number][:MAX_VARYING]
        group.more_varying = max(0, len(names[number]) - MAX_VARYING)


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
