"""The runs catalog as a real daemon keeps it: a row per render, nothing rewritten on a
restart, rows of runs gone dropped, index.html bounded, a planted link never written through,
and the catalog under --output when the tree cannot be written."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import lossreport
from lossreport import runformat
from lossreport.catalog import Catalog
from lossreport.daemon.listing import Listing
from lossreport.report import pages
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE, Homes, read_marker
from tests.support.catalog import damage_catalog, synthetic_entries
from tests.support.daemon import Daemon, run_once
from tests.support.disk import read_only
from tests.support.procs import wait_for

LRS = (1e-3, 3e-3, 1e-2)
STEPS = 100


def _train(parent: Path, run_id: str, lr: float) -> Path:
    with lossreport.start_run(
        parent, model="m", hook="h", architecture="topk", run_id=run_id,
        config={"lr": lr, "optimizer": {"name": "adam"}}, report_on_close=False,
    ) as run:  # fmt: skip
        for step in range(STEPS):
            run.log(step, mse_loss=lr * 100 / (step + 1), l1_loss=0.5 + (step % 3) / 10)
    return run.path


def _sweep(parent: Path) -> dict[str, Path]:
    return {f"sweep/lr-{i}": _train(parent / "sweep", f"lr-{i}", lr) for i, lr in enumerate(LRS)}


def _rows(state_dir: Path) -> dict[str, dict[str, Any]]:
    catalog = Catalog.open_readonly(state_dir)
    assert catalog is not None, f"no catalog in {state_dir}"
    try:
        return {row["run_id"]: row for row in catalog.recent(1000)}
    finally:
        catalog.close()


def _sql(state_dir: Path, statement: str) -> list[tuple[Any, ...]]:
    path = state_dir / CATALOG_DIR / CATALOG_FILE
    with closing(sqlite3.connect(path)) as connection, connection:
        return connection.execute(statement).fetchall()


def _events(stderr: str, kind: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == kind:
            found.append(event)
    return found


def _check_rows(state_dir: Path, homes: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each run's row says what it logged and links its report, as its marker does."""
    rows = _rows(state_dir)
    assert sorted(rows) == sorted(homes)
    for key, home in homes.items():
        row, lr = rows[key], LRS[int(key[-1])] if key[-1].isdigit() else LRS[0]
        marker = read_marker(home)
        assert marker is not None
        assert (row["status"], row["model"], row["hook"]) == ("completed", "m", "h")
        assert row["architecture"] == "topk" and row["source"] == "lossreport"
        assert row["steps"] == STEPS and row["error"] == ""
        assert row["final"] == {"mse_loss": lr * 100 / STEPS, "l1_loss": 0.5}
        assert row["minimum"] == {"mse_loss": lr * 100 / STEPS, "l1_loss": 0.5}
        assert row["config"] == {"lr": json.dumps(lr), "optimizer.name": "adam"}
        assert row["rendered_at"] == marker.entry["rendered_at"]
        report = state_dir / row["report"]
        assert report.is_file() and report.parent.resolve() == home / runformat.GRAPHS_DIR
        if home.is_relative_to(state_dir):
            assert row["report"] == f"{key}/{runformat.GRAPHS_DIR}/{report.name}"
        assert json.loads(row["curves_json"]).keys() == {"mse_loss", "l1_loss"}
    return rows


def test_each_render_lists_its_run_and_a_restart_rewrites_nothing(runs_dir: Path) -> None:
    homes = _sweep(runs_dir)
    first = run_once(runs_dir)
    assert first.returncode == 0, first.stderr
    rows = _check_rows(runs_dir, homes)
    index = (runs_dir / runformat.INDEX_FILE).read_text()
    assert all(f">{key}</a>" in index for key in homes)

    _sql(runs_dir, "UPDATE details SET error = 'sentinel'")  # a mark no render would leave
    again = run_once(runs_dir)
    assert again.returncode == 0, again.stderr
    assert dict(
        _sql(runs_dir, "SELECT key, error FROM details JOIN runs ON id = run")
    ) == dict.fromkeys(homes, "sentinel")  # unchanged runs: no row rewritten on a restart

    with lossreport.start_run(  # resumed, so rendered again: its row replaced
        runs_dir / "sweep", model="m", hook="h", architecture="topk", run_id="lr-0",
        config={"lr": 0.5}, report_on_close=False,
    ) as run:  # fmt: skip
        run.log(STEPS, mse_loss=0.0001, l1_loss=0.25)
    shutil.rmtree(homes["sweep/lr-2"])  # a run gone: its row goes
    third = run_once(runs_dir)
    assert third.returncode == 0, third.stderr
    assert dict(_sql(runs_dir, "SELECT key, error FROM details JOIN runs ON id = run")) == {
        "sweep/lr-0": "",
        "sweep/lr-1": "sentinel",
    }
    for table in ("runs", "loss_values", "config"):
        joined = "" if table == "runs" else " JOIN runs ON id = run"
        keys = {key for (key,) in _sql(runs_dir, f"SELECT key FROM {table}{joined}")}
        assert keys == {"sweep/lr-0", "sweep/lr-1"}, table
    renewed = _rows(runs_dir)["sweep/lr-0"]
    marker = read_marker(homes["sweep/lr-0"])
    assert marker is not None and renewed["rendered_at"] == marker.entry["rendered_at"]
    assert renewed["final"] == {"mse_loss": 0.0001, "l1_loss": 0.25}
    assert renewed["steps"] == STEPS + 1 and renewed["minimum"]["l1_loss"] == 0.25
    assert renewed["config"] == {"lr": "0.5"}
    assert renewed["rendered_at"] >= rows["sweep/lr-0"]["rendered_at"]
    index = (runs_dir / runformat.INDEX_FILE).read_text()
    assert ">sweep/lr-2</a>" not in index and ">sweep/lr-0</a>" in index


def _listed(page: str) -> list[str]:
    """The runs a static index lists, in its order (its overlay's data)."""
    found = re.search(r'<script type="application/json" id="runs-data">(.*?)</script>', page)
    assert found is not None
    return [item["run"] for item in json.loads(found.group(1))]


def test_the_static_index_shows_the_newest_runs_and_says_how_many(tmp_path: Path) -> None:
    count = pages.INDEX_MAX_RUNS + 137
    entries = list(synthetic_entries(count, seed=3))
    listing = Listing(Homes(tmp_path))
    try:
        for key, entry in entries:  # as a first start-up finds runs rendered before
            assert listing.found(key, entry)
        listing.write_page()
        newest = sorted(entries, key=lambda item: item[1]["rendered_at"], reverse=True)
        page = (tmp_path / runformat.INDEX_FILE).read_text()
        assert _listed(page) == [key for key, _ in newest[: pages.INDEX_MAX_RUNS]]
        assert page.count('<tr data-index="') == pages.INDEX_MAX_RUNS
        assert f"The {pages.INDEX_MAX_RUNS} most recently rendered of {count} runs" in page

        key, entry = newest[-1]  # the oldest, rendered again: now first
        listing.rendered(key, {**entry, "rendered_at": "2099-01-01T00:00:00+00:00"})
        listing.forget(newest[0][0])
        listing.write_page()
        page = (tmp_path / runformat.INDEX_FILE).read_text()
        expected = [key] + [k for k, _ in newest[1 : pages.INDEX_MAX_RUNS]]
        assert _listed(page) == expected
        assert f"most recently rendered of {count - 1} runs" in page
    finally:
        listing.close()
    assert Catalog.open(tmp_path).count() == count - 1


def test_a_catalog_folder_planted_as_a_link_is_never_written_through(
    runs_dir: Path, tmp_path: Path
) -> None:
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    (runs_dir / CATALOG_DIR).symlink_to(dummy, target_is_directory=True)
    home = _train(runs_dir / "sweep", "only", 1e-3)
    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr
    assert _events(result.stderr, "catalog_failed")
    assert list(dummy.iterdir()) == []
    assert (runs_dir / CATALOG_DIR).is_symlink()
    assert read_marker(home) is not None and any((home / runformat.GRAPHS_DIR).glob("*.html"))
    assert ">sweep/only</a>" in (runs_dir / runformat.INDEX_FILE).read_text()


def _files(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.lstat().st_mtime_ns for path in folder.rglob("*")}


def test_with_output_on_a_tree_it_cannot_write_the_catalog_is_in_output(
    runs_dir: Path, tmp_path: Path
) -> None:
    _sweep(runs_dir)
    mine = _train(runs_dir, "mine", LRS[0])  # a run it can write: reported in place
    output = tmp_path / "reports"
    output.mkdir()
    before = _files(runs_dir / "sweep")
    with read_only(runs_dir / "sweep"):
        assert not os.access(runs_dir / "sweep" / "lr-0", os.W_OK)
        result = run_once(runs_dir, "--output", str(output))
        assert result.returncode == 0, result.stderr
    assert _files(runs_dir / "sweep") == before
    assert not _events(result.stderr, "catalog_failed")
    assert not (runs_dir / CATALOG_DIR).exists() and not (runs_dir / runformat.INDEX_FILE).exists()
    assert (output / CATALOG_DIR / CATALOG_FILE).is_file()
    assert stat_mode(output / CATALOG_DIR) == 0o755
    rows = _check_rows(output, {f"sweep/lr-{i}": output / "sweep" / f"lr-{i}" for i in range(3)}
                       | {"mine": mine})  # fmt: skip
    assert rows["mine"]["report"].startswith("../runs/mine/loss_graphs/")  # from output
    assert sorted(_listed((output / runformat.INDEX_FILE).read_text())) == sorted(rows)


def stat_mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
def test_a_catalog_damaged_while_the_daemon_runs_is_set_aside_and_rebuilt(
    runs_dir: Path, tmp_path: Path, damage: str
) -> None:
    """The catalog file damaged under a running daemon: at its next write the daemon sets the
    file aside (never deleted), makes a new one from the runs' markers and goes on listing
    renders in it and in index.html, as a restart would have; logged once."""
    first = _train(runs_dir / "sweep", "lr-0", LRS[0])
    folder = runs_dir / CATALOG_DIR
    daemon = Daemon(runs_dir, log=tmp_path / "watch.log")
    try:
        wait_for(lambda: _keys_listed(runs_dir) == ["sweep/lr-0"], timeout=120)
        damage_catalog(folder / CATALOG_FILE, damage)
        _train(runs_dir / "sweep", "lr-1", LRS[1])  # rendered: its row written
        wanted = ["sweep/lr-0", "sweep/lr-1"]
        wait_for(lambda: _keys_listed(runs_dir) == wanted, timeout=120)
        index = runs_dir / runformat.INDEX_FILE  # written within a second of the render
        wait_for(lambda: index.exists() and ">sweep/lr-1</a>" in index.read_text(), 60)
    finally:
        code, _ = daemon.stop()
    assert code == 0, daemon.log.read_text()
    assert ">sweep/lr-0</a>" in (runs_dir / runformat.INDEX_FILE).read_text()
    aside = sorted(path.name for path in folder.iterdir() if ".damaged-" in path.name)
    assert len(aside) == 1 and aside[0].startswith(f"{CATALOG_FILE}.damaged-"), aside
    assert len(daemon.events("catalog_damaged")) == 1, daemon.log.read_text()
    assert read_marker(first) is not None


def _keys_listed(state_dir: Path) -> list[str] | None:
    """The runs the catalog lists, or None while it cannot be read."""
    try:
        return sorted(_rows(state_dir))
    except (AssertionError, sqlite3.Error):
        return None
