"""Index rows carry each run's overview curves from its render marker, which the run's owner
can write: what a row holds is bounded when the daemon writes it and when `serve` reads it
(from the catalog, or from the markers), and a marker over the size limit is refused, logged
by name, with its run still listed."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import lossreport
from lossreport import runformat, storage
from lossreport.catalog import Catalog, packed
from lossreport.daemon.listing import Listing
from lossreport.report import pages
from lossreport.runformat import (
    CATALOG_DIR,
    CATALOG_FILE,
    GRAPHS_DIR,
    MARKER,
    MAX_CURVE_POINTS,
    MAX_CURVES_BYTES,
    Homes,
    index_curves,
    read_marker,
)
from lossreport.runformat.packed import pack
from tests.support.catalog import synthetic_entries
from tests.support.serve_thread import server_thread
from tests.support.server import request

RUNS = 6
# A page holds a row per run; each row's curves at most MAX_CURVES_BYTES, escaped for HTML.
PAGE_BUDGET = 200_000 + RUNS * 2 * MAX_CURVES_BYTES


def _flooded_entry(entry: dict[str, Any], size: int, steps: int = 10_000) -> dict[str, Any]:
    """`entry` with curves of about `size` bytes: as many losses of `steps` points as fit."""
    points = [[step, 1.0 / (step + 1)] for step in range(steps)]
    losses = max(1, size // len(json.dumps(points)))
    return {**entry, "curves": {f"loss_{i:04d}": points for i in range(losses)}}


def _trained(runs_dir: Path, run_id: str) -> Path:
    with lossreport.start_run(
        runs_dir, model="gpt2-small", hook="blocks.0.hook_resid_pre", run_id=run_id,
        report_on_close=False,
    ) as run:  # fmt: skip
        for step in range(20):
            run.log(step, mse_loss=1.0 / (step + 1))
    return run.path


def _write_marker(run_dir: Path, entry: dict[str, Any]) -> Path:
    graphs = run_dir / GRAPHS_DIR
    graphs.mkdir(exist_ok=True)
    doc = {"fingerprint": "x", "status": "completed", "entry": entry, "daemon": True}
    (graphs / MARKER).write_text(json.dumps(doc))
    return graphs / MARKER


def test_curves_are_cut_to_their_points_and_bytes() -> None:
    entry = next(synthetic_entries(1))[1]
    long = index_curves(_flooded_entry(entry, 2**20)["curves"])
    assert long and all(len(points) == MAX_CURVE_POINTS for points in long.values())
    for points in long.values():
        assert points[0] == [0, 1.0] and points[-1] == [9999, 1.0 / 10_000]  # both ends kept
    many = _flooded_entry(entry, 2**20, steps=60)["curves"]  # thousands of losses
    bounded = index_curves(many)
    assert 0 < len(bounded) < len(many) and list(bounded) == list(many)[: len(bounded)]
    assert len(json.dumps(bounded, separators=(",", ":"))) <= MAX_CURVES_BYTES
    assert index_curves(entry["curves"]) == entry["curves"]  # the renderer's: as they are
    hostile = {"a": [[1, 2], [1, "x"], [True, 1], [1, float("nan")], [10**400, 1]], "b": "no"}
    assert index_curves(hostile) == {"a": [[1, 2]]}
    assert index_curves([1, 2]) == {}


def test_a_marker_over_the_limit_is_refused_once_by_name(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = _trained(runs_dir, "oversized-Ω")
    entry = next(synthetic_entries(1))[1]
    path = _write_marker(run_dir, _flooded_entry(entry, storage.MAX_MARKER_BYTES + 2**20))
    assert path.stat().st_size > storage.MAX_MARKER_BYTES
    with caplog.at_level(logging.WARNING, logger="lossreport.runformat.marker"):
        assert read_marker(run_dir) is None
        assert read_marker(run_dir) is None  # asked again (serve does, every few seconds)
    refused = [record.getMessage() for record in caplog.records]
    assert len(refused) == 1 and str(path) in refused[0], refused


def test_the_daemon_writes_bounded_curves_and_serve_reads_them_bounded(tmp_path: Path) -> None:
    """The daemon's row from a flooded marker entry, and a row a hand-made file holds whose
    curves inflate to 16 MiB: both come back bounded."""
    state = tmp_path / "runs"
    state.mkdir()
    key, entry = next(synthetic_entries(1))
    listing = Listing(Homes(state))
    listing.rendered(key, _flooded_entry(entry, 2**20))
    listing.close()
    path = state / CATALOG_DIR / CATALOG_FILE
    with closing(sqlite3.connect(path)) as connection, connection:  # a hand-made row
        connection.execute("INSERT INTO runs SELECT NULL, 'older/run', place, status, sweep,"
                           " source, steps, started_at, duration, rendered_at, search"
                           " FROM runs")  # fmt: skip
        connection.execute("INSERT INTO details SELECT (SELECT id FROM runs WHERE key ="
                           " 'older/run'), status_class, report, error, problems, anomalies,"
                           " ? FROM details", (zlib.compress(b"[" * 2**24),))  # fmt: skip
    catalog = Catalog.open_readonly(state)
    assert catalog is not None
    try:
        rows = {row["run_id"]: row for row in catalog.recent(10)}
    finally:
        catalog.close()
    assert len(rows[key]["curves_json"]) <= 2 * MAX_CURVES_BYTES
    curves = json.loads(rows[key]["curves_json"])
    assert curves and all(len(points) == MAX_CURVE_POINTS for points in curves.values())
    assert rows["older/run"]["curves_json"] == "{}"


def test_served_from_markers_a_page_of_flooded_runs_stays_small(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Markers of nearly the size limit each (no daemon: `serve` reads them all), and one over
    it: the index page and its JSON stay within a few rows' budget, every run listed."""
    entries = synthetic_entries(RUNS + 1)
    for index in range(RUNS):
        _, entry = next(entries)
        run_dir = _trained(runs_dir, f"flooded-{index}")
        _write_marker(run_dir, _flooded_entry(entry, storage.MAX_MARKER_BYTES - 2**19))
    oversized = _write_marker(
        _trained(runs_dir, "oversized"),
        _flooded_entry(next(entries)[1], storage.MAX_MARKER_BYTES + 2**19),
    )
    with caplog.at_level(logging.WARNING), server_thread(runs_dir) as port:
        status, _, page = request(port, "/?per_page=200")
        assert status == 200 and len(page) < PAGE_BUDGET, len(page)
        status, _, body = request(port, "/.api/runs?per_page=200")
        assert status == 200 and len(body) < PAGE_BUDGET, len(body)
    runs = {run["run_id"]: run for run in json.loads(body)["runs"]}
    assert sorted(runs) == sorted([*(f"flooded-{i}" for i in range(RUNS)), "oversized"])
    for index in range(RUNS):
        curves = runs[f"flooded-{index}"]["curves"]
        assert curves and all(len(points) <= MAX_CURVE_POINTS for points in curves.values())
    assert runs["oversized"]["curves"] == {} and "over the" in runs["oversized"]["error"]
    named = [r.getMessage() for r in caplog.records if str(oversized) in r.getMessage()]
    assert len(named) == 1, named
    assert runformat.marker_refusal(oversized.parent.parent) is not None


NAMES = ("ours", "forged", "garbled", "bomb", "flooded")


def _carrying(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Run `run_dir`'s marker entry as its render wrote it, with `changes` written over it."""
    path = run_dir / GRAPHS_DIR / MARKER
    doc = json.loads(path.read_text())
    doc["entry"].update(changes)
    path.write_text(json.dumps(doc))
    return dict(doc["entry"])


def test_a_blob_a_marker_carries_is_listed_only_when_it_is_ours_and_holds_its_values(
    runs_dir: Path,
) -> None:
    """A render marker carries its run's packed index details (`pages.marker_entry`), which a
    first start copies into the catalog instead of packing them again. The run's owner can
    write it: a blob that disagrees with the marker's values, is no blob, inflates past its
    bound or names losses past a marker's bounds is not taken; the row is the marker's own."""
    runs = {name: _trained(runs_dir, f"{name}-Ω") for name in NAMES}
    with lossreport.start_run(
        runs_dir, model="gpt2-small", hook="h", run_id="diverged", report_on_close=False
    ) as run:  # its last loss NaN: the marker's final value is the last finite one
        for step in range(20):
            run.log(step, mse_loss=1.0 / (step + 1) if step < 19 else float("nan"))
    runs["diverged"] = run.path
    for run_dir in runs.values():
        lossreport.render_run(run_dir)
    ours = read_marker(runs["ours"])
    assert ours is not None and "curves" not in ours.entry and ours.entry["packed"]
    _carrying(runs["forged"], final={"mse_loss": 123.0})
    _carrying(runs["garbled"], packed="not base64 at all!")
    bomb = base64.b64encode(zlib.compress(b"[" * 2**24, 9)).decode()
    assert len(bomb) < packed.MAX_CARRIED_CHARS
    _carrying(runs["bomb"], packed=bomb)
    row = pages.index_row(ours.entry, "flooded-Ω")
    flood = {f"loss_{'x' * 300}_{i}": [[0, 1.0], [1, 0.5]] for i in range(3)}
    _carrying(runs["flooded"], packed=base64.b64encode(pack(row, flood)).decode())
    with server_thread(runs_dir) as port:
        status, _, body = request(port, "/.api/runs?per_page=50")
    assert status == 200
    by_folder = {run["run_id"]: run for run in json.loads(body)["runs"]}
    listed = {name: by_folder[run_dir.name] for name, run_dir in runs.items()}
    assert list(listed["ours"]["curves"]) == ["mse_loss"]
    assert len(listed["ours"]["curves"]["mse_loss"]) == 20
    assert listed["ours"]["curves"]["mse_loss"][-1] == [19, pytest.approx(1 / 20, rel=1e-3)]
    assert listed["forged"]["final"] == {"mse_loss": 123.0}  # the marker's, shown as sorted
    assert len(listed["diverged"]["curves"]["mse_loss"]) == 19  # its NaN not drawn
    for name in NAMES[1:]:
        assert listed[name]["curves"] == {}, name
        assert listed[name]["status"] == "completed", name
