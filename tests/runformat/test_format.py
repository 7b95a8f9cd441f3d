from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossreport import runformat
from lossreport.errors import MalformedRunFileError
from tests.support.procs import ROOT


def _shard(run_dir: Path, seq: int, table: pa.Table, rank: int | None = None) -> None:
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True, exist_ok=True)
    runformat.write_shard(run_dir, seq, table, rank)


def _table(steps: list[int], **losses: list[float | None]) -> pa.Table:
    return pa.table(
        {
            "step": pa.array(steps, pa.int64()),
            "wall_time": pa.array([1.7e9 + s for s in steps], pa.float64()),
            **{name: pa.array(values, pa.float64()) for name, values in losses.items()},
        }
    )


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("tiny-stories-1L-21M", "tiny-stories-1L-21M"),
        ("blocks.0.hook_mlp_out", "blocks.0.hook_mlp_out"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c d", "a_b_c_d"),
        ("<img src=x>", "img_src_x"),
        ("...", "unnamed"),
        ("", "unnamed"),
        ("x" * 300, "x" * 100),
    ],
)
def test_clean_name_gives_one_safe_path_component(raw: str, cleaned: str) -> None:
    assert runformat.clean_name(raw) == cleaned


def test_shard_names_round_trip_and_temp_files_are_not_shards() -> None:
    assert runformat.shard_name(3) == "part-000003.parquet"
    assert runformat.shard_name(12, rank=2) == "part-000012-rank2.parquet"
    assert runformat.parse_shard_name("part-000012-rank2.parquet") == (12, 2)
    assert runformat.parse_shard_name(".part-000001.parquet.x1y2.tmp") is None
    assert runformat.parse_shard_name("_part-000001.parquet") is None


def test_losses_appearing_later_read_as_missing_before(tmp_path: Path) -> None:
    _shard(tmp_path, 1, _table([0, 1], mse_loss=[1.0, 0.5]))
    _shard(tmp_path, 2, _table([2, 3], mse_loss=[0.25, 0.125], aux_loss=[9.0, 8.0]))
    data = runformat.read_losses(tmp_path)
    assert data.loss_names == ["mse_loss", "aux_loss"]
    assert data.table.column("aux_loss").to_pylist() == [None, None, 9.0, 8.0]
    assert data.skipped == []


def test_a_repeated_step_keeps_its_last_write(tmp_path: Path) -> None:
    _shard(tmp_path, 1, _table([0, 1, 2, 3], mse_loss=[4.0, 3.0, 2.0, 1.0]))
    _shard(tmp_path, 2, _table([2, 3, 4], mse_loss=[20.0, 10.0, 0.0]))  # resumed from step 2
    table = runformat.read_losses(tmp_path).table
    assert table.column("step").to_pylist() == [0, 1, 2, 3, 4]
    assert table.column("mse_loss").to_pylist() == [4.0, 3.0, 20.0, 10.0, 0.0]


def test_nan_and_inf_survive_and_differ_from_missing(tmp_path: Path) -> None:
    _shard(tmp_path, 1, _table([0, 1, 2], mse_loss=[math.nan, math.inf, None]))
    values = runformat.read_losses(tmp_path).table.column("mse_loss")
    assert math.isnan(values[0].as_py())
    assert values[1].as_py() == math.inf
    assert values[2].as_py() is None


def test_shards_written_by_plain_pandas_are_read(tmp_path: Path) -> None:
    losses = tmp_path / runformat.LOSSES_DIR
    losses.mkdir()
    frame = pd.DataFrame(
        {
            "step": np.arange(5, dtype=np.int32),
            "mse_loss": np.linspace(1, 0, 5, dtype=np.float32),
            "note": ["a"] * 5,
        }
    )
    frame.to_parquet(losses / "part-000001.parquet")
    data = runformat.read_losses(tmp_path)
    assert data.table.schema.field("step").type == pa.int64()
    assert data.table.column("mse_loss").to_pylist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert data.table.column("wall_time").null_count == 5
    assert any("'note'" in note for note in data.skipped)


def test_timestamp_wall_times_become_seconds(tmp_path: Path) -> None:
    losses = tmp_path / runformat.LOSSES_DIR
    losses.mkdir()
    frame = pd.DataFrame(
        {"step": [1], "wall_time": pd.to_datetime([1.7e9], unit="s"), "mse_loss": [0.5]}
    )
    frame.to_parquet(losses / "part-000001.parquet")
    assert runformat.read_losses(tmp_path).table.column("wall_time").to_pylist() == [1.7e9]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "not a readable Parquet file"), (b"PAR1 garbage", "not a readable Parquet file")],
)
def test_unreadable_shards_are_skipped_and_named(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    _shard(tmp_path, 1, _table([0, 1], mse_loss=[1.0, 0.5]))
    bad = tmp_path / runformat.LOSSES_DIR / "part-000002.parquet"
    bad.write_bytes(content)
    data = runformat.read_losses(tmp_path)
    assert data.table.num_rows == 2
    assert len(data.skipped) == 1
    assert str(bad) in data.skipped[0] and reason in data.skipped[0]


def test_a_truncated_shard_is_skipped(tmp_path: Path) -> None:
    _shard(tmp_path, 1, _table(list(range(1000)), mse_loss=[0.5] * 1000))
    good = tmp_path / runformat.LOSSES_DIR / "part-000001.parquet"
    truncated = good.with_name("part-000002.parquet")
    truncated.write_bytes(good.read_bytes()[:-100])
    data = runformat.read_losses(tmp_path)
    assert data.table.num_rows == 1000
    assert [str(truncated) in note for note in data.skipped] == [True]


def test_a_shard_without_a_step_column_is_skipped(tmp_path: Path) -> None:
    losses = tmp_path / runformat.LOSSES_DIR
    losses.mkdir()
    pq.write_table(pa.table({"mse_loss": [1.0]}), losses / "part-000001.parquet")
    data = runformat.read_losses(tmp_path)
    assert data.table.num_rows == 0
    assert "has no 'step' column" in data.skipped[0]


def test_only_rank_zero_or_unranked_shards_make_the_history(tmp_path: Path) -> None:
    _shard(tmp_path, 1, _table([0], mse_loss=[1.0]), rank=0)
    _shard(tmp_path, 1, _table([0], mse_loss=[2.0]), rank=1)
    assert runformat.read_losses(tmp_path).table.column("mse_loss").to_pylist() == [1.0]


def test_a_run_without_shards_reads_as_empty(tmp_path: Path) -> None:
    data = runformat.read_losses(tmp_path)
    assert data.table.num_rows == 0
    assert data.loss_names == []


def test_run_file_round_trips(tmp_path: Path) -> None:
    record = runformat.RunRecord("r1", "model", "hook", "gated", {"l1": 5.0}, host="h", pid=4)
    runformat.write_run_file(tmp_path, record)
    assert runformat.read_run_file(tmp_path) == record
    assert json.loads((tmp_path / "run.json").read_text())["format"] == runformat.FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "other/9"}', "format is 'other/9'"),
        ('{"format": "lossreport.run/1", "run_id": 3}', "field 'run_id' must be a string"),
        (
            '{"format": "lossreport.run/1", "run_id": "r", "status": "done", "started_at": "x"}',
            "status 'done'",
        ),
        (
            '{"format": "lossreport.run/1", "run_id": "r", "status": "running", '
            '"started_at": "yesterday"}',
            "'started_at' is not an ISO 8601 time",
        ),
    ],
)
def test_malformed_run_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(MalformedRunFileError) as info:
        runformat.read_run_file(tmp_path)
    assert str(tmp_path / "run.json") in str(info.value)
    assert reason in str(info.value)


def test_a_missing_run_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(MalformedRunFileError, match="missing"):
        runformat.read_run_file(tmp_path)


def test_the_documented_minimal_writer_makes_a_run_lossreport_reads(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "run-directory-format.md").read_text()
    snippet = page.split("```python\n")[-1].split("```")[0]
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(snippet, "run-directory-format.md", "exec"), {})
    finally:
        os.chdir(cwd)
    run_dir = tmp_path / "runs" / "my-run"
    assert runformat.read_run_file(run_dir).status == "completed"
    data = runformat.read_losses(run_dir)
    assert data.skipped == []
    assert data.table.column("mse_loss").to_pylist() == [1.0, 0.5]


def _nested(levels: int) -> dict[str, object]:
    config: dict[str, object] = {"lr": "3e-4"}
    for _ in range(levels):
        config = {"c": config}
    return config


def test_run_json_nested_to_the_limit_is_read_and_one_level_more_is_refused(
    tmp_path: Path,
) -> None:
    """The depth check skips the walk for a file with fewer brackets than the limit (most
    run.json files): what it reads and refuses is as before, brackets in strings included."""
    record = runformat.RunRecord(run_id="r", model="m", hook="h")
    limit = runformat.MAX_RUN_FILE_DEPTH
    for levels, text in ((limit - 3, "plain"), (0, "[[[{{{" * limit), (limit - 3, "[" * 99)):
        record.config = {"config": _nested(levels), "note": text}  # 3 + levels deep
        runformat.write_run_file(tmp_path, record)
        assert runformat.read_run_file(tmp_path).config["note"] == text
    record.config = {"config": _nested(limit - 2)}
    runformat.write_run_file(tmp_path, record)
    with pytest.raises(MalformedRunFileError, match=f"nested deeper than {limit} levels"):
        runformat.read_run_file(tmp_path)
