"""A catalog a daemon of schema 1 left (every table keyed by the run's path, curves as JSON),
of schema 2 (runs numbered, names and JSON in each run's rows, curves in a blob of their
own) or of schema 3 (one tree's runs, no place) is upgraded in place when the new daemon
opens it: every run kept, none to render again."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from lossreport.catalog import Catalog, RunQuery, legacy_curves, store
from lossreport.catalog.places import HERE
from lossreport.catalog.query import search
from lossreport.catalog.store import SCHEMA_VERSION
from lossreport.catalog.sweeps import sweeps
from lossreport.report import pages
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE
from tests.support.catalog import TO_SCHEMA_4, realistic_entries, synthetic_entries

# Schema 1 as the daemon before this one made it (catalog/store.py at cfb3565), and its writes.
SCHEMA_1 = """
CREATE TABLE runs (key TEXT PRIMARY KEY, status TEXT NOT NULL, model TEXT NOT NULL,
    hook TEXT NOT NULL, architecture TEXT NOT NULL, source TEXT NOT NULL, steps INTEGER,
    started_at TEXT, duration REAL, rendered_at TEXT NOT NULL, search TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_rendered ON runs (rendered_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_duration ON runs (duration);
CREATE INDEX runs_steps ON runs (steps);
CREATE INDEX runs_sweep ON runs (model, hook, architecture);
CREATE INDEX runs_hook ON runs (hook);
CREATE INDEX runs_architecture ON runs (architecture);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_source ON runs (source);
CREATE TABLE details (key TEXT PRIMARY KEY, status_class TEXT NOT NULL, report TEXT NOT NULL,
    error TEXT NOT NULL, problems INTEGER NOT NULL, anomalies INTEGER NOT NULL,
    alerts TEXT NOT NULL, final TEXT NOT NULL, minimum TEXT NOT NULL, config TEXT NOT NULL,
    curves TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE loss_values (key TEXT NOT NULL, loss TEXT NOT NULL, final REAL, minimum REAL,
    PRIMARY KEY (key, loss)) WITHOUT ROWID;
CREATE INDEX loss_values_final ON loss_values (loss, final);
CREATE INDEX loss_values_minimum ON loss_values (loss, minimum);
CREATE TABLE config (key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    sweep TEXT NOT NULL, PRIMARY KEY (key, name)) WITHOUT ROWID;
CREATE INDEX config_value ON config (name, value);
CREATE INDEX config_sweep ON config (sweep, name, value);
PRAGMA user_version = 1;
"""


def _write_schema_1(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as schema 1's `Catalog.put_many` wrote them, and its sampled statistics."""
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(SCHEMA_1)
        with connection:
            for row in rows:
                key, names = row["run_id"], (row["model"], row["hook"], row["architecture"])
                search_text = "\n".join(
                    [key, *names, row["source"], *(f"{k}={v}" for k, v in row["config"].items())]
                ).lower()
                connection.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, row["status"], *names, row["source"], row["steps"],
                     row["started_at"] or None, row["duration"], row["rendered_at"],
                     search_text),
                )  # fmt: skip
                connection.execute(
                    "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, row["status_class"], row["report"], row["error"], row["problems"],
                     row["anomalies"], *(json.dumps(row[name]) for name in
                     ("alerts", "final", "minimum", "config")), pages.script_json(row["curves"])),
                )  # fmt: skip
                for loss in dict.fromkeys([*row["final"], *row["minimum"]]):
                    connection.execute(
                        "INSERT INTO loss_values VALUES (?, ?, ?, ?)",
                        (key, loss, row["final"].get(loss), row["minimum"].get(loss)),
                    )
                for name, value in row["config"].items():
                    connection.execute(
                        "INSERT INTO config VALUES (?, ?, ?, ?)",
                        (key, name, value, "\x1f".join(names)),
                    )
            connection.execute("PRAGMA analysis_limit = 1000")
            connection.execute("ANALYZE")


# Schema 2 as the daemon before this one made it (catalog/store.py at b20a0ec), and its writes.
SCHEMA_2 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, status TEXT NOT NULL,
    model TEXT NOT NULL, hook TEXT NOT NULL, architecture TEXT NOT NULL, source TEXT NOT NULL,
    steps INTEGER, started_at TEXT, duration REAL, rendered_at TEXT NOT NULL,
    search TEXT NOT NULL);
CREATE UNIQUE INDEX runs_key ON runs (key);
CREATE INDEX runs_rendered ON runs (rendered_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_duration ON runs (duration);
CREATE INDEX runs_steps ON runs (steps);
CREATE INDEX runs_sweep ON runs (model, hook, architecture);
CREATE INDEX runs_hook ON runs (hook);
CREATE INDEX runs_architecture ON runs (architecture);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_source ON runs (source);
CREATE TABLE details (run INTEGER PRIMARY KEY, status_class TEXT NOT NULL,
    report TEXT NOT NULL, error TEXT NOT NULL, problems INTEGER NOT NULL,
    anomalies INTEGER NOT NULL, alerts TEXT NOT NULL, final TEXT NOT NULL,
    minimum TEXT NOT NULL, config TEXT NOT NULL, curves BLOB);
CREATE TABLE loss_values (run INTEGER NOT NULL, loss TEXT NOT NULL, final REAL, minimum REAL,
    PRIMARY KEY (run, loss)) WITHOUT ROWID;
CREATE INDEX loss_values_final ON loss_values (loss, final);
CREATE INDEX loss_values_minimum ON loss_values (loss, minimum);
CREATE TABLE config (run INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    sweep INTEGER NOT NULL, PRIMARY KEY (run, name)) WITHOUT ROWID;
CREATE INDEX config_value ON config (name, value);
CREATE INDEX config_sweep ON config (sweep, name, value);
CREATE TABLE sweeps (id INTEGER PRIMARY KEY, model TEXT NOT NULL, hook TEXT NOT NULL,
    architecture TEXT NOT NULL, UNIQUE (model, hook, architecture));
CREATE TABLE seen (run INTEGER PRIMARY KEY, stamp INTEGER NOT NULL, running INTEGER NOT NULL);
PRAGMA user_version = 2;
"""


def _write_schema_2(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as schema 2's `Catalog.put_many` wrote them, their seen stamps (`stamps_of`) and
    its statistics."""
    stamps = stamps_of(rows)
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(SCHEMA_2)
        with connection:
            for row in rows:
                key, names = row["run_id"], (row["model"], row["hook"], row["architecture"])
                (run,) = connection.execute(
                    "INSERT INTO runs VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (key, row["status"], *names, row["source"], row["steps"],
                     row["started_at"] or None, row["duration"], row["rendered_at"],
                     _search_text(row)),
                ).fetchone()  # fmt: skip
                connection.execute(
                    "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run, row["status_class"], row["report"], row["error"], row["problems"],
                     row["anomalies"], *(json.dumps(row[name]) for name in
                     ("alerts", "final", "minimum", "config")),
                     legacy_curves.encode(row["curves"])),
                )  # fmt: skip
                for loss in dict.fromkeys([*row["final"], *row["minimum"]]):
                    connection.execute(
                        "INSERT INTO loss_values VALUES (?, ?, ?, ?)",
                        (run, loss, row["final"].get(loss), row["minimum"].get(loss)),
                    )
                if row["config"]:
                    connection.execute("INSERT OR IGNORE INTO sweeps VALUES (NULL, ?, ?, ?)", names)
                    (sweep,) = connection.execute(
                        "SELECT id FROM sweeps WHERE model = ? AND hook = ? AND architecture = ?",
                        names,
                    ).fetchone()
                for name, value in row["config"].items():
                    connection.execute(
                        "INSERT INTO config VALUES (?, ?, ?, ?)", (run, name, value, sweep)
                    )
                if key in stamps:
                    connection.execute("INSERT INTO seen VALUES (?, ?, ?)", (run, *stamps[key]))
            connection.execute("ANALYZE")


def _search_text(row: dict[str, Any]) -> str:
    parts = [row["run_id"], row["model"], row["hook"], row["architecture"], row["source"]]
    return "\n".join(parts + [f"{k}={v}" for k, v in row["config"].items()]).lower()


# Schema 4 less its places: schema 3, which the daemon before this one made (catalog/store.py
# at 8a3d651), in both databases' words (after `TO_SCHEMA_4`, schema 5 less its counts).
WITHOUT_PLACES = (
    "DROP INDEX runs_place",
    "DROP INDEX runs_key",
    "ALTER TABLE runs DROP COLUMN place",
    "CREATE UNIQUE INDEX runs_key ON runs (key)",
    "DROP TABLE places",
)


def write_schema_3(connection: Any, rows: list[dict[str, Any]]) -> None:
    """`rows` and their stamps as schema 3's daemon wrote them, on an empty catalog of this
    schema (`connection`: SQLite's or a PostgreSQL catalog's): schema 3 wrote the same rows,
    less their place and their counts."""
    with connection:
        store._insert(connection, rows, HERE)
        connection.executemany(
            "INSERT INTO seen SELECT id, ?, ? FROM runs WHERE key = ?",
            [(stamp, int(running), key) for key, (stamp, running) in stamps_of(rows).items()],
        )
        for statement in (*TO_SCHEMA_4, *WITHOUT_PLACES):
            connection.execute(statement)


def _write_schema_3(path: Path, rows: list[dict[str, Any]]) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(f"{store.SCHEMA};{store.SEEN_SCHEMA}")
        write_schema_3(connection, rows)
        connection.execute("PRAGMA user_version = 3")


WRITERS = {1: _write_schema_1, 2: _write_schema_2, 3: _write_schema_3}


def stamps_of(rows: list[dict[str, Any]]) -> dict[str, tuple[int, bool]]:
    """Seen stamps (daemon/seen.py) for most of `rows`, signed 64-bit as they are."""
    return {row["run_id"]: (-(2**62) + 7919 * number, number % 3 == 0)
            for number, row in enumerate(rows) if number % 5}  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    made = [pages.index_row(entry, key) for key, entry in synthetic_entries(400)]
    made += [pages.index_row(entry, key) for key, entry in realistic_entries(200)]
    made.append(pages.index_row({"status": "not rendered", "error": "bad marker"}, "bad/run"))
    entry = next(realistic_entries(1, seed=5))[1]
    made.append(pages.index_row(entry, "team/Ωmega-run", "../x"))  # a report kept elsewhere
    return made


def _without_curves(row: dict[str, Any]) -> dict[str, Any]:
    """`row` as `pages.index_row` makes it, less its curves (compared apart: `_close`)."""
    return {
        name: value for name, value in row.items() if name not in ("curves", "curves_json", "place")
    }


def _close(curves_json: str, expected: dict[str, list[list[float]]]) -> bool:
    """Curves as kept: every step, each value within 1/10,000 of its curve's range."""
    found = json.loads(curves_json)
    if list(found) != list(expected):
        return False
    for name, points in expected.items():
        values = [value for _, value in points]
        span = (max(values) - min(values)) if values else 0
        got = found[name]
        if [step for step, _ in got] != [step for step, _ in points]:
            return False
        if any(
            abs(a[1] - b[1]) > span / 10_000 + abs(b[1]) * 1e-3
            for a, b in zip(got, points, strict=True)
        ):
            return False
    return True


@pytest.mark.parametrize("version", sorted(WRITERS))
def test_an_older_catalog_is_upgraded_in_place(tmp_path: Path, version: int) -> None:
    rows = _rows()
    folder = tmp_path / CATALOG_DIR
    folder.mkdir(mode=0o755)
    WRITERS[version](folder / CATALOG_FILE, rows)
    assert Catalog.open_readonly(tmp_path) is None  # serve waits for the daemon's upgrade

    before = (folder / CATALOG_FILE).stat().st_size
    catalog = Catalog.open(tmp_path)
    catalog.close()
    if version < 3:  # moved into new tables: the old pages given back
        assert (folder / CATALOG_FILE).stat().st_size < before / 1.5
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    try:
        assert reader.count() == len(rows)
        kept = {row["run_id"]: row for row in reader.rows([row["run_id"] for row in rows])}
        for row in rows:
            assert _without_curves(kept[row["run_id"]]) == _without_curves(row), row["run_id"]
            assert _close(kept[row["run_id"]]["curves_json"], row["curves"]), row["run_id"]
            assert kept[row["run_id"]]["place"] == HERE
        # what the tables beside the rows answer, made again from them
        wanted = RunQuery(config=(("lr", "0.001"),), sort="final:mse_loss", per_page=1000)
        expected = sum(1 for row in rows if row["config"].get("lr") == "0.001")
        assert search(reader, wanted).total == expected > 0
        assert sweeps(reader, RunQuery())[0] > 10
        assert search(reader, RunQuery(text="ωMEGA-RUN")).total == 1  # a folded path
        assert search(reader, RunQuery(model=rows[-1]["model"])).total > 1
        # a restart after the upgrade still skips the runs it found settled (schema 2's)
        assert reader.stamps() == (stamps_of(rows) if version >= 2 else {})
        with reader.reading() as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            tables = {name for (name,) in connection.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'")}  # fmt: skip
    finally:
        reader.close()
    assert "sweeps" in tables and not {name for name in tables if name.startswith("old_")}
    assert [path.name for path in folder.iterdir()] == [CATALOG_FILE]


def test_a_schema_4_catalog_gains_its_counts_in_place(tmp_path: Path) -> None:
    """Schema 4 to 5 adds a table and an index to the rows as they are: nothing moved, every
    count right from the first read."""
    catalog = Catalog.open(tmp_path)
    rows = [pages.index_row(entry, key) for key, entry in synthetic_entries(300)]
    catalog.put_many(rows)
    expected = search(catalog, RunQuery(status="failed")).total
    groups = sweeps(catalog, RunQuery())[0]
    catalog.close()
    with closing(sqlite3.connect(tmp_path / CATALOG_DIR / CATALOG_FILE)) as connection:
        for statement in TO_SCHEMA_4:
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 4")
        connection.commit()
    assert Catalog.open_readonly(tmp_path) is None  # serve waits for the daemon's upgrade
    Catalog.open(tmp_path).close()
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    try:
        assert reader.count() == len(rows)
        assert search(reader, RunQuery(status="failed")).total == expected > 0
        assert sweeps(reader, RunQuery())[0] == groups > 10
        with reader.reading() as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            analysed = connection.execute("SELECT tbl, idx FROM sqlite_stat1").fetchall()
        assert {"config_setting", "run_counts"} <= {name for row in analysed for name in row}
    finally:
        reader.close()


def test_a_hand_edited_schema_1_catalog_keeps_its_runs_without_bad_curves(tmp_path: Path) -> None:
    """Schema 1 kept each run's curves as JSON text, which a person could edit: a text that is
    no JSON, or points that are none, cost that run its curves (or those points), not the
    upgrade."""
    rows = _rows()[:3]
    folder = tmp_path / CATALOG_DIR
    folder.mkdir(mode=0o755)
    _write_schema_1(folder / CATALOG_FILE, rows)
    hand_made = {rows[0]["run_id"]: "{not json", rows[1]["run_id"]: '{"mse_loss": [[1, "x"], 7]}'}
    with closing(sqlite3.connect(folder / CATALOG_FILE)) as connection, connection:
        for key, text in hand_made.items():
            connection.execute("UPDATE details SET curves = ? WHERE key = ?", (text, key))
    Catalog.open(tmp_path).close()
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    try:
        kept = {row["run_id"]: row for row in reader.rows([row["run_id"] for row in rows])}
    finally:
        reader.close()
    assert kept.keys() == {row["run_id"] for row in rows}
    assert kept[rows[0]["run_id"]]["curves_json"] == "{}"
    assert json.loads(kept[rows[1]["run_id"]]["curves_json"]) == {"mse_loss": []}
    assert _close(kept[rows[2]["run_id"]]["curves_json"], rows[2]["curves"])
