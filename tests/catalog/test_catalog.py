"""The runs catalog on real SQLite files and on a real PostgreSQL server (the session's, one
database a test): every query checked against the same question asked of the generated rows
in plain Python, rows replaced, failed, forgotten and pruned, on both; and a hostile catalog
folder or file refused without hanging or writing through it."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lossreport.catalog import SORT_FIELDS, Catalog, RunQuery
from lossreport.catalog.query import MAX_OPTIONS, options, search
from lossreport.catalog.store import QUERY_INDEXES, SCHEMA_VERSION
from lossreport.catalog.sweeps import MAX_VARYING, in_sweeps, sweep_of, sweeps
from lossreport.errors import UnsafePathError
from lossreport.report import pages
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE
from tests.support.catalog import fill, fill_catalog, synthetic_entries, truth
from tests.support.postgres import PostgresServer

RUNS = 3000
Filled = tuple[Catalog, list[dict[str, Any]]]
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Filled]:
    """A catalog of RUNS synthetic runs, as `serve` reads it: SQLite's file, or a database."""
    if request.param == "sqlite":
        state = tmp_path_factory.mktemp("state")
        fill_catalog(state, RUNS)
        catalog = Catalog.open_readonly(state)
        assert catalog is not None
    else:
        from lossreport.catalog.postgres import PostgresCatalog

        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.url(server.new_database())
        writer = PostgresCatalog.connect(url, writable=True)
        fill(writer, RUNS)
        writer.optimize()
        writer.close()
        catalog = PostgresCatalog.connect(url, writable=False)
    yield catalog, truth(RUNS)
    catalog.close()


@pytest.fixture(params=BACKENDS)
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """An empty catalog a daemon writes: SQLite's file, or a fresh database."""
    if request.param == "sqlite":
        catalog: Catalog = Catalog.open(tmp_path)
    else:
        from lossreport.catalog.postgres import PostgresCatalog

        catalog = PostgresCatalog.connect(request.getfixturevalue("postgres_url"), writable=True)
    yield catalog
    catalog.close()


# -- the same questions, answered in Python ----------------------------------------------------
COLUMNS = {
    "rendered": "rendered_at",
    "started": "started_at",
    "duration": "duration",
    "steps": "steps",
    "run": "run_id",
}


def _value(row: dict[str, Any], sort: str) -> Any:
    kind, _, loss = sort.partition(":")
    return row[kind].get(loss) if loss else row[COLUMNS[sort]]


def _matches(row: dict[str, Any], query: RunQuery) -> bool:
    for name in ("model", "hook", "architecture", "status", "source"):
        wanted = getattr(query, name)
        if wanted is not None and row[name] != wanted:
            return False
    if query.text:
        names = [row[name] for name in ("run_id", "model", "hook", "architecture", "source")]
        haystack = "\n".join(names + [f"{k}={v}" for k, v in row["config"].items()])
        if query.text.lower() not in haystack.lower():
            return False
    return all(row["config"].get(name) == value for name, value in query.config)


def _ordered(rows: list[dict[str, Any]], query: RunQuery) -> list[str]:
    """Every match in the query's order: by the value, runs without it last either way, ties
    (and the runs without it) by key."""
    kept = sorted((row for row in rows if _matches(row, query)), key=lambda row: row["run_id"])
    present = [row for row in kept if _value(row, query.sort) is not None]
    missing = [row for row in kept if _value(row, query.sort) is None]
    present.sort(key=lambda row: _value(row, query.sort), reverse=query.descending)  # stable
    return [row["run_id"] for row in present + missing]


def _page(rows: list[dict[str, Any]], query: RunQuery) -> list[str]:
    first = (query.page - 1) * query.per_page
    return _ordered(rows, query)[first : first + query.per_page]


def _check(catalog: Catalog, rows: list[dict[str, Any]], query: RunQuery) -> list[str]:
    page = search(catalog, query)
    expected = _page(rows, query)
    assert [row["run_id"] for row in page.rows] == expected, query
    assert page.total == len(_ordered(rows, query)), query
    return expected


# -- filters and text ------------------------------------------------------------------------
FILTERS = [
    RunQuery(model="gpt2-small"),
    RunQuery(model="<b>m&m</b>"),
    RunQuery(hook="blocks.3.hook_mlp_out"),
    RunQuery(architecture="topk"),
    RunQuery(architecture=""),  # runs whose marker names none
    RunQuery(status="failed"),
    RunQuery(status="stalled"),
    RunQuery(source="tensorboard"),
    RunQuery(model="<b>m&m</b>", architecture="standard", status="completed"),
    RunQuery(model="pythia-70m", source="lossreport", status="unknown"),
    RunQuery(text="\\data\\50%_"),
    RunQuery(model="gpt2-small", hook="blocks.0.hook_resid_pre", architecture="standard"),
    RunQuery(model="no such model"),
    RunQuery(text="RUN_01"),  # the _ is a character, not LIKE's any one
    RunQuery(text="1%"),  # and % too
    RunQuery(text="_0"),
    RunQuery(text="%"),
    RunQuery(text="\\"),
    RunQuery(text="<SCRIPT>"),  # in a config value, any case
    RunQuery(text="M&M"),  # in a model
    RunQuery(text="ΩMEGA"),  # not ASCII: SQLite's LIKE folds only ASCII
    RunQuery(text="HF-TRAINER"),  # in a source
    RunQuery(text="hook_mlp"),  # in a hook
    RunQuery(text="lr=0.001"),  # a config pair
    RunQuery(text="sweep00003/"),
    RunQuery(text="warmup", status="completed"),
    RunQuery(config=(("lr", "0.001"),)),
    RunQuery(config=(("optimizer.beta1", "0.0"),)),  # a nested key, as flat_config joins it
    RunQuery(config=(("d_sae", "4096"), ("optimizer.beta1", "0.9"))),
    RunQuery(config=(("warmup", "100"),), model="gemma-2b"),
    RunQuery(config=(("lr", "0.001"),), hook="blocks.0.hook_mlp_out", architecture="gated"),
    RunQuery(config=(("note", '"><script>alert(1)</script>'),)),
    RunQuery(config=(("lr", "1e-3"),)),  # not as the catalog shows it: no match
    RunQuery(config=(("lr", "0.001"),), text="run_", status="completed", source="lossreport"),
]


@pytest.mark.parametrize("query", FILTERS, ids=range(len(FILTERS)))
def test_filters_agree_with_python(filled: Filled, query: RunQuery) -> None:
    catalog, rows = filled
    matched = _check(catalog, rows, replace(query, per_page=RUNS))
    if query.model != "no such model" and query.config != (("lr", "1e-3"),):
        assert matched, "a filter that matches nothing checks little"
    assert len(matched) < RUNS or query.text == "_0"
    _check(catalog, rows, replace(query, per_page=7, page=2))


def test_text_wildcards_are_plain_characters(filled: Filled) -> None:
    """Were `_` and `%` LIKE's wildcards these would match many more runs (run-01x)."""
    catalog, rows = filled
    literal = search(catalog, RunQuery(text="run_01")).total
    assert literal == sum(1 for row in rows if "run_01" in row["run_id"]) > 0
    assert literal < sum(1 for row in rows if "run-01" in row["run_id"])
    assert search(catalog, RunQuery(text="5%")).total == sum(
        1 for row in rows if "5%" in row["run_id"]
    )


# -- sorting and paging ------------------------------------------------------------------------
SORTS = [*SORT_FIELDS, "final:mse_loss", "minimum:mse_loss", "final:l1_loss"]
SORTS += ["final:overall_loss", "minimum:overall_loss", "final:no_such_loss"]


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
@pytest.mark.parametrize("sort", SORTS)
def test_every_sort_agrees_with_python(filled: Filled, sort: str, descending: bool) -> None:
    catalog, rows = filled
    query = RunQuery(sort=sort, descending=descending, per_page=400)
    for page in (1, 4, 8):  # the last one: the runs without the value
        _check(catalog, rows, replace(query, page=page))
    last = (RUNS - 1) // 400 + 1
    tail = search(catalog, replace(query, page=last)).rows
    head = search(catalog, replace(query, page=1)).rows
    if any(_value(row, sort) is None for row in rows):
        assert _value(tail[-1], sort) is None, "runs without the value come last"
        if sort != "final:no_such_loss":
            assert _value(head[0], sort) is not None, "and not first"
    missing = {"duration", "steps", "final:mse_loss", "final:overall_loss", "minimum:overall_loss"}
    assert (sort in missing) <= any(_value(row, sort) is None for row in rows)


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
def test_loss_sort_pages_that_start_and_end_among_equal_values(
    filled: Filled, descending: bool
) -> None:
    """Runs share curves, so many share a final value: a page read from the loss's index
    alone and joined after must cut such a run of ties by key where the full sort would."""
    catalog, rows = filled
    query = RunQuery(sort="final:mse_loss", descending=descending, per_page=7)
    ordered = _ordered(rows, query)
    values = [_value(row, query.sort) for row in sorted(rows, key=lambda row: row["run_id"])]
    assert len(set(values)) * 10 < len(values)  # ties everywhere
    for page in (1, 2, 50, 133, 300, len(ordered) // 7 + 1):
        assert (
            _check(catalog, rows, replace(query, page=page)) == ordered[(page - 1) * 7 : page * 7]
        )


def test_sorts_combine_with_filters_and_page_past_the_end(filled: Filled) -> None:
    catalog, rows = filled
    for query in (
        RunQuery(status="failed", sort="final:mse_loss", descending=False, per_page=9, page=3),
        RunQuery(text="run_", sort="minimum:overall_loss", per_page=5, page=2),
        RunQuery(config=(("lr", "0.001"),), sort="duration", descending=False, per_page=11),
        RunQuery(model="gemma-2b", sort="started", descending=True, per_page=13, page=4),
        RunQuery(source="mlflow", sort="steps", descending=False, per_page=50, page=2),
    ):
        assert _check(catalog, rows, query)
    beyond = search(catalog, RunQuery(per_page=50, page=RUNS))
    assert beyond.rows == [] and beyond.total == RUNS


def test_rows_come_back_whole(filled: Filled) -> None:
    catalog, rows = filled
    by_key = {row["run_id"]: row for row in rows}
    for row in search(catalog, RunQuery(text="<script>", per_page=5)).rows:
        known = by_key[row["run_id"]]
        for name in ("status", "model", "hook", "architecture", "source", "steps"):
            assert row[name] == known[name], name
        assert (row["final"], row["minimum"], row["config"]) == (
            known["final"],
            known["minimum"],
            known["config"],
        )
        assert row["duration"] == known["duration"]
        assert row["losses"] == list(known["final"])
        assert "<" not in row["curves_json"] and '"mse_loss":[[0,' in row["curves_json"]


# -- what the filters offer, and sweeps ----------------------------------------------------------
def test_options_agree_with_python(filled: Filled) -> None:
    catalog, rows = filled
    found = options(catalog)
    for name in ("model", "hook", "architecture", "status", "source"):
        counts = Counter(row[name] for row in rows if row[name] != "")
        expected = sorted(counts, key=lambda value: (-counts[value], value))[:MAX_OPTIONS]
        assert found[name] == expected, name
    assert "" not in found["architecture"]
    assert found["config"] == sorted({name for row in rows for name in row["config"]})
    assert "optimizer.beta1" in found["config"] and "warmup" in found["config"]
    assert found["losses"] == ["l1_loss", "mse_loss", "overall_loss"]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["hook"], row["architecture"]), []).append(row)
    return groups


def _varying(members: list[dict[str, Any]]) -> list[str]:
    names = {name for row in members for name in row["config"]}
    return sorted(
        name
        for name in names
        if len({row["config"].get(name) for row in members}) > 1  # None: some runs lack it
    )


def test_sweeps_agree_with_python(filled: Filled) -> None:
    catalog, rows = filled
    groups = {name: members for name, members in _groups(rows).items() if len(members) > 1}
    ordered = sorted(groups, key=lambda name: (-len(groups[name]), *name))
    total, page = sweeps(catalog, RunQuery(per_page=len(groups) + 10))
    assert total == len(groups)
    assert [(g.model, g.hook, g.architecture) for g in page] == ordered
    for group in page:
        members = groups[(group.model, group.hook, group.architecture)]
        assert group.runs == len(members)
        varying = _varying(members)
        assert group.varying == varying[:MAX_VARYING]
        assert group.more_varying == max(0, len(varying) - MAX_VARYING)
        again = sweep_of(catalog, group.model, group.hook, group.architecture)
        assert again is not None and again.as_json() == group.as_json()
        assert json.loads(json.dumps(group.as_json())) == group.as_json()  # as the API sends
    # what the generator promises, so the checks above saw each case
    assert any(group.varying == [] for group in page), "a sweep of repeats"
    assert any("warmup" in group.varying for group in page), "a key only some runs have"
    assert any(len(group.varying) >= 3 for group in page)
    _, second = sweeps(catalog, RunQuery(per_page=3, page=2))
    assert [(g.model, g.hook, g.architecture) for g in second] == ordered[3:6]
    filtered_total, filtered = sweeps(catalog, RunQuery(model="gemma-2b", per_page=500))
    gemma = {name: m for name, m in _groups(rows).items() if name[0] == "gemma-2b"}
    assert filtered_total == sum(1 for m in gemma.values() if len(m) > 1)
    assert sorted(g.runs for g in filtered) == sorted(len(m) for m in gemma.values() if len(m) > 1)
    alone = next(name for name, members in _groups(rows).items() if len(members) == 1)
    assert sweep_of(catalog, *alone) is None
    assert sweep_of(catalog, "no such model", "h", "a") is None
    # What the index links a run to: its sweep, where it has one
    asked = [*_groups(rows), ("no such model", "h", "a")]
    assert in_sweeps(catalog, asked * 2) == set(groups)


def test_a_small_sweep_by_hand(blank: Catalog) -> None:
    catalog = blank

    def put(key: str, model: str, config: dict[str, Any]) -> None:
        entry = {"status": "completed", "model": model, "hook": "h", "architecture": "a"}
        catalog.put(pages.index_row({**entry, "config": config}, key))

    put("a/1", "m", {"lr": 1, "seed": 0})
    put("a/2", "m", {"lr": 2, "seed": 0})
    put("a/3", "m", {"lr": 2, "seed": 0, "extra": "x"})  # only this one has `extra`
    put("b/1", "r", {"lr": 1})
    put("b/2", "r", {"lr": 1})  # repeats: nothing varies
    put("c/1", "alone", {"lr": 1})
    total, found = sweeps(catalog, RunQuery())
    assert total == 2
    assert [(g.model, g.runs, g.varying) for g in found] == [
        ("m", 3, ["extra", "lr"]),
        ("r", 2, []),
    ]
    assert sweep_of(catalog, "alone", "h", "a") is None


# -- writing ----------------------------------------------------------------------------------
def test_rows_are_replaced_failed_forgotten_and_pruned(blank: Catalog) -> None:
    catalog = blank
    entries = list(synthetic_entries(10))
    catalog.put_many(pages.index_row(entry, key) for key, entry in entries)
    key, entry = entries[0]
    assert catalog.rendered_at(key) == entry["rendered_at"]
    assert catalog.rendered_at("not/there") is None
    renewed = {**entry, "status": "failed", "rendered_at": "2030-01-01T00:00:00+00:00"}
    renewed["config"] = {"lr": 7}
    catalog.put(pages.index_row(renewed, key))
    assert catalog.count() == 10
    assert catalog.rendered_at(key) == "2030-01-01T00:00:00+00:00"
    (row,) = catalog.rows([key])
    assert row["status"] == "failed" and row["config"] == {"lr": "7"}
    assert search(catalog, RunQuery(config=(("d_in", "768"),))).total == 9  # old config gone
    assert search(catalog, RunQuery(text=key, per_page=50)).total == 1

    catalog.mark_failed(key, "boom", pages.index_row({"status": "not rendered"}, key))
    (row,) = catalog.rows([key])
    assert row["error"] == "boom" and row["status"] == "failed"  # the row kept, error added
    fallback = pages.index_row({"status": "not rendered", "error": "bad"}, "new/run")
    catalog.mark_failed("new/run", "bad", fallback)
    (row,) = catalog.rows(["new/run"])
    assert row["error"] == "bad" and row["status"] == "not rendered"
    assert catalog.count() == 11

    catalog.forget(key)
    assert catalog.rendered_at(key) is None and catalog.rows([key]) == []
    assert search(catalog, RunQuery(config=(("lr", "7"),))).total == 0  # its config went too
    assert search(catalog, RunQuery(sort=f"final:{next(iter(entry['final']))}")).total == 10
    catalog.forget("never/there")
    assert catalog.count() == 10

    kept = [entries[1][0], entries[2][0]]
    assert catalog.keep_only([*kept, "not/there", kept[0]]) == 8
    assert sorted(row["run_id"] for row in catalog.recent(100)) == sorted(kept)
    assert search(catalog, RunQuery(config=(("d_in", "768"),))).total == 2
    with catalog.reading() as connection:
        for table in ("details", "loss_values", "config"):
            found = connection.execute(f"SELECT key FROM {table} JOIN runs ON id = run")
            keys = {key for (key,) in found}
            assert keys == set(kept), table
    assert catalog.keep_only(kept) == 0


def test_ties_are_in_key_order_either_way(blank: Catalog) -> None:
    catalog = blank
    same = {"status": "completed", "rendered_at": "2026-01-01T00:00:00+00:00", "steps": 5}
    catalog.put_many(pages.index_row(same, key) for key in ("b", "c", "a"))
    for sort in ("rendered", "steps"):
        for descending in (True, False):
            rows = search(catalog, RunQuery(sort=sort, descending=descending)).rows
            assert [row["run_id"] for row in rows] == ["a", "b", "c"], (sort, descending)


def test_recent_is_newest_first_and_bounded(blank: Catalog) -> None:
    catalog = blank
    fill(catalog, 700)
    rows = truth(700)
    newest = sorted(rows, key=lambda row: (row["rendered_at"], row["run_id"]), reverse=True)
    assert [row["run_id"] for row in catalog.recent(600)] == [r["run_id"] for r in newest[:600]]
    assert [row["run_id"] for row in catalog.recent(3)] == [r["run_id"] for r in newest[:3]]
    assert len(catalog.recent(10_000)) == catalog.count() == 700


def test_many_rows_by_key_keep_their_order(blank: Catalog) -> None:
    fill(blank, 1200)
    keys = [row["run_id"] for row in truth(1200)][::-1]  # over MAX_BOUND: several IN (...)
    assert [row["run_id"] for row in blank.rows([*keys, "not/there"])] == keys


# -- opening ------------------------------------------------------------------------------------
def test_an_older_schema_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / CATALOG_DIR
    folder.mkdir(mode=0o755)
    connection = sqlite3.connect(folder / CATALOG_FILE)
    connection.executescript(
        f"CREATE TABLE runs (x); INSERT INTO runs VALUES (1);"
        f" CREATE TABLE config (y); PRAGMA user_version = {SCHEMA_VERSION + 1};"
    )
    connection.close()
    assert Catalog.open_readonly(tmp_path) is None  # a reader does not guess
    catalog = Catalog.open(tmp_path)
    assert catalog.count() == 0
    assert [path.name for path in folder.iterdir()] == [CATALOG_FILE]  # replaced, not set aside
    catalog.put(pages.index_row({"status": "completed", "config": {"a": 1}}, "r"))
    catalog.close()
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    assert search(reader, RunQuery(config=(("a", "1"),))).total == 1
    with reader.reading() as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reader.close()


def _indexes(state: Path) -> set[str]:
    connection = sqlite3.connect(state / CATALOG_DIR / CATALOG_FILE)
    try:
        found = connection.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")
        return {name for (name,) in found}
    finally:
        connection.close()


def test_a_catalog_left_in_its_first_fill_gets_its_query_indexes_back(tmp_path: Path) -> None:
    """A daemon's first start fills an empty catalog without the indexes only queries use
    (QUERY_INDEXES) and makes them at its scan's end; one killed in between leaves a catalog
    without them, which gets them back when it is next opened. A catalog with rows keeps
    them."""
    catalog = Catalog.open(tmp_path)
    assert catalog.begin_fill()
    fill(catalog, 50)
    catalog.close()  # killed before end_fill
    assert not _indexes(tmp_path) & QUERY_INDEXES.keys()
    catalog = Catalog.open(tmp_path)
    assert _indexes(tmp_path) >= QUERY_INDEXES.keys()
    assert not catalog.begin_fill()  # rows there: a rescan keeps every index
    catalog.close()
    assert _indexes(tmp_path) >= QUERY_INDEXES.keys()
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    assert search(reader, RunQuery()).total == 50
    reader.close()


def test_a_damaged_catalog_is_set_aside_not_deleted(tmp_path: Path) -> None:
    folder = tmp_path / CATALOG_DIR
    folder.mkdir(mode=0o755)
    (folder / CATALOG_FILE).write_bytes(b"not a database at all, just bytes " * 100)
    catalog = Catalog.open(tmp_path)
    assert catalog.count() == 0
    catalog.close()
    aside = [p for p in folder.iterdir() if p.name.startswith(f"{CATALOG_FILE}.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")


def _tree(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `folder`, with its mode, size and modification time."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def test_reading_creates_nothing(tmp_path: Path) -> None:
    assert Catalog.open_readonly(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / CATALOG_DIR).mkdir(mode=0o755)
    assert Catalog.open_readonly(tmp_path) is None
    assert list((tmp_path / CATALOG_DIR).iterdir()) == []

    fill_catalog(tmp_path, 60)
    before = _tree(tmp_path)
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None
    assert search(reader, RunQuery(text="run", sort="final:mse_loss")).total == 60
    assert sweeps(reader, RunQuery())[0] >= 1 and options(reader)["model"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"), reader.reading() as connection:
        connection.execute("DELETE FROM runs")
    reader.close()
    assert _tree(tmp_path) == before  # no journal, no statistics written, nothing touched


def _returns_within(call: Callable[[], object], seconds: float) -> BaseException | None:
    """What `call` raised, failing the test if it has not returned after `seconds` (a FIFO
    opened for reading would block until a writer came)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} still blocked after {seconds}s"
    return outcome[0]


def test_a_catalog_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / CATALOG_DIR).symlink_to(dummy, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        Catalog.open(state)
    with pytest.raises(UnsafePathError):
        Catalog.open_readonly(state)
    assert list(dummy.iterdir()) == []
    assert (state / CATALOG_DIR).is_symlink()


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777, 0o1777])
def test_a_catalog_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    fill_catalog(tmp_path, 5)
    os.chmod(tmp_path / CATALOG_DIR, mode)
    before = _tree(tmp_path)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        Catalog.open(tmp_path)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        Catalog.open_readonly(tmp_path)
    assert _tree(tmp_path) == before
    os.chmod(tmp_path / CATALOG_DIR, 0o755)  # the same folder, the daemon's own: used
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None and reader.count() == 5
    reader.close()


@pytest.mark.parametrize("kind", ["fifo", "folder", "link"])
def test_a_catalog_file_that_is_not_a_file_is_refused(tmp_path: Path, kind: str) -> None:
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    state = tmp_path / "state"
    (state / CATALOG_DIR).mkdir(parents=True, mode=0o755)
    target = state / CATALOG_DIR / CATALOG_FILE
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(dummy / "x.sqlite")
    for opening in (Catalog.open, Catalog.open_readonly):
        raised = _returns_within(partial(opening, state), 10)
        assert isinstance(raised, UnsafePathError), raised
    assert list(dummy.iterdir()) == []
    assert sorted(p.name for p in (state / CATALOG_DIR).iterdir()) == [CATALOG_FILE]
    mode = os.lstat(target).st_mode
    assert {"fifo": stat.S_ISFIFO, "folder": stat.S_ISDIR, "link": stat.S_ISLNK}[kind](mode)


# -- bugs found while writing these (issue 16), kept from coming back
def _by_hand(catalog: Catalog, runs: list[tuple[str, str, dict[str, Any], str | None]]) -> Catalog:
    for key, status, config, started in runs:
        entry: dict[str, Any] = {"status": status, "model": "m", "hook": "h", "architecture": "a"}
        entry |= {"config": config, "started_at": started, "rendered_at": key}
        catalog.put(pages.index_row(entry, key))
    return catalog


def test_a_run_without_a_start_time_sorts_last(blank: Catalog) -> None:
    catalog = _by_hand(
        blank,
        [
            ("r1", "completed", {}, "2026-01-01"),
            ("r2", "completed", {}, None),
            ("r3", "completed", {}, "2026-01-03"),
        ],
    )
    for descending in (True, False):
        rows = search(catalog, RunQuery(sort="started", descending=descending)).rows
        assert rows[-1]["run_id"] == "r2", descending


def test_a_filtered_sweep_still_sees_a_key_some_runs_lack(blank: Catalog) -> None:
    catalog = _by_hand(
        blank,
        [
            ("r1", "completed", {"w": 1}, None),
            ("r2", "completed", {}, None),  # lacks w: w varies, however one looks
            ("r3", "failed", {"w": 1}, None),
            ("r4", "failed", {"w": 1}, None),
        ],
    )
    assert sweeps(catalog, RunQuery())[1][0].varying == ["w"]
    (group,) = sweeps(catalog, RunQuery(status="completed"))[1]
    assert group.runs == 2 and group.varying == ["w"]


def test_a_locked_catalog_is_an_error_not_damage(tmp_path: Path) -> None:
    """Only a file that is no database is set aside: a lock held too long (or a full disk)
    is an error, and the catalog stays as it is."""
    Catalog.open(tmp_path).close()
    path = tmp_path / CATALOG_DIR / CATALOG_FILE
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Catalog.open(tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [p.name for p in path.parent.iterdir()] == [CATALOG_FILE]


def test_the_filters_offer_only_names_some_run_still_has(blank: Catalog) -> None:
    """Config pairs and loss names are kept once, numbered: the last run to drop one (renamed
    in a new render, or gone) takes it out of the filters' options."""
    entries = list(synthetic_entries(3))
    rows = [pages.index_row(entry, key) for key, entry in entries]
    odd = {**rows[0], "config": {**rows[0]["config"], "only_here": "1"}}
    odd |= {"final": {**odd["final"], "odd_loss": 0.5}, "minimum": {"odd_loss": 0.4}}
    catalog = blank
    catalog.put_many([odd, *rows[1:]])
    found = options(catalog)
    assert "only_here" in found["config"] and "odd_loss" in found["losses"]
    assert search(catalog, RunQuery(config=(("only_here", "1"),))).total == 1
    catalog.put(rows[0])  # rendered again without them
    found = options(catalog)
    assert "only_here" not in found["config"] and "odd_loss" not in found["losses"]
    assert found["config"] == sorted({name for row in rows for name in row["config"]})
    catalog.put(odd)
    catalog.forget(odd["run_id"])  # gone
    assert options(catalog) == found
    assert search(catalog, RunQuery(sort="final:mse_loss")).total == 2


def _counts_agree(catalog: Catalog) -> None:
    """`run_counts` is what counting the runs says, and so are the answers read from it."""
    with catalog.reading() as connection:
        kept = connection.execute(
            "SELECT sweep, status, source, counted FROM run_counts ORDER BY sweep, status, source"
        ).fetchall()
        counted = connection.execute(
            "SELECT sweep, status, source, COUNT(*) FROM runs GROUP BY sweep, status, source"
            " ORDER BY sweep, status, source"
        ).fetchall()
        kept_settings = connection.execute(
            "SELECT sweep, setting, counted FROM setting_counts ORDER BY sweep, setting"
        ).fetchall()
        settings = connection.execute(
            "SELECT sweep, setting, COUNT(*) FROM config GROUP BY sweep, setting"
            " ORDER BY sweep, setting"
        ).fetchall()
        dangling = connection.execute(
            "SELECT (SELECT COUNT(*) FROM config WHERE setting NOT IN (SELECT id FROM settings))"
            " + (SELECT COUNT(*) FROM loss_values WHERE loss NOT IN (SELECT id FROM loss_names))"
        ).fetchone()[0]
    assert [tuple(row) for row in kept] == [tuple(row) for row in counted]
    assert [tuple(row) for row in kept_settings] == [tuple(row) for row in settings]
    assert dangling == 0  # no run's config or loss names one that was dropped
    rows = catalog.recent(1000)
    assert catalog.count() == len(rows)
    statuses = Counter(row["status"] for row in rows)
    for status, runs in statuses.items():
        assert search(catalog, RunQuery(status=status)).total == runs
    models = Counter(row["model"] for row in rows if row["model"])  # none: not offered
    for name, counter in (("status", statuses), ("model", models)):
        offered = sorted(counter, key=lambda value: (-counter[value], value))
        assert options(catalog)[name] == offered


def test_counts_follow_every_write(blank: Catalog) -> None:
    """Totals, the filters' options and sweeps' sizes are read from counts kept up by each
    write: a run that changes sweep, status and source, fails, goes or is pruned leaves
    them what counting the runs says."""
    catalog = blank
    rows = [pages.index_row(entry, key) for key, entry in synthetic_entries(60)]
    catalog.put_many(rows)
    _counts_agree(catalog)
    moved = {**rows[0], "status": "running", "model": "moved-model", "source": "mlflow"}
    catalog.put(moved)
    catalog.put(moved)  # rendered again, unchanged
    _counts_agree(catalog)
    assert sweep_of(catalog, "moved-model", moved["hook"], moved["architecture"]) is None
    catalog.put({**rows[1], **{name: moved[name] for name in ("model", "status", "source")}})
    assert sweep_of(catalog, "moved-model", moved["hook"], moved["architecture"]) is not None
    catalog.mark_failed("new/run", "bad", pages.index_row({"status": "not rendered"}, "new/run"))
    catalog.forget(rows[2]["run_id"])
    _counts_agree(catalog)
    # One batch: a new run takes a setting only a run later in the batch had, which that run
    # (replaced) drops; a run twice; each gathered before the replaced run is cleared.
    only_here = {**rows[3], "config": {**rows[3]["config"], "only_here": "1"}}
    catalog.put(only_here)
    taker = {**rows[4], "run_id": "new/taker", "config": {"only_here": "1"}}
    twice = {**rows[5], "run_id": "new/twice"}
    catalog.put_many([taker, twice, rows[3], {**twice, "status": "failed"}, rows[6]])
    _counts_agree(catalog)
    assert search(catalog, RunQuery(config=(("only_here", "1"),))).total == 1
    catalog.forget("new/taker")
    catalog.forget("new/twice")
    assert catalog.keep_only([row["run_id"] for row in rows[:30]]) == 31  # and new/run
    _counts_agree(catalog)
    assert catalog.keep_only([]) == 29
    _counts_agree(catalog)
    with catalog.reading() as connection:
        for table in ("run_counts", "setting_counts"):
            assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
