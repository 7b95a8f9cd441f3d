"""What differs between the catalog's databases, in one place: the SQL fragments the queries
(query.py, sweeps.py) and the store (store.py) write differently for SQLite and PostgreSQL.

The schema itself is written once, in SQLite's words (`store.SCHEMA`); postgres.py translates
it. Every other statement is plain SQL both accept, with `?` for a bound value (the PostgreSQL
connection rewrites it as psycopg's `%s`). So a change to the schema or a query is made once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self


class Cursor(Protocol):
    """What a statement gives back: sqlite3's cursor and psycopg's both have these."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection as the queries use it: sqlite3's, or postgres.PgConnection."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Transactional(Connection, Protocol):
    """A connection the store owns: `with connection:` is one transaction, committed at its
    end or rolled back on an exception, as sqlite3's is."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Any: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


class Dialect:
    """SQLite's way; postgres.PostgresDialect overrides what PostgreSQL says otherwise."""

    name = "sqlite"
    # SQLite's planner is steered off an index by writing its column `+runs.status`.
    planner_hints = True
    # What finds text in any case of its ASCII letters (and only theirs: store.py keeps a
    # lower-cased copy where more needs folding): SQLite's LIKE.
    like = "LIKE"

    def unindexed(self, column: str) -> str:
        return f"+{column}" if self.planner_hints else column

    def any_of(self, column: str, subquery: str) -> str:
        """`column` is one of the values `subquery` selects: a condition that can be one arm
        of an OR that an index answers (PostgreSQL's `= ANY (ARRAY(...))`; its `IN` there
        makes a hashed subplan that every row of the table is checked against)."""
        return f"{column} IN ({subquery})"

    def order(self, column: str, descending: bool, key: str, nullable: bool) -> str:
        """ORDER BY `column`, rows without a value last either way, ties by `key`. SQLite
        sorts NULL first ascending; `column IS NULL` first puts them last, and keeps the
        index's order usable for the columns that are never NULL."""
        nulls_last = f"{column} IS NULL, " if nullable else ""
        return f"{nulls_last}{column} {'DESC' if descending else 'ASC'}, {key}"


SQLITE = Dialect()
