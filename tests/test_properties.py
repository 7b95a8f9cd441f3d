"""Property-based tests: whatever a run directory holds, a render gives a report or a clear
error naming the file, never a crash, and writes nothing outside the run directory."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossreport import runformat
from lossreport.errors import LossReportError
from lossreport.report.outputs import FORMULA_STARTS
from lossreport.report.render import render_run
from tests.support.deadline import fails_if_blocked
from tests.support.png import png_size_and_dpi

MAX_PNG_WIDTH = 4_500  # a chart at 300 DPI with its axis and legend (tests/report/test_budgets)

# Names a user might give: odd unicode, path-like, HTML-like, control characters, empty.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "../../../etc/passwd",
            "/absolute/path",
            "..",
            ".",
            "",
            "<img src=x onerror=alert(1)>",
            "</script><script>alert(1)</script>",
            "a\x00b",
            "line\nbreak",
            "C:\\windows\\system32",
            "名前 🧪 ñ",
            "x" * 300,
            # the size dimension: nothing caps a name where it is written
            "m" * 100_000,
            "名前_" * 5_000,
            "blocks.0.hook_" * 2_000,
            '=HYPERLINK("http://example.com","x")',
            "-2+3",
        ]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),  # json.dumps writes NaN/Infinity; added separately below
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.one_of(st.just("2026-11-25T10:00:00+00:00"), hostile_text, st.integers(), st.none())


@st.composite
def run_documents(draw: st.DrawFn) -> Any:
    """run.json: mostly well-formed with wrong or hostile fields, sometimes not an object."""
    document = {
        "format": draw(st.sampled_from([runformat.FORMAT, "lossreport.run/99", None, 3])),
        "run_id": draw(st.one_of(hostile_text, json_scalars)),
        "model": draw(st.one_of(hostile_text, json_values)),
        "hook": draw(st.one_of(hostile_text, json_values)),
        "architecture": draw(st.one_of(hostile_text, json_values)),
        "config": draw(json_values),
        "status": draw(st.sampled_from(["completed", "failed", "running", "weird", None, 1])),
        "started_at": draw(timestamps),
        "finished_at": draw(timestamps),
        "heartbeat_at": draw(timestamps),
        "pid": draw(json_scalars),
        "error": draw(json_values),
    }
    return draw(st.one_of(st.just(document), json_values))


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, 0.0]),
)


@st.composite
def shards(draw: st.DrawFn) -> pa.Table:
    """A shard with some loss columns, odd steps and values, and sometimes wrong types."""
    rows = draw(st.integers(min_value=0, max_value=40))
    steps = draw(
        st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=rows, max_size=rows)
    )
    step_type = draw(st.sampled_from([pa.int64(), pa.int32(), pa.float64(), pa.string()]))
    if step_type == pa.int32():
        steps = [s % 2**31 for s in steps]
    columns: dict[str, pa.Array] = {
        "step": pa.array([str(s) for s in steps] if step_type == pa.string() else steps).cast(
            step_type
        )
    }
    names = draw(
        st.lists(
            st.one_of(st.sampled_from(["mse_loss", "l1_loss", "overall_loss"]), hostile_text),
            max_size=3,
            unique=True,
        )
    )
    for name in names:
        if name in ("step", "wall_time"):
            continue
        if draw(st.booleans()):
            values = draw(st.lists(finite_or_not, min_size=rows, max_size=rows))
            columns[name] = pa.array(values, pa.float64())
        else:  # the wrong type: text or integers where floats belong
            columns[name] = pa.array(
                draw(st.lists(st.one_of(hostile_text, st.none()), min_size=rows, max_size=rows)),
                pa.string(),
            )
    return pa.table(columns)


def _snapshot(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file()
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    document=run_documents(),
    tables=st.lists(shards(), max_size=3),
    raw_shard=st.one_of(st.none(), st.binary(max_size=200)),
    run_name=st.sampled_from(["run", "名前 run", "<b>run</b>", "run..x"]),
)
def test_any_run_directory_renders_or_fails_clearly_and_stays_inside(
    document: Any, tables: list[pa.Table], raw_shard: bytes | None, run_name: str
) -> None:
    outer = Path(tempfile.mkdtemp(prefix="lossreport-property-"))
    try:
        run_dir = outer / "runs" / run_name
        (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
        (outer / "sibling.txt").write_text("untouched")
        (run_dir / runformat.RUN_FILE).write_text(json.dumps(document, allow_nan=True))
        for seq, table in enumerate(tables, start=1):
            pq.write_table(table, run_dir / runformat.LOSSES_DIR / runformat.shard_name(seq))
        if raw_shard is not None:  # not Parquet at all, or truncated
            (run_dir / runformat.LOSSES_DIR / runformat.shard_name(len(tables) + 1)).write_bytes(
                raw_shard
            )
        before_outside = _snapshot(outer)
        try:
            result = render_run(run_dir)
        except LossReportError as exc:
            assert str(run_dir) in str(exc)  # the error names the run's file or folder
        else:
            page = result.report.read_text()
            assert page.rstrip().endswith("</html>")
            assert result.report.parent == run_dir / runformat.GRAPHS_DIR
            assert "<script" not in page.lower()  # nothing a name held became markup
            for problem in result.problems:
                assert str(run_dir) in problem
            json.loads(result.summary.read_text())  # strict JSON: no NaN/Infinity tokens
            assert len(page) < 4 * 2**20  # a name is shown shortened, whole in the data
            for chart in result.charts:  # each as wide as a chart, whatever its names
                assert png_size_and_dpi(chart)[0] <= MAX_PNG_WIDTH
            with result.csv.open(newline="") as handle:
                header = next(csv.reader(handle))
            assert not any(name.startswith(FORMULA_STARTS) for name in header)
        after = _snapshot(outer)
        inside = os.path.join("runs", run_name)
        changed_outside = {
            name: size
            for name, size in after.items()
            if not name.startswith(inside) and before_outside.get(name) != size
        }
        assert changed_outside == {}
        assert (outer / "sibling.txt").read_text() == "untouched"
    finally:
        shutil.rmtree(outer, ignore_errors=True)


# -- filesystem objects -----------------------------------------------------------------
# What a hostile or broken tree can hold where a run's file or folder belongs. Links point only
# at dummy files and folders under the test's temporary directory.
OBJECT_KINDS = [
    "normal",
    "missing",
    "link-outside-dir",
    "link-outside-file",
    "link-inside-file",
    "dangling-link",
    "fifo",
    "directory",
    "file",
]
RUN_PATHS = [
    runformat.RUN_FILE,
    runformat.LOSSES_DIR,
    f"{runformat.LOSSES_DIR}/{runformat.shard_name(2)}",
    runformat.GRAPHS_DIR,
    ".lossreport-render.lock",
    f"{runformat.GRAPHS_DIR}/.lossreport-rendered.json",
]


def _place(path: Path, kind: str, outside: Path, run_dir: Path) -> None:
    """Put an object of `kind` at `path`, replacing what the normal run has there."""
    if kind == "normal" or path.parent.is_symlink() or not path.parent.is_dir():
        return  # nothing to change, or its folder is itself something else now
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "link-outside-dir":
        path.symlink_to(outside)
    elif kind == "link-outside-file":
        path.symlink_to(outside / "precious.conf")
    elif kind == "link-inside-file":
        path.symlink_to(run_dir / runformat.RUN_FILE)
    elif kind == "dangling-link":
        path.symlink_to(outside / "no-such-file")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        (path / "inner").mkdir(parents=True)
    elif kind == "file":
        path.write_bytes(b"\x00not what belongs here")


def _contents(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder` (links not followed): file bytes, or what the entry is."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"link to {os.readlink(path)}"
        elif path.is_file():
            found[name] = path.read_bytes()
        else:
            found[name] = "dir" if path.is_dir() else "other"
    return found


def _finished_run(runs: Path, run_id: str) -> Path:
    import lossreport

    with lossreport.start_run(runs, model="m", hook="h", run_id=run_id, flush_every=5) as run:
        for step in range(12):
            run.log(step, mse_loss=1.0 / (step + 1))
    return run.path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.fixed_dictionaries({path: st.sampled_from(OBJECT_KINDS) for path in RUN_PATHS}),
    deep=st.booleans(),
)
def test_any_filesystem_object_in_a_run_is_reported_never_followed_and_never_blocks(
    kinds: dict[str, str], deep: bool
) -> None:
    outer = Path(tempfile.mkdtemp(prefix="lossreport-objects-"))
    try:
        outside = outer / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "precious.conf").write_text("keep me\n")
        (outside / "loss_curves_x.png").write_bytes(b"someone else's")
        run_dir = _finished_run(outer / "runs", "run")
        if deep:
            text = (run_dir / runformat.RUN_FILE).read_text()
            (run_dir / runformat.RUN_FILE).write_text(
                text.replace('"config": {}', '"config": ' + "[" * 3000 + "]" * 3000)
            )
        (run_dir / runformat.GRAPHS_DIR).mkdir()  # as after an earlier render
        for path in RUN_PATHS:  # parents first, so a folder's kind decides what it holds
            _place(run_dir / path, kinds[path], outside, run_dir)
        before = _contents(outside)
        try:
            with fails_if_blocked():
                result = render_run(run_dir)
        except LossReportError as exc:
            assert str(run_dir) in str(exc)
        else:
            assert result.report.read_text().rstrip().endswith("</html>")
            assert "keep me" not in result.report.read_text()
        assert _contents(outside) == before
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _two_writers_of_one_run(runs: Path, run_id: str) -> Path:
    """Two writers of one run id at once (a job started twice), shards interleaved."""
    import lossreport

    first = lossreport.start_run(runs, model="m", hook="h", run_id=run_id, flush_every=5)
    second = lossreport.start_run(runs, model="m", hook="h", run_id=run_id, flush_every=5)
    for step in range(20):
        first.log(2 * step, mse_loss=1.0)
        second.log(2 * step + 1, mse_loss=2.0)
        if step % 5 == 4:
            first.flush()
            second.flush()
    first.close()
    second.close()
    return first.path


def test_the_daemon_renders_the_good_runs_of_a_tree_full_of_hostile_objects(
    tmp_path: Path,
) -> None:
    from tests.support.daemon import run_once

    runs = tmp_path / "runs"
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious.conf").write_text("keep me\n")
    good = [_finished_run(runs, f"good-{n}") for n in range(2)]
    for path in RUN_PATHS:
        for kind in OBJECT_KINDS[1:]:
            run_dir = _finished_run(runs, f"{kind}-{path.replace('/', '_')}")
            _place(run_dir / path, kind, outside, run_dir)
    deep = _finished_run(runs, "deep")
    (deep / runformat.RUN_FILE).write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    shared = _two_writers_of_one_run(runs, "shared")
    (runs / "linked-run").symlink_to(outside)
    before = _contents(outside)

    result = run_once(runs)

    assert "Traceback" not in result.stderr, result.stderr
    for run_dir in good:
        assert (run_dir / runformat.GRAPHS_DIR).is_dir()
    (history,) = (shared / runformat.GRAPHS_DIR).glob("loss_history_*.csv")
    assert len(history.read_text().splitlines()) == 1 + 40  # both writers' rows, none lost
    assert _contents(outside) == before
    assert (runs / "index.html").is_file()
