"""Filtering, sorting and paging the catalog: what the index page asks of it.

Every value reaches the database as a bound parameter; the only text put into the SQL itself
comes from the fixed names below, chosen by the query's validated fields, and from the catalog's
dialect (dialect.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .dialect import Connection, Dialect
from .store import Catalog

# Sorts by a column of the run; `final:LOSS` and `minimum:LOSS` sort by a loss's value.
SORT_FIELDS = {
    "rendered": "runs.rendered_at",
    "started": "runs.started_at",
    "duration": "runs.duration",
    "steps": "runs.steps",
    "run": "runs.key",
}
LOSS_SORTS = ("final", "minimum")
NULLABLE = ("runs.started_at", "runs.duration", "runs.steps")
EXACT_FILTERS = ("model", "hook", "architecture", "status", "source")
SWEEP_NAMES = ("model", "hook", "architecture")  # kept once a sweep, in `sweeps`
LOSS = "(SELECT id FROM loss_names WHERE name = ?)"  # a loss's number, from its name
SETTING = "(SELECT id FROM settings WHERE name = ? AND value = ?)"  # a config value's number
MAX_OPTIONS = 500  # values offered per filter; a filter on another value still works


@dataclass(frozen=True)
class RunQuery:
    """Which runs, in which order, which page. Field values are checked by the caller
    (browse/), which knows which request parameter each came from."""

    model: str | None = None
    hook: str | None = None
    architecture: str | None = None
    status: str | None = None
    source: str | None = None
    where: str | None = None  # the name of the runs' place (places.py)
    text: str | None = None  # in the run's path, names or config, any case
    config: tuple[tuple[str, str], ...] = ()  # (name, value as the catalog shows it)
    sort: str = "rendered"  # a SORT_FIELDS key, or `final:LOSS` / `minimum:LOSS`
    descending: bool = True
    page: int = 1
    per_page: int = 50


@dataclass
class Page:
    total: int  # runs that match
    rows: list[dict[str, Any]] = field(default_factory=list)


def is_sort(sort: str) -> bool:
    kind, _, loss = sort.partition(":")
    return sort in SORT_FIELDS or (kind in LOSS_SORTS and bool(loss))


def search(catalog: Catalog, query: RunQuery) -> Page:
    """The page of rows `query` asks for, and how many runs match in all. Runs without the
    value sorted by come last either way."""
    dialect = catalog.dialect
    where, parameters = where_clause(query, dialect)
    everything = catalog.remembered("count", catalog.count)
    kind, _, loss = query.sort.partition(":")
    offset = (query.page - 1) * query.per_page
    if query.text and kind not in LOSS_SORTS:
        with catalog.reading() as connection:
            found = _by_text(connection, dialect, query)
        if found is not None:
            return Page(found[0], catalog.numbered(found[1]))
    with catalog.reading() as connection:
        total = _total(connection, dialect, query, where, parameters)
        if kind in LOSS_SORTS:
            numbers = _by_loss(connection, dialect, query, kind, loss)
        else:
            matching = (offset + query.per_page) * everything <= total**2
            if where and not query.text and dialect.planner_hints and matching:
                # Most runs match: walking the sort's index, skipping the others, finds the
                # page sooner than sorting every match (rows the walk reads: the page's end
                # over the share that matches; a sort: every match).
                where = where_clause(query, dialect, indexed=False)[0]
            order_by = _order(dialect, query, SORT_FIELDS[query.sort])
            numbers = [
                number
                for (number,) in connection.execute(
                    f"SELECT runs.id FROM runs {where} ORDER BY {order_by} LIMIT ? OFFSET ?",
                    [*parameters, query.per_page, offset],
                )
            ]
    return Page(int(total), catalog.numbered(numbers))


def counted(query: RunQuery) -> bool:
    """Whether `query` filters by nothing but sweep names, status and source, which
    `run_counts` counts by (store.py): its WHERE clause reads the same there. Not by place:
    a place's runs are counted on its index (`runs_place`)."""
    return not query.text and not query.config and query.where is None


def _total(
    connection: Connection, dialect: Dialect, query: RunQuery, where: str, parameters: list[Any]
) -> int:
    """How many runs `where` (`query`'s clause) matches: from `run_counts` or
    `setting_counts` where they count them (store.py), else counted."""
    if counted(query):
        sql = f"SELECT COALESCE(SUM(runs.counted), 0) FROM run_counts AS runs {where}"
    elif len(query.config) == 1 and not (
        query.text or query.status or query.source or query.where is not None
    ):
        # one config value, in the sweeps named, if any
        where, parameters = where_clause(replace(query, config=()), dialect)
        where = f"{where} AND" if where else "WHERE"
        sql = (
            "SELECT COALESCE(SUM(runs.counted), 0) FROM setting_counts AS runs"
            f" {where} runs.setting = {SETTING}"
        )
        parameters = [*parameters, *query.config[0]]
    else:
        sql = f"SELECT COUNT(*) FROM runs {where}"
    return int(connection.execute(sql, parameters).fetchone()[0])


def _order(
    dialect: Dialect, query: RunQuery, column: str, key: str = "runs.key", named: str = ""
) -> str:
    """The ORDER BY of `query`'s sort by `column` (`named`, where it is read as that); runs
    without a value last either way (only NULLABLE columns can lack one), ties by key."""
    return dialect.order(named or column, query.descending, key, column in NULLABLE)


def _by_text(
    connection: Connection, dialect: Dialect, query: RunQuery
) -> tuple[int, list[int]] | None:
    """How many runs match a query with a text filter, and its page, in one read of the
    table: the text is in every row, so no index helps find it, and walking the sort's index
    instead looks each row up (10x slower when the text is rare; the planner cannot know
    how rare). None for a page past the end, which has no row to carry the count."""
    where, parameters = where_clause(query, dialect)
    column = SORT_FIELDS[query.sort]
    found = connection.execute(
        f"WITH matched AS MATERIALIZED (SELECT runs.id AS id, runs.key AS key, {column} AS value"
        f" FROM runs {where}) SELECT id, (SELECT COUNT(*) FROM matched) FROM matched"
        f" ORDER BY {_order(dialect, query, column, 'key', 'value')} LIMIT ? OFFSET ?",
        [*parameters, query.per_page, (query.page - 1) * query.per_page],
    ).fetchall()
    if found:
        return int(found[0][1]), [number for number, _ in found]
    return (0, []) if query.page == 1 else None


def _by_loss(
    connection: Connection, dialect: Dialect, query: RunQuery, kind: str, loss: str
) -> list[int]:
    """A page of runs sorted by a loss's final or minimum value: those with the value, read in
    order from its index (a page costs a page's rows, not a join of every run and a sort),
    then those without it, by key."""
    where, parameters = where_clause(query, dialect)
    value = f"loss_values.{kind}"
    matching = where.replace("WHERE ", "AND ", 1)
    valued = (
        "FROM loss_values JOIN runs ON runs.id = loss_values.run"
        f" WHERE loss_values.loss = {LOSS} AND {value} IS NOT NULL {matching}"
    )
    offset = (query.page - 1) * query.per_page
    if matching:
        order_by = _by_value(value, query.descending)
        numbers = [
            number
            for (number,) in connection.execute(
                f"SELECT runs.id {valued} ORDER BY {order_by} LIMIT ? OFFSET ?",
                [loss, *parameters, query.per_page, offset],
            )
        ]
    else:
        numbers = _valued_page(connection, query, kind, loss)
    if len(numbers) == query.per_page:
        return numbers
    if numbers:
        with_value = offset + len(numbers)
    else:
        with_value = connection.execute(
            f"SELECT COUNT(*) {valued}", [loss, *parameters]
        ).fetchone()[0]
    numbers += [
        number
        for (number,) in connection.execute(
            f"SELECT runs.id FROM runs WHERE NOT EXISTS (SELECT 1 FROM loss_values"
            f" WHERE loss_values.run = runs.id AND loss_values.loss = {LOSS}"
            f" AND {value} IS NOT NULL)"
            f" {matching} ORDER BY runs.key LIMIT ? OFFSET ?",
            [loss, *parameters, query.per_page - len(numbers), max(0, offset - with_value)],
        )
    ]
    return numbers


def _by_value(value: str, descending: bool) -> str:
    """The ORDER BY of a loss's values where none is NULL, ties by key: in the words of the
    loss's index read one way or the other, on either database (PostgreSQL's `DESC NULLS
    LAST` would be neither way of its index, and every value would be sorted)."""
    return f"{value} {'DESC' if descending else 'ASC'}, runs.key"


def _valued_page(connection: Connection, query: RunQuery, kind: str, loss: str) -> list[int]:
    """An unfiltered page of the runs with a value of the loss, in order (ties by key), read
    as a deferred join: the values at the page's places from the loss's index alone (a far
    page skips index entries, not runs joined to their rows: page 1,000 of 100,000 runs
    111 ms before), then the runs of the few values those span, joined and ordered. The
    values' range is the database's to compare (a NaN, which PostgreSQL keeps, sorts last)."""
    descending = query.descending
    direction, before = ("DESC", ">") if descending else ("ASC", "<")
    offset = (query.page - 1) * query.per_page
    valued = f"FROM loss_values WHERE loss = {LOSS} AND {kind} IS NOT NULL"
    values = [
        value
        for (value,) in connection.execute(
            f"SELECT {kind} {valued} ORDER BY {kind} {direction} LIMIT ? OFFSET ?",
            [loss, query.per_page, offset],
        )
    ]
    if not values:
        return []
    first, last = values[0], values[-1]
    # The runs ahead of the page with the first value (ties) are skipped by key.
    ahead = connection.execute(
        f"SELECT COUNT(*) {valued} AND {kind} {before} ?", [loss, first]
    ).fetchone()[0]
    order_by = _by_value(f"loss_values.{kind}", descending)
    low, high = (last, first) if descending else (first, last)
    return [
        number
        for (number,) in connection.execute(
            "SELECT runs.id FROM loss_values JOIN runs ON runs.id = loss_values.run"
            f" WHERE loss_values.loss = {LOSS} AND loss_values.{kind} BETWEEN ? AND ?"
            f" ORDER BY {order_by} LIMIT ? OFFSET ?",
            [loss, low, high, query.per_page, offset - ahead],
        )
    ]


def where_clause(query: RunQuery, dialect: Dialect, indexed: bool = True) -> tuple[str, list[Any]]:
    """The WHERE clause of `query`'s filters and its parameters. `indexed=False`: the same
    clause, its columns written so that no index of theirs is used (`dialect.unindexed`)."""
    clauses: list[str] = []
    parameters: list[Any] = []
    runs = "runs" if indexed else dialect.unindexed("runs")
    names = [name for name in SWEEP_NAMES if getattr(query, name) is not None]
    if names:
        wanted = " AND ".join(f"{name} = ?" for name in names)
        clauses.append(f"{runs}.sweep IN (SELECT id FROM sweeps WHERE {wanted})")
        parameters += [getattr(query, name) for name in names]
    for name in EXACT_FILTERS:
        value = getattr(query, name)
        if value is not None and name not in SWEEP_NAMES:
            clauses.append(f"{runs}.{name} = ?")
            parameters.append(value)
    if query.where is not None:
        clauses.append(f"{runs}.place IN (SELECT id FROM places WHERE name = ?)")
        parameters.append(query.where)
    if query.text:
        # ASCII letters in any case (SQLite's LIKE, `dialect.like`); `search`s hold what
        # needs more (store.py).
        like = f"{dialect.like} ? ESCAPE '\\'"
        clauses.append(
            f"(runs.key {like} OR runs.source {like} OR runs.search {like}"
            f" OR {dialect.any_of('runs.sweep', f'SELECT id FROM sweeps WHERE search {like}')})"
        )
        parameters += [f"%{_like_escaped(query.text.lower())}%"] * 4
    for name, value in query.config:
        clauses.append(f"{runs}.id IN (SELECT run FROM config WHERE setting = {SETTING})")
        parameters += [name, value]
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), parameters


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def options(catalog: Catalog) -> dict[str, list[str]]:
    """The values each filter offers (the most common first, bounded), the config keys and
    the loss names. Counted from `run_counts`, which counts the runs by sweep, status and
    source."""
    found: dict[str, list[str]] = {}
    with catalog.reading() as connection:
        for name in EXACT_FILTERS:
            values = (
                f"SELECT {name} FROM (SELECT sweep, SUM(counted) AS runs FROM run_counts"
                f" GROUP BY sweep) AS counted JOIN sweeps ON sweeps.id = sweep"
                f" WHERE {name} != '' GROUP BY {name} ORDER BY SUM(runs) DESC, {name} LIMIT ?"
                if name in SWEEP_NAMES
                else f"SELECT {name} FROM run_counts WHERE {name} != '' GROUP BY {name}"
                f" ORDER BY SUM(counted) DESC, {name} LIMIT ?"
            )
            found[name] = [value for (value,) in connection.execute(values, (MAX_OPTIONS,))]
        found["config"] = [
            name
            for (name,) in connection.execute(
                "SELECT DISTINCT name FROM settings ORDER BY name LIMIT ?", (MAX_OPTIONS,)
            )
        ]
        found["where"] = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM places WHERE EXISTS"
                " (SELECT 1 FROM runs WHERE runs.place = places.id)"
                " GROUP BY name ORDER BY name LIMIT ?",
                (MAX_OPTIONS,),
            )
        ]
        found["losses"] = [
            loss
            for (loss,) in connection.execute(
                "SELECT name FROM loss_names ORDER BY name LIMIT ?", (MAX_OPTIONS,)
            )
        ]
    return found
