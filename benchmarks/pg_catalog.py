"""A PostgreSQL catalog of many trees for bench_browse.py, filled in minutes, kept between runs.

Writing 100,000 runs as daemons do takes about 13 minutes on the shared 2-core machine, so
1,000,000 would take over two hours. The rows a daemon writes are instead taken from the
SQLite catalog the benchmark has already filled through `Catalog.put_many` (the same
statements, the same packed blobs, the same numbered sweeps, loss names and settings), and
COPYed into the server once per tree, each tree's runs under their own numbers, keys and
place (a login host's runs tree, `tree_place`), before the catalog's indexes are made (made
once over every row, not kept up row by row).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from lossreport.catalog import store
from lossreport.catalog.places import Place
from lossreport.catalog.postgres import PostgresCatalog
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE
from tests.support.postgres import PostgresServer, free_port, new_cluster, tools_found

logger = logging.getLogger(__name__)

# A modest server on a machine others share: at most 1 GB of shared buffers.
SETTINGS = (
    "shared_buffers=768MB",
    "effective_cache_size=4GB",
    "work_mem=32MB",
    "maintenance_work_mem=512MB",
    "max_wal_size=8GB",
    "random_page_cost=1.1",
    "jit=off",
)
DATABASE = "runs"
# Tables copied as they are (small: shared by every tree), and those copied once per tree.
SHARED = ("sweeps", "loss_names", "settings")
PER_TREE = {"runs": "id", "details": "run", "loss_values": "run", "config": "run"}


def tree_place(tree: int) -> Place:
    """Tree `tree`'s place: a cluster's login host and its runs tree."""
    return Place(f"login-{tree:02d}.cluster-{tree:02d}.lab", "/scratch/lossreport/runs", "")


def placed(tree: int, row: list[Any], table: str, offset: int, columns: list[str]) -> list[Any]:
    """`row` of `table` (a column of run numbers first, named by `columns`) as tree `tree`'s:
    its run numbered past the trees before it, and in `runs` its place (numbered as
    `fill_trees` numbers them), its key under the tree's folder name (run ids differ between
    trees) and its text filter's copy of the key (kept lower-cased where ASCII folding is not
    enough) too."""
    row = [row[0] + tree * offset, *row[1:]]
    if table == "runs":
        row[columns.index("place")] = tree + 1
    if table == "runs" and tree:
        at_key, at_search = columns.index("key"), columns.index("search")
        prefix = f"tree-{tree:02d}/"
        key, search = row[at_key], row[at_search]
        row[at_key] = prefix + key
        if search.startswith(key.lower()) and not store._ascii_folds(key):
            row[at_search] = prefix + search
    return row


@contextmanager
def kept_cluster(folder: Path) -> Iterator[str]:
    """A private PostgreSQL server with its data in `folder` (made there the first time),
    started for the benchmark and stopped after it; yields its database's URL."""
    tools = tools_found()
    if tools is None:
        raise SystemExit("--keep needs PostgreSQL's initdb and pg_ctl (apt-get install postgresql)")
    folder = folder.resolve()
    if (folder / "data" / "PG_VERSION").exists():
        server = PostgresServer(folder, tools, free_port())
    else:
        if folder.exists():
            shutil.rmtree(folder)
        server = new_cluster(folder, tools)
    server.start(*SETTINGS)
    try:
        if not server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip():
            server.psql(f"CREATE DATABASE {DATABASE}")
        yield server.url(DATABASE)
    finally:
        server.stop()


def filled(url: str) -> int:
    """How many runs the catalog at `url` holds (0 where it has no catalog yet)."""
    with psycopg.connect(url) as connection:
        made = connection.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()
        if not made or not made[0]:
            return 0
        found = connection.execute("SELECT COUNT(*) FROM runs").fetchone()
        return int(found[0]) if found else 0


def fill_trees(state: Path, url: str, trees: int) -> int:
    """The SQLite catalog in `state` copied into the empty database at `url` as `trees`
    trees' runs; returns how many runs it then holds."""
    PostgresCatalog.connect(url, writable=True).close()  # the schema, made as a daemon does
    source = sqlite3.connect(f"file:{state / CATALOG_DIR / CATALOG_FILE}?mode=ro", uri=True)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '512MB'")
        indexes = _drop_indexes(connection)
        (offset,) = source.execute("SELECT MAX(id) FROM runs").fetchone()
        for table in SHARED:
            _copy(connection, table, source.execute(f"SELECT * FROM {table}"))
        connection.execute("DELETE FROM places")  # any the connection above named: no run's
        places = [tree_place(tree) for tree in range(trees)]
        _copy(connection, "places", ([n + 1, *p.values(), p.name] for n, p in enumerate(places)))
        for table, column in PER_TREE.items():
            cursor = source.execute(f"SELECT * FROM {table} ORDER BY {column}")
            columns = [described[0] for described in cursor.description]
            rows = cursor.fetchall()
            for tree in range(trees):
                _copy(
                    connection,
                    table,
                    (placed(tree, list(row), table, offset, columns) for row in rows),
                )
            logger.info("%s copied %d times: %.0f s", table, trees, time.perf_counter() - started)
        for table in (*SHARED, "places", "runs"):
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT MAX(id) FROM {table}))"
            )
        for statement in store.COUNTED:  # as daemons keep them up, for every tree
            connection.execute(statement)
        for statement in indexes:
            connection.execute(statement)
        logger.info("indexes made: %.0f s", time.perf_counter() - started)
        connection.execute("VACUUM (ANALYZE)")
        found = connection.execute("SELECT COUNT(*) FROM runs").fetchone()
    source.close()
    return int(found[0]) if found else 0


def upgraded(url: str) -> None:
    """The catalog at `url` brought to this lossreport's schema, as a daemon's connection
    brings it (a catalog kept from a run of an older one), its new tables' statistics made
    (as autovacuum soon makes them)."""
    PostgresCatalog.connect(url, writable=True).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) run_counts, setting_counts")


def _drop_indexes(connection: psycopg.Connection[Any]) -> list[str]:
    """Drop the catalog's indexes other than its keys' (made again once the rows are in:
    `CREATE INDEX` over a million rows is minutes faster than keeping them up row by row);
    the statements that make them again."""
    found = connection.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
    ).fetchall()
    for name, _ in found:
        connection.execute(f'DROP INDEX "{name}"')
    return [definition for _, definition in found]


def _copy(connection: psycopg.Connection[Any], table: str, rows: Any) -> None:
    with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
