"""The plans SQLite picks for every served question at 100,000 runs, read with EXPLAIN QUERY
PLAN from a reader as `serve` opens it: the statistics they are chosen by must count the rows
as they are, whatever the keys look like (long ones, as `start_run` makes them, fooled the
sampled statistics into walking an index and looking each row up)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lossreport.catalog import Catalog, RunQuery
from lossreport.catalog.query import options, search
from lossreport.catalog.sweeps import sweep_of, sweeps
from lossreport.trainer.tracker import _agreed_run_id
from tests.support.catalog import REAL_ARCHITECTURES, REAL_MODELS, REAL_STATUSES

RUNS = 100_000
LOSSES = ("mse_loss", "l1_loss", "overall_loss")


def _rows(count: int) -> Iterator[dict[str, Any]]:
    """Catalog rows shaped as a real cluster's, made directly (no curves: plans do not read
    them): default run ids, long non-ASCII models, six config keys, sweeps of about 40."""
    rng = random.Random(0)
    for made in range(count):
        sweep = made // 40
        model = REAL_MODELS[sweep % len(REAL_MODELS)]
        hook = f"blocks.{sweep % 32}.hook_resid_post"
        values = {loss: rng.random() for loss in LOSSES}
        yield {
            "run_id": _agreed_run_id(model, hook) + f"{made:05d}",
            "status": REAL_STATUSES[made % len(REAL_STATUSES)],
            "status_class": "ok",
            "model": model,
            "hook": hook,
            "architecture": REAL_ARCHITECTURES[sweep // 5 % len(REAL_ARCHITECTURES)],
            "source": "lossreport",
            "steps": rng.choice([30_000, 48_828]),
            "started_at": f"2026-01-01T00:00:{made % 60:02d}+00:00",
            "duration": rng.uniform(600, 86400),
            "rendered_at": f"2026-{1 + made // 9000:02d}-01T{made % 9000:06d}",
            "report": "",
            "error": "",
            "problems": 0,
            "anomalies": 0,
            "alerts": [],
            "final": values if made % 50 else {},
            "minimum": values,
            "config": {
                "lr": str(rng.choice([1e-5, 3e-5, 1e-4])),
                "l1_coefficient": str(rng.choice([1, 5, 20])),
                "d_sae": str(rng.choice([16384, 65536])),
                "context_size": "1024",
                "seed": str(made % 40),
                "train_batch_size_tokens": "4096",
            },
            "curves": {},
        }


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    catalog = Catalog.open(state)
    rows = list(_rows(RUNS))
    for start in range(0, RUNS, 20_000):
        catalog.put_many(rows[start : start + 20_000])
    catalog.close()  # as the daemon does, which refreshes the statistics
    return state


def _stats(state: Path) -> dict[str, list[int]]:
    reader = Catalog.open_readonly(state)
    assert reader is not None
    try:
        return _stats_of(reader)
    finally:
        reader.close()


def test_the_statistics_count_every_row(state: Path) -> None:
    """Each index's row count as it is: 100,000 runs, three losses and six config keys each
    (fewer final values); a sampled ANALYZE said 50,000 to 130,000."""
    stats = _stats(state)
    expected = {"runs": RUNS, "details": RUNS, "loss_values": 3 * RUNS, "config": 6 * RUNS}
    for idx, numbers in stats.items():
        table = next((name for name in expected if idx.startswith(name)), None)
        assert table is None or numbers[0] == expected[table], (idx, numbers)
    assert {"runs_key", "runs_status", "details", "loss_values_final", "config_setting"} <= set(
        stats
    )


QUESTIONS = [
    RunQuery(),
    RunQuery(model=REAL_MODELS[1]),
    RunQuery(status="completed"),
    RunQuery(status="failed", sort="final:mse_loss"),
    RunQuery(text="blocks.7.hook"),
    RunQuery(text="Ωmega"),
    RunQuery(config=(("lr", "0.0001"),)),
    RunQuery(sort="final:mse_loss", descending=False),
    RunQuery(sort="minimum:l1_loss"),
    RunQuery(sort="minimum:l1_loss", model=REAL_MODELS[2]),
    RunQuery(sort="duration"),
    RunQuery(sort="steps", descending=False),
    RunQuery(page=1000),
]


def _plans(state: Path, ask: Any) -> list[tuple[str, list[str]]]:
    """Each statement `ask(reader)` runs, with its plan as EXPLAIN QUERY PLAN gives it."""
    reader = Catalog.open_readonly(state)
    assert reader is not None
    statements: list[str] = []
    try:
        with reader.reading() as connection:
            connection.set_trace_callback(statements.append)
        ask(reader)
        with reader.reading() as connection:
            connection.set_trace_callback(None)
            return [
                (sql, [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")])
                for sql in statements
                if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            ]
    finally:
        reader.close()


def _walks_an_index_looking_up_rows(plan: list[str]) -> bool:
    """A whole index walked in order and each row looked up in its table: what wrong
    statistics chose. A covering index, a search, or a scan of the table itself is fine."""
    return any(
        step.startswith("SCAN ") and " USING INDEX " in step and "COVERING" not in step
        for step in plan
    )


@pytest.mark.parametrize("query", QUESTIONS, ids=range(len(QUESTIONS)))
def test_no_served_question_walks_an_index_row_by_row(state: Path, query: RunQuery) -> None:
    for sql, plan in _plans(state, lambda reader: search(reader, query)):
        if "LIMIT" in sql and "ORDER BY" in sql and not query.text:
            continue  # walking the sort's own index stops after a page: the point of it
        assert not _walks_an_index_looking_up_rows(plan), (sql, plan)


def test_text_search_reads_the_table_once(state: Path) -> None:
    """The question the sampled statistics slowed most (575 ms): counted over the table."""
    plans = _plans(state, lambda reader: search(reader, RunQuery(text="blocks.7.hook")))
    (read,) = [plan for sql, plan in plans if "search LIKE" in sql]  # count and page at once
    assert [step for step in read if "runs" in step] == ["SCAN runs"], plans


def test_sweeps_and_options_answer_from_indexes(state: Path) -> None:
    def ask(reader: Catalog) -> None:
        sweeps(reader, RunQuery())
        sweep_of(reader, REAL_MODELS[0], "blocks.0.hook_resid_post", REAL_ARCHITECTURES[0])
        options(reader)

    for sql, plan in _plans(state, ask):
        assert not _walks_an_index_looking_up_rows(plan), (sql, plan)


def test_statistics_are_renewed_when_the_runs_change(tmp_path: Path) -> None:
    """A full ANALYZE is renewed once the number of runs has moved by more than a tenth
    (its cost spread over the runs added); below that, the statistics stay."""
    rows = list(_rows(1300))
    catalog = Catalog.open(tmp_path)
    try:
        catalog.put_many(rows[:1000])
        catalog.optimize()
        assert _stats_of(catalog)["runs_key"][0] == 1000
        catalog.put_many(rows[1000:1050])
        catalog.optimize()
        assert _stats_of(catalog)["runs_key"][0] == 1000  # 5% more: kept
        catalog.put_many(rows[1050:])
        catalog.optimize()
        assert _stats_of(catalog)["runs_key"][0] == 1300
        for row in rows[:400]:
            catalog.forget(row["run_id"])
    finally:
        catalog.close()
    assert _stats(tmp_path)["runs_key"][0] == 900  # at close, after many went


def _stats_of(catalog: Catalog) -> dict[str, list[int]]:
    with catalog.reading() as connection:
        found = connection.execute("SELECT coalesce(idx, tbl), stat FROM sqlite_stat1").fetchall()
    return {idx: [int(part) for part in stat.split()] for idx, stat in found}


@pytest.mark.parametrize("sort", ["final:mse_loss", "minimum:l1_loss"])
def test_a_loss_sort_reads_its_page_from_the_loss_index(state: Path, sort: str) -> None:
    """The page in the index's order, stopping after it (249-460 ms when every run was
    joined to its value and all of them sorted)."""
    plans = _plans(state, lambda reader: search(reader, RunQuery(sort=sort)))
    paged = [plan for sql, plan in plans if "ORDER BY loss_values" in sql]
    index = f"INDEX loss_values_{sort.partition(':')[0]} (loss=?"
    assert paged and any(index in step for step in paged[0]), plans
    assert not any("TEMP B-TREE FOR ORDER BY" in step for step in paged[0]), plans


@pytest.mark.parametrize("sort", ["final:mse_loss", "minimum:l1_loss"])
@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
def test_a_far_page_by_a_loss_skips_index_entries_not_runs(
    state: Path, sort: str, descending: bool
) -> None:
    """Page 1,000: the 49,950 runs before it are skipped in the loss's index alone (a
    deferred join), never each joined to its row first (111 ms)."""
    query = RunQuery(sort=sort, descending=descending, page=1000)
    plans = _plans(state, lambda reader: search(reader, query))
    skipping = [plan for sql, plan in plans if "OFFSET 49950" in sql]
    assert skipping, plans
    for plan in skipping:
        reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
        assert reads and all("COVERING INDEX" in step for step in reads), plans
    assert len(search_rows(state, query)) == 50


def search_rows(state: Path, query: RunQuery) -> list[dict[str, Any]]:
    reader = Catalog.open_readonly(state)
    assert reader is not None
    try:
        return search(reader, query).rows
    finally:
        reader.close()
