"""The runs catalog as a real daemon keeps it: a row per render, never rebuilt on start, rows
of runs gone dropped, index.html bounded, and a planted link never written through."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import lossreport
from lossreport import runformat
from lossreport.catalog import Catalog
from lossreport.daemon.listing import Listing
from lossreport.report import pages
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE, Homes
from tests.support.catalog import synthetic_entries
from tests.support.daemon import run_once


def _train(runs_dir: Path, run_id: str, lr: float, steps: int = 100) -> Path:
    with lossreport.start_run(
        runs_dir / "sweep", model="m", hook="h", architecture="topk", run_id=run_id,
        config={"lr": lr, "optimizer": {"name": "adam"}}, report_on_close=False,
    ) as run:  # fmt: skip
        for step in range(steps):
            run.log(step, mse_loss=lr * 100 / (step + 1), l1_loss=0.5 + (step % 3) / 10)
    return run.path


def _catalog(runs_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(runs_dir / CATALOG_DIR / CATALOG_FILE)


def _events(stderr: str, kind: str) -> list[dict[str, object]]:
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == kind:
            found.append(event)
    return found


def test_each_render_lists_its_run_and_a_restart_rewrites_nothing(runs_dir: Path) -> None:
    run_dirs = [_train(runs_dir, f"lr-{i}", lr) for i, lr in enumerate((1e-3, 3e-3, 1e-2))]
    assert run_once(runs_dir).returncode == 0
    catalog = Catalog.open_readonly(runs_dir)
    assert catalog is not None
    rows = {row["run_id"]: row for row in catalog.recent(10)}
    catalog.close()
    assert sorted(rows) == ["sweep/lr-0", "sweep/lr-1", "sweep/lr-2"]
    row = rows["sweep/lr-1"]
    assert row["status"] == "completed" and row["model"] == "m" and row["architecture"] == "topk"
    assert row["final"]["mse_loss"] == 0.3 / 100 * 1  # lr * 100 / 100
    assert row["minimum"]["l1_loss"] == 0.5
    assert row["config"] == {"lr": "0.003", "optimizer.name": "adam"}
    report = run_dirs[1] / runformat.GRAPHS_DIR / Path(row["report"]).name
    assert report.is_file()

    with _catalog(runs_dir) as connection:  # a mark no render would leave
        connection.execute("UPDATE details SET error = 'sentinel'")
    assert run_once(runs_dir).returncode == 0
    with _catalog(runs_dir) as connection:
        errors = dict(connection.execute("SELECT key, error FROM details"))
    assert errors == dict.fromkeys(rows, "sentinel")  # nothing rewritten on a restart

    with lossreport.start_run(  # resumed, so rendered again: its row replaced
        runs_dir / "sweep", model="m", hook="h", run_id="lr-0", report_on_close=False
    ) as run:
        run.log(100, mse_loss=0.0001, l1_loss=0.5)
    shutil.rmtree(run_dirs[2])  # a run gone: its row goes
    assert run_once(runs_dir).returncode == 0
    with _catalog(runs_dir) as connection:
        errors = dict(connection.execute("SELECT key, error FROM details"))
        final = connection.execute(
            "SELECT final FROM loss_values WHERE key = 'sweep/lr-0' AND loss = 'mse_loss'"
        ).fetchone()[0]
    assert errors == {"sweep/lr-0": "", "sweep/lr-1": "sentinel"}
    assert final == 0.0001


def test_the_static_index_shows_the_newest_runs_and_says_how_many(tmp_path: Path) -> None:
    listing = Listing(Homes(tmp_path))
    entries = list(synthetic_entries(pages.INDEX_MAX_RUNS + 100))
    listing.catalog.put_many(pages.index_row(entry, key) for key, entry in entries)
    listing.write_page()
    listing.close()
    page = (tmp_path / runformat.INDEX_FILE).read_text()
    newest = sorted(entries, key=lambda item: item[1]["rendered_at"], reverse=True)
    shown = [key for key, _ in newest[: pages.INDEX_MAX_RUNS]]
    assert page.count('data-index="') == pages.INDEX_MAX_RUNS
    assert all(f">{key}</a>" in page for key in shown[::50])
    assert f">{newest[pages.INDEX_MAX_RUNS][0]}</a>" not in page
    assert f"The {pages.INDEX_MAX_RUNS} most recently rendered of 600 runs" in page


def test_a_catalog_folder_planted_as_a_link_is_never_written_through(
    runs_dir: Path, tmp_path: Path
) -> None:
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    (runs_dir / CATALOG_DIR).symlink_to(dummy, target_is_directory=True)
    _train(runs_dir, "only", 1e-3)
    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr
    assert _events(result.stderr, "catalog_failed")
    assert list(dummy.iterdir()) == []
    assert (runs_dir / "sweep" / "only" / runformat.GRAPHS_DIR).is_dir()
    assert "sweep/only" in (runs_dir / runformat.INDEX_FILE).read_text()
