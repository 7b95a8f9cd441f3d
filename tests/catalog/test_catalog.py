"""The runs catalog on real SQLite files: every query checked against the same question asked
of the rows in plain Python, and a hostile catalog folder refused."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lossreport.catalog import Catalog, RunQuery
from lossreport.catalog.query import options, search
from lossreport.catalog.store import SCHEMA_VERSION
from lossreport.catalog.sweeps import sweep_of, sweeps
from lossreport.errors import UnsafePathError
from lossreport.report import pages
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE
from tests.support.catalog import fill_catalog, synthetic_entries, truth

RUNS = 3000


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Catalog, list[dict[str, Any]]]]:
    state = tmp_path_factory.mktemp("state")
    fill_catalog(state, RUNS)
    catalog = Catalog.open_readonly(state)
    assert catalog is not None
    yield catalog, truth(RUNS)
    catalog.close()


def _value(row: dict[str, Any], sort: str) -> Any:
    kind, _, loss = sort.partition(":")
    if loss:
        return row[kind].get(loss)
    return {"rendered": row["rendered_at"], "run": row["run_id"]}[sort]


def _expected(rows: list[dict[str, Any]], query: RunQuery) -> list[str]:
    def keep(row: dict[str, Any]) -> bool:
        for name in ("model", "hook", "architecture", "status"):
            wanted = getattr(query, name)
            if wanted is not None and row[name] != wanted:
                return False
        if query.text:
            haystack = "\n".join(
                [row["run_id"], row["model"], row["hook"], row["architecture"]]
                + [f"{k}={v}" for k, v in row["config"].items()]
            ).lower()
            if query.text.lower() not in haystack:
                return False
        return all(row["config"].get(name) == value for name, value in query.config)

    kept = [row for row in rows if keep(row)]
    present = [row for row in kept if _value(row, query.sort) is not None]
    missing = [row for row in kept if _value(row, query.sort) is None]
    present.sort(key=lambda row: row["run_id"])
    present.sort(key=lambda row: _value(row, query.sort), reverse=query.descending)
    ordered = present + sorted(missing, key=lambda row: row["run_id"])
    first = (query.page - 1) * query.per_page
    return [row["run_id"] for row in ordered[first : first + query.per_page]]


QUERIES = [
    RunQuery(),
    RunQuery(model="gpt2-small"),
    RunQuery(model="<b>m&m</b>", architecture="topk", per_page=7, page=2),
    RunQuery(status="failed", sort="final:mse_loss", descending=False),
    RunQuery(sort="final:mse_loss", descending=True, page=3),
    RunQuery(sort="minimum:overall_loss", descending=False),  # only some runs have it
    RunQuery(sort="minimum:l1_loss", descending=True, per_page=200),
    RunQuery(sort="run", descending=False, per_page=13, page=5),
    RunQuery(text="RUN_01"),  # the _ is a character, not LIKE's any-one
    RunQuery(text="1%"),  # and % too
    RunQuery(text="0_%"),
    RunQuery(config=(("lr", "0.001"),), sort="final:l1_loss", descending=False),
    RunQuery(config=(("d_sae", "4096"), ("optimizer.beta1", "0.9"))),
    RunQuery(text="<script>"),
    RunQuery(model="no such model"),
]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
def test_search_agrees_with_python(
    filled: tuple[Catalog, list[dict[str, Any]]], query: RunQuery
) -> None:
    catalog, rows = filled
    page = search(catalog, query)
    expected = _expected(rows, query)
    assert [row["run_id"] for row in page.rows] == expected
    assert page.total == len(
        _expected(rows, RunQuery(**{**query.__dict__, "page": 1, "per_page": 10**9}))
    )


def test_other_sorts_put_missing_values_last(filled: tuple[Catalog, list[dict[str, Any]]]) -> None:
    catalog, _ = filled
    for sort in ("duration", "steps", "started"):
        for descending in (True, False):
            rows = search(catalog, RunQuery(sort=sort, descending=descending, per_page=200)).rows
            key = {"duration": "duration", "steps": "steps", "started": "started_at"}[sort]
            values = [row[key] for row in rows if row[key] is not None]
            assert values == sorted(values, reverse=descending)
    rows = search(catalog, RunQuery(sort="duration", descending=False, per_page=200, page=15)).rows
    assert rows and rows[-1]["duration"] is None  # the runs without one, at the end


def test_options_and_sweeps(filled: tuple[Catalog, list[dict[str, Any]]]) -> None:
    catalog, rows = filled
    found = options(catalog)
    assert set(found["model"]) == {row["model"] for row in rows}
    assert found["losses"] == ["l1_loss", "mse_loss", "overall_loss"]
    assert "optimizer.beta1" in found["config"]
    groups = Counter((row["model"], row["hook"], row["architecture"]) for row in rows)
    total, page = sweeps(catalog, RunQuery(per_page=500))
    assert total == sum(1 for size in groups.values() if size > 1)
    assert [group.runs for group in page] == sorted(
        (s for s in groups.values() if s > 1), reverse=True
    )
    for group in page[:5]:
        members = [
            r
            for r in rows
            if (r["model"], r["hook"], r["architecture"])
            == (group.model, group.hook, group.architecture)
        ]
        names = {name for r in members for name in r["config"]}
        varying = sorted(
            name for name in names
            if len({r["config"].get(name) for r in members}) > 1
        )  # fmt: skip
        assert group.varying == varying[:12]
        again = sweep_of(catalog, group.model, group.hook, group.architecture)
        assert again is not None and again.varying == group.varying
    alone = next(key for key, size in groups.items() if size == 1)
    assert sweep_of(catalog, *alone) is None


def test_rows_are_replaced_failed_forgotten_and_pruned(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path)
    entries = list(synthetic_entries(10))
    catalog.put_many(pages.index_row(entry, key) for key, entry in entries)
    key, entry = entries[0]
    catalog.put(
        pages.index_row(
            {**entry, "status": "failed", "rendered_at": "2030-01-01T00:00:00+00:00"}, key
        )
    )
    assert catalog.count() == 10
    assert catalog.rendered_at(key) == "2030-01-01T00:00:00+00:00"
    assert catalog.recent(1)[0]["status"] == "failed"
    catalog.mark_failed(key, "boom", pages.index_row({"status": "not rendered"}, key))
    assert catalog.rows([key])[0]["error"] == "boom"
    catalog.mark_failed(
        "new/run", "bad", pages.index_row({"status": "not rendered", "error": "bad"}, "new/run")
    )
    assert catalog.rows(["new/run"])[0]["error"] == "bad"
    catalog.forget(key)
    assert catalog.rendered_at(key) is None and catalog.rows([key]) == []
    assert search(catalog, RunQuery(config=(("d_in", "768"),))).total == 9  # its config went too
    assert catalog.keep_only([entries[1][0], entries[2][0], "not/there"]) == 8
    assert sorted(row["run_id"] for row in catalog.recent(100)) == sorted(
        [entries[1][0], entries[2][0]]
    )
    catalog.close()


def test_an_older_schema_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / CATALOG_DIR
    folder.mkdir()
    connection = sqlite3.connect(folder / CATALOG_FILE)
    connection.executescript(
        f"CREATE TABLE runs (x); PRAGMA user_version = {SCHEMA_VERSION - 1 or 99};"
    )
    connection.close()
    assert Catalog.open_readonly(tmp_path) is None  # a reader does not guess
    catalog = Catalog.open(tmp_path)
    assert catalog.count() == 0
    catalog.close()
    reader = Catalog.open_readonly(tmp_path)
    assert reader is not None and reader.count() == 0
    reader.close()


def test_a_damaged_catalog_is_set_aside_not_deleted(tmp_path: Path) -> None:
    folder = tmp_path / CATALOG_DIR
    folder.mkdir()
    (folder / CATALOG_FILE).write_bytes(b"not a database at all, just bytes " * 100)
    catalog = Catalog.open(tmp_path)
    assert catalog.count() == 0
    catalog.close()
    aside = [p for p in folder.iterdir() if p.name.startswith(f"{CATALOG_FILE}.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")


def test_reading_a_missing_catalog_creates_nothing(tmp_path: Path) -> None:
    assert Catalog.open_readonly(tmp_path) is None
    (tmp_path / CATALOG_DIR).mkdir()
    assert Catalog.open_readonly(tmp_path) is None
    assert list((tmp_path / CATALOG_DIR).iterdir()) == []


def test_a_hostile_catalog_folder_is_refused(tmp_path: Path) -> None:
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    state = tmp_path / "linked"
    state.mkdir()
    (state / CATALOG_DIR).symlink_to(dummy, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        Catalog.open(state)
    with pytest.raises(UnsafePathError):
        Catalog.open_readonly(state)
    assert list(dummy.iterdir()) == []

    shared = tmp_path / "shared"
    (shared / CATALOG_DIR).mkdir(parents=True)
    os.chmod(shared / CATALOG_DIR, 0o777)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        Catalog.open(shared)
    with pytest.raises(UnsafePathError):
        Catalog.open_readonly(shared)

    for kind in ("fifo", "folder", "link"):
        state = tmp_path / kind
        (state / CATALOG_DIR).mkdir(parents=True)
        target = state / CATALOG_DIR / CATALOG_FILE
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "folder":
            target.mkdir()
        else:
            target.symlink_to(dummy / "x.sqlite")
        with pytest.raises(UnsafePathError):
            Catalog.open(state)  # a FIFO is never opened: this returns at once
        assert not (dummy / "x.sqlite").exists()
        if kind == "fifo":
            assert stat.S_ISFIFO(os.lstat(target).st_mode)
