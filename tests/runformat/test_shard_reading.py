"""Shards written by other tools: each is read correctly, or skipped and named with its reason,
never a traceback from `show`, `render` or the daemon."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossreport import runformat
from lossreport.report.render import render_run
from tests.support.procs import run_cli

GOOD_ROWS = 3


def _steps(*steps: int) -> pa.Array:
    return pa.array(steps, pa.int64())


def _floats(*values: float) -> pa.Array:
    return pa.array(values, pa.float64())


# Each foreign shard and the reason it is skipped for.
SKIPPED = {
    "duplicate loss columns": (
        pa.Table.from_arrays(
            [_steps(10, 11), _floats(1, 2), _floats(3, 4)], names=["step", "mse_loss", "mse_loss"]
        ),
        "has more than one column named 'mse_loss'",
    ),
    "duplicate step columns": (
        pa.Table.from_arrays(
            [_steps(10, 11), _steps(12, 13), _floats(1, 2)], names=["step", "step", "mse_loss"]
        ),
        "has more than one column named 'step'",
    ),
    "duplicate wall_time columns": (
        pa.Table.from_arrays(
            [_steps(10), _floats(1.7e9), _floats(1.8e9), _floats(1)],
            names=["step", "wall_time", "wall_time", "mse_loss"],
        ),
        "has more than one column named 'wall_time'",
    ),
    "uint64 step above int64": (
        pa.table({"step": pa.array([10, 2**63 + 5], pa.uint64()), "mse_loss": _floats(1, 2)}),
        "'step' column does not fit int64",
    ),
    "list step": (
        pa.table({"step": pa.array([[10], [11]]), "mse_loss": _floats(1, 2)}),
        "'step' column is list<element: int64>, expected an integer",
    ),
    "struct step": (
        pa.table({"step": pa.array([{"at": 10}]), "mse_loss": _floats(1)}),
        "'step' column is struct<at: int64>, expected an integer",
    ),
}


def _run_with(tmp_path: Path, foreign: pa.Table) -> Path:
    """A run with one good shard of our own and `foreign` after it, as another tool wrote it."""
    run_dir = tmp_path / "run"
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    runformat.write_run_file(
        run_dir, runformat.RunRecord("run", "m", "h", status=runformat.COMPLETED)
    )
    good = pa.table(
        {
            "step": _steps(0, 1, 2),
            "wall_time": _floats(1.7e9, 1.7e9 + 1, 1.7e9 + 2),
            "mse_loss": _floats(4, 2, 1),
        }
    )
    runformat.write_shard(run_dir, 1, good)
    pq.write_table(foreign, run_dir / runformat.LOSSES_DIR / "part-000002.parquet")
    return run_dir


@pytest.mark.parametrize("case", SKIPPED)
def test_a_foreign_shard_that_cannot_be_read_is_skipped_and_named(
    tmp_path: Path, case: str
) -> None:
    table, reason = SKIPPED[case]
    run_dir = _run_with(tmp_path, table)
    data = runformat.read_losses(run_dir)
    assert data.table.column("mse_loss").to_pylist() == [4.0, 2.0, 1.0]
    shard = run_dir / runformat.LOSSES_DIR / "part-000002.parquet"
    assert len(data.skipped) == 1 and data.skipped[0].startswith(f"{shard}: {reason}")


def test_show_and_render_list_every_skipped_foreign_shard(tmp_path: Path) -> None:
    run_dir = _run_with(tmp_path, pa.table({"step": _steps(), "mse_loss": _floats()}))
    for seq, (table, _) in enumerate(SKIPPED.values(), start=3):
        pq.write_table(table, run_dir / runformat.LOSSES_DIR / runformat.shard_name(seq))
    shown = run_cli("show", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("skipped: ") == len(SKIPPED)
    assert "rows:   3" in shown.stdout
    result = render_run(run_dir)
    assert len(result.problems) == len(SKIPPED)
    summary = json.loads(result.summary.read_text())
    assert summary["total_steps"] == GOOD_ROWS and len(summary["skipped"]) == len(SKIPPED)
    page = result.report.read_text()
    assert all(f"part-{seq:06d}.parquet" in page for seq in range(3, 3 + len(SKIPPED)))


@pytest.mark.parametrize(
    ("column", "values"),
    [
        (pa.array([Decimal("1.5"), Decimal("0.25")], pa.decimal128(10, 2)), [1.5, 0.25]),
        (pa.array([Decimal("1.5"), Decimal("0.25")], pa.decimal256(50, 2)), [1.5, 0.25]),
        (pa.array([1.5, 0.25]).dictionary_encode(), [1.5, 0.25]),
        (pa.array(np.array([1.5, 0.25], np.float16)), [1.5, 0.25]),
        (pa.array([2**64 - 1, 1], pa.uint64()), [float(2**64), 1.0]),  # float64 rounds it
        (pa.array([2**63 - 1, 1], pa.int64()), [float(2**63), 1.0]),
    ],
    ids=["decimal128", "decimal256", "dictionary", "float16", "uint64-max", "int64-max"],
)
def test_a_loss_of_any_numeric_type_is_read_as_float64(
    tmp_path: Path, column: pa.Array, values: list[float]
) -> None:
    run_dir = _run_with(tmp_path, pa.table({"step": _steps(10, 11), "mse_loss": column}))
    data = runformat.read_losses(run_dir)
    assert data.skipped == []
    assert data.table.schema.field("mse_loss").type == pa.float64()
    assert data.table.column("mse_loss").to_pylist() == [4.0, 2.0, 1.0, *values]


def test_a_uint64_step_within_int64_is_read(tmp_path: Path) -> None:
    step = pa.array([10, 2**63 - 1], pa.uint64())
    data = runformat.read_losses(
        _run_with(tmp_path, pa.table({"step": step, "mse_loss": _floats(5, 6)}))
    )
    assert data.skipped == []
    assert data.table.column("step").to_pylist() == [0, 1, 2, 10, 2**63 - 1]


@pytest.mark.parametrize(
    "table",
    [
        pa.table({"step": _steps(), "mse_loss": _floats()}),
        pa.schema(
            [("step", pa.uint64()), ("wall_time", pa.timestamp("ns")), ("aux", pa.int8())]
        ).empty_table(),
    ],
    ids=["zero rows", "schema only"],
)
def test_a_shard_without_rows_adds_nothing_and_is_not_a_problem(
    tmp_path: Path, table: pa.Table
) -> None:
    data = runformat.read_losses(_run_with(tmp_path, table))
    assert data.skipped == []
    assert data.table.num_rows == GOOD_ROWS
    assert data.table.column("mse_loss").to_pylist() == [4.0, 2.0, 1.0]


def test_nested_or_non_numeric_loss_columns_are_skipped_and_the_rest_read(tmp_path: Path) -> None:
    table = pa.table(
        {
            "step": _steps(10),
            "mse_loss": _floats(0.5),
            "per_head": pa.array([[0.1, 0.2]]),
            "parts": pa.array([{"a": 1.0}]),
        }
    )
    data = runformat.read_losses(_run_with(tmp_path, table))
    assert data.loss_names == ["mse_loss"]
    assert data.table.column("mse_loss").to_pylist() == [4.0, 2.0, 1.0, 0.5]
    assert len(data.skipped) == 2
    assert "'per_head' of type list<element: double> is not a number" in data.skipped[0]


def test_nanosecond_wall_times_past_2_to_the_53_keep_their_nulls(tmp_path: Path) -> None:
    times = pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns", tz="UTC"))
    table = pa.table({"step": _steps(10, 11), "wall_time": times, "mse_loss": _floats(1, 2)})
    data = runformat.read_losses(_run_with(tmp_path, table))
    assert data.skipped == []
    assert data.table.column("wall_time").to_pylist()[3:] == [
        pytest.approx(1.7e9 + 0.123456789),
        None,
    ]


def test_a_column_name_that_is_not_utf8_makes_the_shard_skipped(tmp_path: Path) -> None:
    run_dir = _run_with(tmp_path, pa.table({"step": _steps(10), "mse_loss": _floats(0.5)}))
    shard = run_dir / runformat.LOSSES_DIR / "part-000002.parquet"
    table = pa.table({"step": _steps(10), "zzzzqq": _floats(0.5)})
    pq.write_table(table, shard, store_schema=False)  # the name only in Parquet's own schema
    written = shard.read_bytes()
    assert b"zzzzqq" in written  # in the schema and in the column chunk's path
    shard.write_bytes(written.replace(b"zzzzqq", b"\xff\xfezzqq"))  # another tool's bytes
    data = runformat.read_losses(run_dir)
    assert data.table.num_rows == GOOD_ROWS
    assert len(data.skipped) == 1 and data.skipped[0].startswith(f"{shard}: not a readable")


def test_only_the_step_wall_time_and_number_columns_are_decoded(tmp_path: Path) -> None:
    """A text or nested column can decode to any size (a dictionary of one long string), so it
    is named and never read; a name with a dot in it selects that column, not a nested one."""
    table = pa.table(
        {
            "step": _steps(10),
            "note": pa.array(["x" * 1000]).dictionary_encode(),
            "s.b": _floats(0.5),
            "s": pa.array([{"b": "text"}]),
        }
    )
    run_dir = _run_with(tmp_path, table)
    shard = run_dir / runformat.LOSSES_DIR / "part-000002.parquet"
    read = runformat.read_shard(shard)
    assert read.column_names == ["step", "s.b"]
    assert read.column("s.b").to_pylist() == [0.5]
    data = runformat.read_losses(run_dir)
    assert data.table.column("s.b").to_pylist() == [None, None, None, 0.5]
    assert data.skipped == [
        f"{shard}: column 'note' of type dictionary<values=string, indices=int32, ordered=0> "
        "is not a number, skipped",
        f"{shard}: column 's' of type struct<b: string> is not a number, skipped",
    ]


def test_shards_past_the_run_s_read_budget_are_named_and_the_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten shards of 20,000 rows, each some 490 KB once decoded, within a budget of 1 MiB."""
    run_dir = _run_with(tmp_path, pa.table({"step": _steps(), "mse_loss": _floats()}))
    shards = [run_dir / runformat.LOSSES_DIR / runformat.shard_name(seq) for seq in range(3, 13)]
    for seq, shard in enumerate(shards):
        steps = np.arange(20_000, dtype=np.int64) + 100_000 * (seq + 1)
        pq.write_table(
            pa.table(
                {"step": steps, "wall_time": np.full(20_000, 1.7e9), "mse_loss": np.ones(20_000)}
            ),
            shard,
        )
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "1M")
    data = runformat.read_losses(run_dir)
    each = 20_000 * 3 * (8 + 1 / 8)  # step, wall_time, mse_loss: values and validity
    spent = math.ceil(GOOD_ROWS * 3 * (8 + 1 / 8)) + 2 * int(each)  # the good shard, two more
    assert data.table.num_rows == GOOD_ROWS + 2 * 20_000
    assert (
        data.skipped
        == data.over_budget
        == [
            f"{shard}: would take {int(each):,} bytes once decoded, over the run's read budget of "
            f"1,048,576 bytes; {spent:,} of them taken by what was read before "
            "(LOSSREPORT_READ_BUDGET sets it); not read"
            for shard in shards[2:]
        ]
    )
