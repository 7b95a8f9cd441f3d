"""The catalog's SQLite file: `STATE/.lossreport-catalog/runs.sqlite`, one row per run.

The daemon writes a run's row each time it renders it, and removes the rows of runs that are
gone; it never rebuilds the file on start (a row whose marker is newer is replaced when the run
is first looked at). `serve` opens it read-only, often as another user, so the folder is
0755 and must belong to the daemon's user and be writable by nobody else: in a shared tree a
link or a file planted there would otherwise be written through.

Rollback journal, not WAL: WAL needs shared memory that a reader of another user cannot map,
and does not work on NFS, where runs trees often are. A write is one short transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from .. import storage
from ..clock import utc_time
from ..errors import CatalogServerError, UnsafePathError
from ..runformat import CATALOG_DIR, CATALOG_FILE, GRAPHS_DIR, MAX_CURVES_BYTES, index_curves
from ..runformat.packed import pack
from . import legacy_curves, packed
from .dialect import SQLITE, Connection, Dialect, Transactional
from .places import HERE, Place

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 5  # 4: no counts; 3: one tree's runs; 2: names and JSON in each run's rows;
# 1: keyed by the run's path
# What a catalog's database raises: SQLite's errors, or a server's (postgres.py turns psycopg's
# into CatalogServerError).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, CatalogServerError)
# What a file that is not (or no longer) a database gives: it is set aside, never deleted.
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
# What a reader gets from a hot journal (a writer killed mid-transaction) it may not roll back.
HOT_JOURNAL = "SQLITE_READONLY_ROLLBACK"
JOURNAL_SUFFIX = "-journal"
BUSY_TIMEOUT_MS = 5000  # a reader waits this long for the daemon's write to end
# `runs` holds what queries filter and sort on, narrow so a scan of 100,000 rows stays fast;
# `details` what a page shows of the few runs it lists, most of it one packed blob
# (packed.py). Nothing is written twice: a run's model, hook and architecture are its
# sweep's (`sweeps`), a config's name and value a number in `settings`, a loss's name a
# number in `loss_names`; other tables name a run by its number (`runs.id`), never by its path
# (about 65 characters, as `start_run` makes them), and its report by its file's name when it
# is in the run's loss_graphs/. About 1.5 KiB a realistic run (2.8 in schema 2, 10.5 in 1).
# A run is its path in its *place* (places.py), numbered in `places`: a team's catalog holds
# many trees', which may share a path; SQLite's holds its own tree's alone.
# Written in SQLite's words; postgres.py translates it (and adds PostgreSQL's own indexes).
PLACES_SCHEMA = """
CREATE TABLE places (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    tree TEXT NOT NULL,
    output TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (host, tree, output)
)"""
SCHEMA = f"""
{PLACES_SCHEMA};
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    hook TEXT NOT NULL,
    architecture TEXT NOT NULL,
    search TEXT NOT NULL,
    UNIQUE (model, hook, architecture)
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    place INTEGER NOT NULL,
    status TEXT NOT NULL,
    sweep INTEGER NOT NULL,
    source TEXT NOT NULL,
    steps INTEGER,
    started_at TEXT,
    duration REAL,
    rendered_at TEXT NOT NULL,
    search TEXT NOT NULL
);
CREATE UNIQUE INDEX runs_key ON runs (key, place);
CREATE INDEX runs_place ON runs (place);
CREATE INDEX runs_rendered ON runs (rendered_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_duration ON runs (duration);
CREATE INDEX runs_steps ON runs (steps);
CREATE INDEX runs_sweep ON runs (sweep);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_source ON runs (source);
CREATE TABLE details (
    run INTEGER PRIMARY KEY,
    status_class TEXT NOT NULL,
    report TEXT NOT NULL,
    error TEXT NOT NULL,
    problems INTEGER NOT NULL,
    anomalies INTEGER NOT NULL,
    packed BLOB
);
CREATE TABLE loss_names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE loss_values (
    run INTEGER NOT NULL,
    loss INTEGER NOT NULL,
    final REAL,
    minimum REAL,
    PRIMARY KEY (run, loss)
) WITHOUT ROWID;
CREATE INDEX loss_values_final ON loss_values (loss, final);
CREATE INDEX loss_values_minimum ON loss_values (loss, minimum);
CREATE TABLE settings (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (name, value)
);
CREATE TABLE config (
    run INTEGER NOT NULL,
    setting INTEGER NOT NULL,
    sweep INTEGER NOT NULL,
    PRIMARY KEY (run, setting)
) WITHOUT ROWID;
CREATE INDEX config_setting ON config (setting, run);
CREATE TABLE setting_counts (
    sweep INTEGER NOT NULL,
    setting INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    PRIMARY KEY (sweep, setting)
) WITHOUT ROWID;
CREATE TABLE run_counts (
    sweep INTEGER NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    counted INTEGER NOT NULL,
    PRIMARY KEY (sweep, status, source)
) WITHOUT ROWID;
"""
# `run_counts`: how many runs each sweep has of each status and source, and
# `setting_counts` of each config value, kept up as rows are written, so that a count by
# those filters (every page's total, the filters' options, the sweeps and the config keys
# that vary in each) adds up a few thousand numbers instead of counting a million runs.
COUNTED = (
    "INSERT INTO run_counts SELECT sweep, status, source, COUNT(*) FROM runs"
    " GROUP BY sweep, status, source",
    "INSERT INTO setting_counts SELECT sweep, setting, COUNT(*) FROM config"
    " GROUP BY sweep, setting",
)
# What the daemon found unchanged at its last look at each run (daemon/seen.py): a restart
# that finds the same stamp neither reads the run's files nor renders it. Not part of the
# rows `serve` reads, so added to a catalog of this schema where it is missing.
SEEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    run INTEGER PRIMARY KEY,
    stamp INTEGER NOT NULL,
    running INTEGER NOT NULL
)
"""
TABLES = (
    "runs", "details", "loss_values", "config", "sweeps", "loss_names", "settings", "run_counts",
    "setting_counts", "seen", "places",
)  # fmt: skip
# Schema 3's catalog, made schema 4's in place: its runs given the place of the tree it was
# kept for (`add_places`). In SQLite's words; postgres.py translates them.
PLACES_ADDED = 4
UPGRADED_FROM = PLACES_ADDED - 1  # the oldest schema brought up in place by `step_up`
PLACE_STEPS = (
    "ALTER TABLE runs ADD COLUMN place INTEGER NOT NULL DEFAULT {number}",
    "DROP INDEX runs_key",
    "CREATE UNIQUE INDEX runs_key ON runs (key, place)",
    "CREATE INDEX runs_place ON runs (place)",
)
# The number of the place a catalog's daemon writes (or its `serve` links), from its values.
HERE_ID = "(SELECT id FROM places WHERE host = ? AND tree = ? AND output = ?)"
# Indexes only queries use (no write's conflict or delete needs them): a catalog filled from
# empty, at a daemon's first start, is written without them and they are made at its end, one
# sort each (`begin_fill`, `end_fill`). Kept, each of 100,000 rows went to a random place in
# each, and every batch rewrote (and journaled) more of their pages as they grew: 1.6 GB
# written for 100,000 runs, the first start's time growing as the square of the runs.
QUERY_INDEXES = {
    name: statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1)
    for statement, name in re.findall(r"^(CREATE INDEX (\w+) ON .*?\));$", SCHEMA, re.M)
    # kept: a replaced run's settings are deleted by the one, a place's runs pruned by the other
    if name not in ("config_setting", "runs_place")
}
# A run's rows beside its `runs` one: its details and stamp, and (`_clear`) its losses and
# config.
OWN_ROWS = ("details", "seen")
# Numbered names a run's rows refer to, dropped with the last row that does: (table, the
# column of a run's table that refers to it), so that the filters offer only names in use.
NAMED = (("loss_names", "loss_values.loss"), ("settings", "config.setting"))
UPGRADE_BATCH = 5000  # rows of an older catalog moved a step


def schema_statement(name: str) -> str:
    """The statement of `SCHEMA` that makes the table or index `name`."""
    made = re.compile(rf"\s*CREATE (UNIQUE )?(TABLE|INDEX) {name} ")
    return next(statement for statement in SCHEMA.split(";") if made.match(statement))


# The steps that bring a catalog of an older schema (4 or later) to the next one in place, on either
# database (postgres.py translates them as it does SCHEMA): cheap, its rows left as they are.
# Older ones (`OLD_ROWS`) have their rows moved into a new layout.
STEPS: dict[int, list[str]] = {
    4: [
        schema_statement("run_counts"),
        schema_statement("setting_counts"),
        *COUNTED,
        "DROP INDEX IF EXISTS config_setting",
        schema_statement("config_setting"),
        "DROP INDEX IF EXISTS config_sweep",
    ],
}
# An older layout's rows, read whole to be put in the new one (version: its SELECT).
LEGACY_COLUMNS = (
    "runs.key, status, status_class, model, hook, architecture, source, steps, started_at,"
    " duration, rendered_at, report, error, problems, anomalies, alerts, final, minimum,"
    " config, curves"
)
OLD_ROWS = {
    1: f"SELECT {LEGACY_COLUMNS} FROM old_runs AS runs JOIN old_details USING (key)",
    2: f"SELECT {LEGACY_COLUMNS} FROM old_runs AS runs JOIN old_details ON run = runs.id",
}
# Schema 2's seen stamps (daemon/seen.py), as true of the moved rows as they were: kept under
# the runs' new numbers, so that the restart after an upgrade still skips the settled runs.
KEPT_STAMPS = (
    "INSERT INTO seen SELECT runs.id, stamp, running FROM old_seen"
    " JOIN old_runs ON old_runs.id = old_seen.run JOIN runs ON runs.key = old_runs.key"
)


class Catalog:
    """A connection to the catalog, shared by a server's threads (one at a time: each query
    takes milliseconds). This class is SQLite's catalog; postgres.PostgresCatalog a server's,
    which shares every statement that reads or writes rows."""

    dialect: Dialect = SQLITE

    def __init__(
        self,
        connection: Transactional,
        folder_fd: int | None = None,
        writable: bool = True,
        place: Place = HERE,
    ) -> None:
        """`place`: where this catalog's daemon's runs are (the rows it writes and prunes),
        or its reader's (the reports it can link)."""
        self._connection = connection
        self.place = place
        self._here = place.values()
        self._writable = writable
        self._folder_fd = folder_fd  # keeps /proc/self/fd/N, through which SQLite found it
        self._identity: tuple[int, int] | None = None  # the daemon's file: device, inode
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[int, Any]] = {}
        self._changes = 0

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, state_dir: Path) -> Catalog:
        """The daemon's catalog in `state_dir`, made if missing. Raises OSError (an
        UnsafePathError for a folder that is a link or someone else's) or sqlite3.Error."""
        folder = state_dir / CATALOG_DIR
        storage.make_dir(folder, 0o755)
        fd = storage.open_dir(folder)
        try:
            _check_ours(folder, fd)
            _check_regular(folder / CATALOG_FILE, fd)
            try:
                return cls._connected(folder, fd)
            except sqlite3.DatabaseError as exc:
                if not is_damaged(exc):  # locked, a full disk: not its fault
                    raise
                aside = _set_aside(fd)
                logger.error("catalog %s is damaged (%s): set aside as %s, started afresh",
                             folder / CATALOG_FILE, exc, aside)  # fmt: skip
                return cls._connected(folder, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _connected(cls, folder: Path, fd: int) -> Catalog:
        connection = _connect(storage.fd_path(fd, folder) / CATALOG_FILE, readonly=False)
        try:
            catalog = cls(connection, fd)
            catalog._ensure_schema()
            info = os.stat(CATALOG_FILE, dir_fd=fd, follow_symlinks=False)
            catalog._identity = (info.st_dev, info.st_ino)
        except BaseException:
            connection.close()
            raise
        return catalog

    @classmethod
    def open_readonly(cls, state_dir: Path) -> Catalog | None:
        """The catalog a daemon keeps in `state_dir`, for reading; None when there is none
        yet. Raises like `open` for a folder or file that is not what the daemon made."""
        folder = state_dir / CATALOG_DIR
        try:
            fd = storage.open_dir(folder)
        except FileNotFoundError:
            return None
        try:
            _check_not_shared(folder, fd)
            if not storage.lexists(Path(CATALOG_FILE), dir_fd=fd):
                os.close(fd)
                return None
            _check_regular(folder / CATALOG_FILE, fd)
            connection = _connect(storage.fd_path(fd, folder) / CATALOG_FILE, readonly=True)
            catalog = cls(connection, fd, writable=False)
            if catalog._schema_version() != SCHEMA_VERSION:
                catalog.close()
                return None
        except BaseException:
            os.close(fd)
            raise
        return catalog

    @classmethod
    def in_memory(cls) -> Catalog:
        """A catalog held in memory: for `serve` over a tree no daemon keeps one for, and for
        a daemon that cannot keep the file."""
        catalog = cls(sqlite3.connect(":memory:", check_same_thread=False))
        catalog._ensure_schema()
        return catalog

    def close(self) -> None:
        if self._writable and self._folder_fd is not None:  # one in memory dies with it
            try:
                self.optimize()
            except sqlite3.Error as exc:
                logger.warning("catalog statistics not refreshed: %s", exc)
        self._connection.close()
        if self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None

    def set_aside(self) -> str | None:
        """Close this catalog, found damaged while open (`is_damaged`), and rename its file
        and any journal aside in their folder: kept to look at, never deleted, and a rename
        acts on the entry, never through a link. Returns the file's new name, or None when
        the file there is no longer the one opened (set aside already)."""
        with contextlib.suppress(sqlite3.Error):
            self._connection.close()
        self._writable = False
        fd, self._folder_fd = self._folder_fd, None
        if fd is None:
            return None
        try:
            info = os.stat(CATALOG_FILE, dir_fd=fd, follow_symlinks=False)
            if (info.st_dev, info.st_ino) != self._identity:
                return None
            return _set_aside(fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def _schema_version(self) -> int:
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    def _ensure_schema(self) -> None:
        version = self._schema_version()
        if UPGRADED_FROM <= version < SCHEMA_VERSION:
            self._step_up(version)
        elif version != SCHEMA_VERSION:
            self._make_schema(version)
        with self._connection as connection:
            connection.execute(SEEN_SCHEMA)
        self.end_fill()  # a daemon stopped during a first fill left them out

    def _step_up(self, version: int) -> None:
        """Bring a catalog of schema `version` to this one by `step_up`, in one transaction."""
        with self._connection as connection:
            connection.execute("BEGIN")  # the tables' changes too, not only the rows'
            step_up(connection, version, HERE)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._analyze()  # the new tables' and indexes' statistics, which the planner needs
        logger.info("catalog schema %d upgraded to %d", version, SCHEMA_VERSION)

    def _make_schema(self, version: int) -> None:
        with self._connection as connection:
            tables = _tables(connection)
            old = version in OLD_ROWS and tables >= {"runs", "details"}
            if old:  # an older daemon's layout: its rows are moved into this one
                for name in _indexes(connection):
                    connection.execute(f'DROP INDEX "{name}"')
                kept = ("runs", "details", "seen") if version == 2 else ("runs", "details")
                for table in tables.intersection(kept):
                    connection.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
            elif version:  # one this daemon does not know (a newer one's): made afresh
                logger.info("catalog schema %d replaced by %d", version, SCHEMA_VERSION)
            for table in TABLES:
                connection.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in f"{SCHEMA};{SEEN_SCHEMA}".split(";"):
                if statement.strip():
                    connection.execute(statement)
            if old:
                self._upgrade(connection, version)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if old:
            self._compact()

    def _compact(self) -> None:
        """Give back the pages an upgrade freed (the older layout's: about half the file),
        which would otherwise stay in it as free pages: a few seconds at 100,000 runs, once.
        Not done (a full disk: it copies the file), the catalog is as good, only larger."""
        try:
            self._connection.execute("VACUUM")
        except sqlite3.Error as exc:
            logger.warning("catalog not compacted after its upgrade: %s", exc)

    def _upgrade(self, connection: Connection, version: int) -> None:
        """Move every row of schema `version`'s tables (renamed old_*) into this one's, in the
        same transaction: a daemon killed meanwhile leaves the older catalog as it was."""
        cursor = connection.execute(OLD_ROWS[version])
        moved = 0
        while batch := cursor.fetchmany(UPGRADE_BATCH):
            rows = [_legacy_row(found) for found in batch]
            _insert(connection, rows, HERE)
            moved += len(rows)
        if "old_seen" in _tables(connection):
            connection.execute(KEPT_STAMPS)
            connection.execute("DROP TABLE old_seen")
        connection.execute("DROP TABLE old_runs")
        connection.execute("DROP TABLE old_details")
        logger.info("catalog schema %d upgraded to %d, %d runs kept", version, SCHEMA_VERSION,
                    moved)  # fmt: skip

    @contextmanager
    def reading(self) -> Iterator[Transactional]:
        """The connection, for one query at a time (query.py, sweeps.py)."""
        with self._lock:
            yield self._connection

    # -- writing ------------------------------------------------------------------------------
    def put(self, row: dict[str, Any]) -> None:
        """Add or replace a run's row (`pages.index_row`'s shape)."""
        self.put_many([row])

    def put_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """`put` for many rows, in one transaction."""
        rows = list(rows)
        self._changes += 1
        with self._lock, self._connection as connection:
            _insert(connection, rows, self.place)

    def mark_failed(self, key: str, error: str, fallback: dict[str, Any]) -> None:
        """Record that run `key`'s last render failed with `error`: on its row, or as
        `fallback` (a row for a run never rendered)."""
        self._changes += 1
        with self._lock, self._connection as connection:
            updated = connection.execute(
                "UPDATE details SET error = ? WHERE run ="
                f" (SELECT id FROM runs WHERE key = ? AND place = {HERE_ID})",
                (error, key, *self._here),
            ).rowcount
        if not updated:
            self.put(fallback)

    def forget(self, key: str) -> None:
        self._changes += 1
        with self._lock, self._connection as connection:
            _delete(connection, key, self._here)

    def keep_only(self, keys: Iterable[str]) -> int:
        """Remove the rows of every run of this catalog's place not in `keys` (all the runs
        a full scan found); returns how many went. Other places' rows are their daemons'."""
        self._changes += 1
        with self._lock, self._connection as connection:
            connection.execute("CREATE TEMP TABLE IF NOT EXISTS present (key TEXT PRIMARY KEY)")
            connection.execute("DELETE FROM present")
            connection.executemany(
                "INSERT INTO present VALUES (?) ON CONFLICT DO NOTHING", [(key,) for key in keys]
            )
            gone = [
                key
                for (key,) in connection.execute(
                    f"SELECT key FROM runs WHERE place = {HERE_ID}"
                    " AND key NOT IN (SELECT key FROM present)",
                    self._here,
                )
            ]
            for key in gone:
                _delete(connection, key, self._here)
            connection.execute("DELETE FROM present")
        return len(gone)

    def begin_fill(self) -> bool:
        """Before a catalog with no row takes many (a daemon's first start): the query
        indexes are dropped until `end_fill` (QUERY_INDEXES). True if they were."""
        self._changes += 1
        with self._lock, self._connection as connection:
            if connection.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None:
                return False
            for name in QUERY_INDEXES:
                connection.execute(f'DROP INDEX IF EXISTS "{name}"')
        return True

    def end_fill(self) -> None:
        """Make the query indexes `begin_fill` dropped (nothing when they are there)."""
        self._changes += 1
        with self._lock, self._connection as connection:
            for statement in QUERY_INDEXES.values():
                connection.execute(statement)

    def put_seen(self, stamps: Iterable[tuple[str, int, bool]]) -> None:
        """Record (key, stamp, running) for runs that have a row (daemon/seen.py), in one
        transaction; a key without a row is passed over."""
        self._changes += 1
        with self._lock, self._connection as connection:
            connection.executemany(
                "INSERT INTO seen (run, stamp, running) SELECT id, ?, ? FROM runs"
                f" WHERE key = ? AND place = {HERE_ID} ON CONFLICT (run) DO UPDATE"
                " SET stamp = excluded.stamp, running = excluded.running",
                ((stamp, int(running), key, *self._here) for key, stamp, running in stamps),
            )

    # -- reading --------------------------------------------------------------------------------
    def seen(self, key: str) -> tuple[int, bool] | None:
        """The (stamp, running) `put_seen` recorded for run `key`, or None."""
        with self.reading() as connection:
            found = connection.execute(
                "SELECT stamp, running FROM seen WHERE run ="
                f" (SELECT id FROM runs WHERE key = ? AND place = {HERE_ID})",
                (key, *self._here),
            ).fetchone()
        return None if found is None else (int(found[0]), bool(found[1]))

    def stamps(self) -> dict[str, tuple[int, bool]]:
        """Every (stamp, running) `put_seen` recorded, by run key: one query for a scan."""
        with self.reading() as connection:
            found = connection.execute(
                "SELECT key, stamp, running FROM seen JOIN runs ON runs.id = seen.run"
                f" WHERE place = {HERE_ID}",
                self._here,
            )
            return {key: (stamp, bool(running)) for key, stamp, running in found}

    def rendered_at(self, key: str) -> str | None:
        """When the row of run `key` was rendered, or None when it has none."""
        with self.reading() as connection:
            found = connection.execute(
                f"SELECT rendered_at FROM runs WHERE key = ? AND place = {HERE_ID}",
                (key, *self._here),
            ).fetchone()
        return None if found is None else str(found[0])

    def remembered(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()`, kept until the catalog changes: what every page asks (the filters'
        options) costs one look at SQLite's data version instead of a scan."""
        with self._lock:
            version = self._data_version()
            kept = self._memo.get(name)
        if kept is not None and kept[0] == version:
            return cast(T, kept[1])
        value = compute()
        self._memo[name] = (version, value)
        return value

    def _data_version(self) -> int:
        """A number that changes when anyone writes to the catalog."""
        version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        return version + self._changes  # this connection's own writes do not change it

    def count(self, here: bool = False) -> int:
        """How many runs the catalog lists; `here`: of this catalog's place alone."""
        with self.reading() as connection:
            if here:
                found = connection.execute(
                    f"SELECT COUNT(*) FROM runs WHERE place = {HERE_ID}", self._here
                )
            else:
                found = connection.execute("SELECT COALESCE(SUM(counted), 0) FROM run_counts")
            return int(found.fetchone()[0])

    def recent(self, limit: int, here: bool = False) -> list[dict[str, Any]]:
        """The `limit` most recently rendered runs' rows, newest first; `here`: of this
        catalog's place alone (its daemon's static index, whose links are its tree's)."""
        where, parameters = (f"WHERE place = {HERE_ID}", self._here) if here else ("", ())
        with self.reading() as connection:
            numbers = [
                number
                for (number,) in connection.execute(
                    f"SELECT id FROM runs {where} ORDER BY rendered_at DESC, key LIMIT ?",
                    (*parameters, limit),
                )
            ]
        return self.numbered(numbers)

    def rows(self, keys: list[str]) -> list[dict[str, Any]]:
        """The rows of this catalog's place's runs `keys`, in that order (a key without a row
        is left out)."""
        return self._found("runs.key", keys, f" AND runs.place = {HERE_ID}", self._here)

    def numbered(self, numbers: list[int]) -> list[dict[str, Any]]:
        """The rows of the runs numbered `numbers` (`runs.id`, what queries find), in that
        order, whatever their place."""
        return self._found("runs.id", numbers)

    def _found(
        self, column: str, wanted: list[T], more: str = "", parameters: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        found: dict[Any, tuple[Any, ...]] = {}
        with self.reading() as connection:
            for start in range(0, len(wanted), MAX_BOUND):
                chunk = wanted[start : start + MAX_BOUND]
                cursor = connection.execute(
                    f"SELECT {column}, {ROW_COLUMNS} FROM runs"
                    " JOIN details ON details.run = runs.id"
                    " JOIN sweeps ON sweeps.id = runs.sweep"
                    " JOIN places ON places.id = runs.place"
                    f" WHERE {column} IN ({', '.join('?' * len(chunk))}){more}",
                    [*chunk, *parameters],
                )
                for value, *columns in cursor:
                    found[value] = tuple(columns)
        kept = [found[value] for value in wanted if value in found]
        # the page's blobs unpacked together: their curves in one numpy pass (curve_json.py)
        unpacked = packed.unpack_many([columns[BLOB] for columns in kept])
        return [row_of(columns, *both) for columns, both in zip(kept, unpacked, strict=True)]

    def optimize(self) -> None:
        """Make the statistics SQLite's query planner chooses indexes by exact: after a scan's
        many writes, and at close. A full `ANALYZE` (about a second at 100,000 runs) runs only
        when the number of runs has moved by more than `REANALYZE_CHANGE` since the last one,
        so its cost is spread over the runs added; otherwise this is one count. A sampled one
        (`analysis_limit`) is no cheaper way: it guesses row counts from the tree's shape, off
        by 2x at 100,000 runs with long keys, and the planner then walks an index and looks
        each row up (a sort or a text search 3-5x slower)."""
        with self._lock:
            runs = int(self._connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
            analysed = _analysed_runs(self._connection)
            if analysed is not None and abs(runs - analysed) <= analysed * REANALYZE_CHANGE:
                return
            self._analyze()

    def _analyze(self) -> None:
        self._connection.execute("PRAGMA analysis_limit = 0")
        self._connection.execute("ANALYZE")
        self._connection.commit()


def _analysed_runs(connection: Connection) -> int | None:
    """How many runs the last `ANALYZE` counted, or None when there are no statistics."""
    try:
        found = connection.execute(
            "SELECT stat FROM sqlite_stat1 WHERE idx = 'runs_key'"
        ).fetchone()
    except sqlite3.OperationalError:  # no sqlite_stat1: never analysed
        return None
    return None if found is None else int(str(found[0]).split()[0])


REANALYZE_CHANGE = 0.1  # the share of runs added or gone since the last ANALYZE that renews it
MAX_BOUND = 500  # keys bound in one IN (...)
# A row's curves as an older daemon stored them: `runformat.index_curves`'s JSON, escaped for
# HTML (room for that). Longer (a hand-made file) they are read as none, as a packed blob
# that could expand past what unpacking reads: a page of rows stays small whatever the file
# holds.
MAX_CURVES_TEXT = 2 * MAX_CURVES_BYTES
ROW_COLUMNS = (
    "key, status, status_class, model, hook, architecture, source, steps, started_at, duration,"
    " rendered_at, report, error, problems, anomalies,"
    f" CASE WHEN length(packed) <= {packed.MAX_DECODED} THEN packed END,"
    " places.host, places.tree, places.output"
)
BLOB = 15  # the packed blob's place among ROW_COLUMNS


def row_of(found: tuple[Any, ...], fields: dict[str, Any], curves_json: str) -> dict[str, Any]:
    """A row as `pages.index_row` made it, from the columns `ROW_COLUMNS` names and its blob
    (the column at `BLOB`) unpacked (`packed.unpack_many`)."""
    (key, status, status_class, model, hook, architecture, source, steps, started_at,
     duration, rendered_at, report, error, problems, anomalies, _, host, tree,
     output) = found  # fmt: skip
    return {
        "run_id": key,
        "status": status,
        "status_class": status_class,
        "model": model,
        "hook": hook,
        "architecture": architecture,
        "source": source,
        "steps": steps,
        "started_at": started_at or "",
        "duration": duration,
        "rendered_at": rendered_at,
        "report": _report_path(key, report),
        "error": error,
        "problems": problems,
        "anomalies": anomalies,
        "alerts": fields["alerts"],
        "final": fields["final"],
        "minimum": fields["minimum"],
        "config": fields["config"],
        "losses": list(fields["final"]),
        "curves_json": curves_json,
        "place": Place(host, tree, output),
    }


def _legacy_row(found: tuple[Any, ...]) -> dict[str, Any]:
    """A row of schema 1 or 2 (`LEGACY_COLUMNS`) as `pages.index_row` made it: its JSON
    columns read, its curves from JSON (2: packed by `legacy_curves`), bounded again."""
    (key, status, status_class, model, hook, architecture, source, steps, started_at,
     duration, rendered_at, report, error, problems, anomalies, alerts, final, minimum,
     config, kept) = found  # fmt: skip
    if not kept or len(kept) > MAX_CURVES_TEXT:  # none, or more than a daemon kept
        curves_json = "{}"
    else:
        curves_json = legacy_curves.decode(kept) if isinstance(kept, bytes) else kept
    try:
        curves = index_curves(json.loads(curves_json))
    except ValueError:  # a hand-edited schema 1 file: the run is kept, without its curves
        curves = {}
    final = json.loads(final)
    return {
        "run_id": key,
        "status": status,
        "status_class": status_class,
        "model": model,
        "hook": hook,
        "architecture": architecture,
        "source": source,
        "steps": steps,
        "started_at": started_at or "",
        "duration": duration,
        "rendered_at": rendered_at,
        "report": report,
        "error": error,
        "problems": problems,
        "anomalies": anomalies,
        "alerts": json.loads(alerts),
        "final": final,
        "minimum": json.loads(minimum),
        "config": json.loads(config),
        "losses": list(final),
        "curves": curves,
    }


def _report_name(key: str, report: str) -> str:
    """A row's report as kept: the file's name alone where it is in the run's loss_graphs/
    (`pages.index_row`'s usual link; the run's path is 65 characters as `start_run` makes it),
    else the whole link, which always holds a `/`."""
    name = report.removeprefix(f"{key}/{GRAPHS_DIR}/")
    return name if name != report and name and "/" not in name else report


def _report_path(key: str, kept: str) -> str:
    return f"{key}/{GRAPHS_DIR}/{kept}" if kept and "/" not in kept else kept


def is_damaged(exc: Exception) -> bool:
    """Whether `exc` says the catalog file is no database, or not ours any more: malformed,
    overwritten, or emptied (its tables gone; the statements here name no other)."""
    if getattr(exc, "sqlite_errorname", None) in DAMAGED:
        return True
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table")


def is_unusable(exc: Exception) -> bool:
    """Whether a reader should stop reading the file for now: damaged, or a hot journal in
    the way, which only a writer (the daemon) can roll back."""
    return is_damaged(exc) or getattr(exc, "sqlite_errorname", None) == HOT_JOURNAL


def _set_aside(fd: int) -> str:
    """Rename the catalog file (and its journal, which must never be rolled back into a new
    file of the same name) in the folder `fd` holds; returns its new name, a free one."""
    base = f"{CATALOG_FILE}.damaged-{utc_time():%Y%m%dT%H%M%SZ}"
    aside, count = base, 1
    while storage.lexists(Path(aside), dir_fd=fd) or storage.lexists(
        Path(aside + JOURNAL_SUFFIX), dir_fd=fd
    ):
        aside, count = f"{base}-{count}", count + 1
    storage.move_at(CATALOG_FILE, fd, fd, aside)
    if storage.lexists(Path(CATALOG_FILE + JOURNAL_SUFFIX), dir_fd=fd):
        storage.move_at(CATALOG_FILE + JOURNAL_SUFFIX, fd, fd, aside + JOURNAL_SUFFIX)
    return aside


def _delete(connection: Connection, key: str, here: tuple[str, str, str]) -> None:
    found = connection.execute(
        f"SELECT id, place FROM runs WHERE key = ? AND place = {HERE_ID}", (key, *here)
    ).fetchone()
    if found is None:
        return
    run, place = found
    _clear(connection, run)
    for table in OWN_ROWS:
        connection.execute(f"DELETE FROM {table} WHERE run = ?", (run,))
    _uncount(connection, key, place)
    connection.execute("DELETE FROM runs WHERE id = ?", (run,))


# A run's sweep, status and source, as `run_counts` counts it: the run's row as it is now.
COUNTED_AS = (
    "(sweep, status, source) = (SELECT sweep, status, source FROM runs WHERE key = ? AND place = ?)"
)


def _uncount(connection: Connection, key: str, place: int) -> None:
    """Take run `key`'s row of place number `place`, about to change or go, out of
    `run_counts`."""
    connection.execute(
        f"UPDATE run_counts SET counted = counted - 1 WHERE {COUNTED_AS}", (key, place)
    )
    connection.execute(f"DELETE FROM run_counts WHERE counted = 0 AND {COUNTED_AS}", (key, place))


def _clear(connection: Connection, run: int) -> None:
    """Remove run `run`'s losses and config (from `setting_counts` too), and the names no
    other run still uses."""
    counted = "(sweep, setting) IN (SELECT sweep, setting FROM config WHERE run = ?)"
    connection.execute(f"UPDATE setting_counts SET counted = counted - 1 WHERE {counted}", (run,))
    connection.execute(f"DELETE FROM setting_counts WHERE counted = 0 AND {counted}", (run,))
    for table, column in NAMED:
        owner = column.partition(".")[0]
        used = [number for (number,) in connection.execute(
            f"SELECT {column} FROM {owner} WHERE run = ?", (run,))]  # fmt: skip
        connection.execute(f"DELETE FROM {owner} WHERE run = ?", (run,))
        connection.executemany(
            f"DELETE FROM {table} WHERE id = ? AND NOT EXISTS"
            f" (SELECT 1 FROM {owner} WHERE {column} = {table}.id)",
            ((number,) for number in used),
        )


def packed_row(row: dict[str, Any], carried: Any = None) -> dict[str, Any]:
    """`row` (`pages.index_row`'s shape) with its curves packed with its details, as `put`
    writes them: 3.4 KB a realistic row against 30 KB with its curves' lists, for rows held
    before they are written (a daemon's batch, the rows it keeps while a server is down).
    `carried`: the blob the row's render marker carries (`entry["packed"]`), taken as it is
    where it is one of ours holding the row's details (`packed.carried`): a first start then
    packs none of 100,000 runs (building and packing a row: 56 µs, against 202)."""
    held = {name: value for name, value in row.items() if name != "curves"}
    blob = None if carried is None else packed.carried(carried, row)
    held["packed"] = blob if blob is not None else pack(row, row["curves"])
    return held


def _insert(connection: Connection, rows: list[dict[str, Any]], place: Place) -> None:
    """Add or replace `rows` (`pages.index_row`'s shape, or `packed_row`'s), runs of `place`.
    A replaced run keeps its number; a new one has nothing to clear (a first start adds
    100,000 such). Each run's own statement gives its number; what hangs off it is written
    for many runs at once (`_Details`)."""
    numbers = _Numbers(connection)
    where = numbers.place(place)
    details = _Details(numbers)
    for row in rows:
        key = row["run_id"]
        sweep = numbers.sweep((row["model"], row["hook"], row["architecture"]))
        replaced = connection.execute(
            "SELECT 1 FROM runs WHERE key = ? AND place = ?", (key, where)
        ).fetchone()
        if replaced:  # its old rows are taken out as they are now: the batch's written first
            details.write(connection)
            _uncount(connection, key, where)
        (run,) = connection.execute(
            "INSERT INTO runs (key, place, status, sweep, source, steps, started_at, duration,"
            " rendered_at, search) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (key, place) DO UPDATE SET status = excluded.status,"
            " sweep = excluded.sweep, source = excluded.source, steps = excluded.steps,"
            " started_at = excluded.started_at, duration = excluded.duration,"
            " rendered_at = excluded.rendered_at, search = excluded.search RETURNING id",
            (
                key,
                where,
                row["status"],
                sweep,
                row["source"],
                row["steps"],
                row["started_at"] or None,  # unknown: sorted last, as other gaps
                row["duration"],
                row["rendered_at"],
                _search_text(row),
            ),
        ).fetchone()
        if replaced:
            _clear(connection, run)
            for table in OWN_ROWS:
                connection.execute(f"DELETE FROM {table} WHERE run = ?", (run,))
        details.add(run, sweep, row)
    details.write(connection)


class _Details:
    """What hangs off runs' rows (their details, losses, config, and the counts of each),
    gathered for one `executemany` a table. Written before any run is cleared: a name a
    gathered row uses is then seen in use, and kept."""

    def __init__(self, numbers: _Numbers) -> None:
        self._numbers = numbers
        self._details: list[tuple[Any, ...]] = []
        self._losses: list[tuple[Any, ...]] = []
        self._config: list[tuple[int, int, int]] = []
        self._runs = Counter[tuple[int, str, str]]()
        self._settings = Counter[tuple[int, int]]()

    def add(self, run: int, sweep: int, row: dict[str, Any]) -> None:
        self._details.append((
            run,
            row["status_class"],
            _report_name(row["run_id"], row["report"]),
            row["error"],
            row["problems"],
            row["anomalies"],
            row["packed"] if "packed" in row else pack(row, row["curves"]),
        ))  # fmt: skip
        self._losses += (
            (run, self._numbers.loss(loss), row["final"].get(loss), row["minimum"].get(loss))
            for loss in dict.fromkeys([*row["final"], *row["minimum"]])
        )
        for setting in row["config"].items():
            number = self._numbers.setting(setting)
            self._config.append((run, number, sweep))
            self._settings[(sweep, number)] += 1
        self._runs[(sweep, row["status"], row["source"])] += 1

    def write(self, connection: Connection) -> None:
        connection.executemany("INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?)", self._details)
        connection.executemany("INSERT INTO loss_values VALUES (?, ?, ?, ?)", self._losses)
        connection.executemany("INSERT INTO config VALUES (?, ?, ?)", self._config)
        connection.executemany(
            "INSERT INTO run_counts VALUES (?, ?, ?, ?) ON CONFLICT (sweep, status, source)"
            " DO UPDATE SET counted = run_counts.counted + excluded.counted",
            [(*counted, count) for counted, count in self._runs.items()],
        )
        connection.executemany(
            "INSERT INTO setting_counts VALUES (?, ?, ?) ON CONFLICT (sweep, setting)"
            " DO UPDATE SET counted = setting_counts.counted + excluded.counted",
            [(*counted, count) for counted, count in self._settings.items()],
        )
        for gathered in (self._details, self._losses, self._config, self._runs, self._settings):
            gathered.clear()


class _Numbers:
    """The numbers of sweeps, losses and settings, given one where new, remembered for one
    transaction's rows."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._known: dict[tuple[str, tuple[str, ...]], int] = {}

    def sweep(self, names: tuple[str, str, str]) -> int:
        search = "\n".join(names).lower()
        return self._number("sweeps", ("model", "hook", "architecture"), names, search=search)

    def loss(self, name: str) -> int:
        return self._number("loss_names", ("name",), (name,))

    def setting(self, setting: tuple[str, str]) -> int:
        return self._number("settings", ("name", "value"), setting)

    def place(self, place: Place) -> int:
        return self._number("places", ("host", "tree", "output"), place.values(), name=place.name)

    def _number(
        self, table: str, columns: tuple[str, ...], values: tuple[str, ...], **more: str
    ) -> int:
        known = self._known.get((table, values))
        if known is not None:
            return known
        names = [*columns, *more]
        self._connection.execute(
            f"INSERT INTO {table} ({', '.join(names)})"
            f" VALUES ({', '.join('?' * len(names))}) ON CONFLICT DO NOTHING",
            (*values, *more.values()),
        )
        (found,) = self._connection.execute(
            f"SELECT id FROM {table} WHERE {' AND '.join(f'{name} = ?' for name in columns)}",
            values,
        ).fetchone()
        self._known[(table, values)] = int(found)
        return int(found)


def step_up(
    connection: Connection, version: int, place: Place, translate: Callable[[str], str] = str
) -> None:
    """Bring a catalog of schema `version` (`UPGRADED_FROM` or later) to this one in place, in
    the caller's transaction: schema 3's runs are given `place` (`add_places`), later steps
    are `STEPS`. `translate`: a statement in the database's words."""
    for step in range(version, SCHEMA_VERSION):
        if step == PLACES_ADDED - 1:
            add_places(connection, place, translate)
        else:
            for statement in STEPS[step]:
                connection.execute(translate(statement))


def add_places(connection: Connection, place: Place, translate: Callable[[str], str] = str) -> None:
    """Make schema 3's catalog schema 4's, in its transaction: every run it lists given
    `place`, the tree's it was kept for. `translate`: a statement in the database's words."""
    connection.execute(translate(PLACES_SCHEMA))
    number = _Numbers(connection).place(place)
    for statement in PLACE_STEPS:
        connection.execute(translate(statement.format(number=int(number))))


def _tables(connection: Connection) -> set[str]:
    found = connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
    return {name for (name,) in found}


def _indexes(connection: Connection) -> list[str]:
    """The indexes made by CREATE INDEX (not those SQLite makes for a key)."""
    found = connection.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL"
    )
    return [name for (name,) in found]


def _search_text(row: dict[str, Any]) -> str:
    """What a text filter looks through beside the run's path, its source and its sweep's
    names (which it reads where they are, LIKE ignoring the case of ASCII letters), lower-cased:
    the run's config, and the path and source where lower-casing them changes more than ASCII
    letters (`Ωmega`)."""
    parts = [text.lower() for text in (row["run_id"], row["source"]) if not _ascii_folds(text)]
    parts += [f"{name}={value}".lower() for name, value in row["config"].items()]
    return "\n".join(parts)


def _ascii_folds(text: str) -> bool:
    """Whether LIKE, which ignores the case of ASCII letters only, finds in `text` what
    Python's lower-casing would. (ASCII text: always; asked of every row a first start writes.)"""
    if text.isascii():
        return True
    return text.lower() == "".join(
        letter.lower() if letter.isascii() else letter for letter in text
    )


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    mode = "ro" if readonly else "rwc"
    # `with connection:` is one transaction; a plain read takes and drops its own lock.
    connection = sqlite3.connect(
        f"file:{quote(str(path))}?mode={mode}", uri=True, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _check_regular(path: Path, folder_fd: int) -> None:
    try:
        info = os.stat(path.name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(path, f"is {storage.kind_of(Path(path.name), dir_fd=folder_fd)}")


def _check_not_shared(folder: Path, fd: int) -> None:
    """A catalog folder others can write in may hold anything (a link, someone's file)."""
    if os.fstat(fd).st_mode & 0o022:
        raise UnsafePathError(folder, "is writable by other users: not read")


def _check_ours(folder: Path, fd: int) -> None:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise UnsafePathError(folder, f"belongs to user {info.st_uid}, not this one")
    _check_not_shared(folder, fd)
