"""Property-based tests: whatever a run directory holds, a render gives a report or a clear
error naming the file, never a crash, and writes nothing outside the run directory."""

from __future__ import annotations

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

from lossreport import rundir
from lossreport.errors import LossReportError
from lossreport.render import render_run

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
        "format": draw(st.sampled_from([rundir.FORMAT, "lossreport.run/99", None, 3])),
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
        (run_dir / rundir.LOSSES_DIR).mkdir(parents=True)
        (outer / "sibling.txt").write_text("untouched")
        (run_dir / rundir.RUN_FILE).write_text(json.dumps(document, allow_nan=True))
        for seq, table in enumerate(tables, start=1):
            pq.write_table(table, run_dir / rundir.LOSSES_DIR / rundir.shard_name(seq))
        if raw_shard is not None:  # not Parquet at all, or truncated
            (run_dir / rundir.LOSSES_DIR / rundir.shard_name(len(tables) + 1)).write_bytes(
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
            assert result.report.parent == run_dir / rundir.GRAPHS_DIR
            assert "<script" not in page.lower()  # nothing a name held became markup
            for problem in result.problems:
                assert str(run_dir) in problem
            json.loads(result.summary.read_text())  # strict JSON: no NaN/Infinity tokens
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
