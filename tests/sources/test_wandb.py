"""W&B run folders, written by the real wandb package (offline, in child processes): every
logged value read and in the report's CSV, the run's names and end, a resumed run, a killed
process, the log read while written, and the log's damage named."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import lossreport
from lossreport.errors import MalformedRunFileError
from lossreport.runformat import LossData
from lossreport.sources import wandb_log, what_is_not_a_run
from lossreport.sources.wandb_runs import CACHE_FOLDER, HEAD_BYTES, Tail, WandbSource
from tests.support.daemon import ROOT
from tests.support.foreign import assert_all_logged, assert_same, csv_values, values_of
from tests.support.optional import missing
from tests.support.procs import wait_for
from tests.support.wandb_writer import (
    CONFIG,
    NAME,
    NAN_STEP,
    PROJECT,
    STEPS,
    part_logged,
    scalars_logged,
    wandb_env,
)

if wandb_log.load_codec() is None:
    missing("wandb", "pip install -e '.[wandb]'")

SOURCE = WandbSource()
SYSTEM = ("_runtime",)  # what W&B adds to every history record


@dataclass(frozen=True)
class Written:
    root: Path
    scalars: Path
    parts: list[Path]  # the first process's folder, then the resumed one's
    crashed: Path


def write(root: Path, plan: str, run_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.wandb_writer", plan, run_id, *args],
        cwd=ROOT,
        env=wandb_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> None:
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]


def folders(root: Path, run_id: str) -> list[Path]:
    return sorted((root / "wandb").glob(f"*run-*-{run_id}"))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    """The runs every test here reads, written once (W&B takes seconds to start): a finished
    run, one resumed by a second process, one whose process was killed."""
    root = tmp_path_factory.mktemp("wandb-runs")
    crash = write(root, "crash", "crash1")
    scalars = write(root, "scalars", "sae7run")
    first = write(root, "part", "resume1", "0", "9")
    try:
        finish(first)
        resumed = write(root, "part", "resume1", "10", "19")
        finish(scalars)
        finish(resumed)
        assert crash.stdout is not None and crash.stdout.readline() == "logged\n"
        (crashed,) = folders(root, "crash1")
        wait_for(lambda: len(SOURCE.read_losses(crashed).table) == 29, timeout=30)
    finally:
        for process in (crash, scalars, first):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.communicate()
    (scalars_dir,) = folders(root, "sae7run")
    yield Written(root, scalars_dir, folders(root, "resume1"), crashed)


def read_values(run_dir: Path, cache: Path | None = None) -> dict[str, dict[int, float]]:
    found = values_of(SOURCE.read_losses(run_dir, cache))
    for name in SYSTEM:
        found.pop(name)
    return found


def test_every_value_wandb_logged_is_read_at_its_step(written: Written) -> None:
    run_dir = written.scalars
    assert SOURCE.is_run(run_dir) and run_dir.name.startswith("offline-run-")
    assert not SOURCE.is_run(written.root / "wandb" / "latest-run")  # a link
    assert not SOURCE.is_run(written.root / "wandb")
    data = SOURCE.read_losses(run_dir)
    assert_same(read_values(run_dir), scalars_logged())
    # The histogram is named, not read; _runtime is kept (a series, not a loss).
    assert data.skipped == [
        f"{run_dir / 'run-sae7run.wandb'}: weights: W&B media (histogram), not a number; not read"
    ]
    walls = data.table.column("wall_time").to_pylist()
    assert all(1.7e9 < wall < 2.2e9 for wall in walls)  # _timestamp, in POSIX seconds


def test_the_run_is_named_configured_and_finished_as_wandb_recorded_it(
    written: Written,
) -> None:
    record = SOURCE.read_record(written.scalars)
    assert record.run_id == NAME and record.model == CONFIG["model_name"]
    assert record.hook == CONFIG["hook_name"] and record.status == "completed"
    assert record.config["wandb.id"] == "sae7run" and record.config["wandb.project"] == PROJECT
    assert {k: record.config[k] for k in CONFIG} == CONFIG
    summary = record.config["wandb.summary"]
    assert summary["best_mse"] == 0.04 and summary["losses/mse_loss"] == 2.0 / STEPS
    assert record.finished_at is not None and record.started_at <= record.finished_at
    inputs = SOURCE.inputs(written.scalars)
    assert inputs.status == "completed" and inputs.status_rule == "W&B exit record: exit code 0"
    assert not inputs.silence_finishes and "run-sae7run.wandb:" in inputs.fingerprint


def test_the_report_csv_holds_every_logged_value(written: Written, tmp_path: Path) -> None:
    result = lossreport.render_run(written.scalars, output=tmp_path / "out")
    found = csv_values(result.csv)
    logged = scalars_logged()
    for name, by_step in logged.items():
        assert sorted(found[name]) == sorted(by_step), name
        for step, value in by_step.items():
            got = found[name][step]
            assert got == pytest.approx(value, rel=1e-12) or (math.isnan(got) and math.isnan(value))
    assert math.isnan(found["losses/overall_loss"][NAN_STEP])
    assert result.run["source"] == "W&B run log"
    drawn = " ".join(path.name for path in result.charts)
    assert "overall_loss" in drawn and "_runtime" not in drawn and "learning_rate" not in drawn


def test_a_resumed_run_is_read_in_both_of_its_folders(written: Written, tmp_path: Path) -> None:
    first, resumed = written.parts
    assert first.name < resumed.name and all(SOURCE.is_run(path) for path in written.parts)
    assert read_values(first) == part_logged(0, 9)
    assert read_values(resumed) == part_logged(10, 19)
    for run_dir, logged in ((first, part_logged(0, 9)), (resumed, part_logged(10, 19))):
        result = lossreport.render_run(run_dir, output=tmp_path / run_dir.name)
        assert_all_logged(result.csv, logged)
    assert SOURCE.read_record(resumed).config["wandb.id"] == "resume1"
    assert SOURCE.inputs(resumed).status == "completed"


def test_a_killed_process_leaves_a_running_run_that_goes_stalled(written: Written) -> None:
    inputs = SOURCE.inputs(written.crashed)
    assert inputs.status == "running" and not inputs.silence_finishes
    assert inputs.status_rule is not None and "crashed" in inputs.status_rule
    # W&B commits a step's row when the next step is logged: the last one died with it.
    assert read_values(written.crashed) == part_logged(0, 28)
    record = SOURCE.read_record(written.crashed)
    assert record.status == "running" and record.finished_at is None


def _log_of(run_dir: Path) -> Path:
    (log,) = run_dir.glob("run-*.wandb")
    return log


def test_a_log_being_written_is_read_up_to_its_last_whole_record_then_only_what_is_new(
    written: Written, tmp_path: Path
) -> None:
    whole = _log_of(written.scalars).read_bytes()
    run_dir = tmp_path / "wandb" / written.scalars.name
    run_dir.mkdir(parents=True)
    log = run_dir / _log_of(written.scalars).name
    cache = tmp_path / "cache"
    seen = []
    tail, followed = Tail(), []  # what the daemon's alerts read: only the new rows each time
    # Grown in pieces that cut fragments and records anywhere (a torn last record waits).
    for end in (3, 7, 100, 5_000, 32_770, 65_536, len(whole) - 3, len(whole)):
        with log.open("ab") as handle:
            handle.write(whole[log.stat().st_size if log.exists() else 0 : end])
        data = SOURCE.read_losses(run_dir, cache)
        assert all("W&B media" in line for line in data.skipped), data.skipped
        seen.append(data.table.num_rows)
        followed.append(SOURCE.read_new(run_dir, tail))
    assert seen == sorted(seen) and seen[0] == 0 and seen[3] < seen[-1] == STEPS
    assert_same(read_values(run_dir, cache), scalars_logged())
    # Each value once, across the follower's reads (eval/loss lands at earlier steps: its
    # step metric's values).
    merged: dict[str, dict[int, float]] = {}
    for table in followed:
        for name, by_step in values_of(LossData(table, [])).items():
            assert not set(merged.get(name, {})) & set(by_step), name
            merged.setdefault(name, {}).update(by_step)
    merged.pop("_runtime")
    assert_same(merged, scalars_logged())
    parts = sorted(p.name for p in (cache / CACHE_FOLDER).iterdir() if p.suffix == ".parquet")
    grew = sum(after > before for before, after in zip([0, *seen], seen, strict=False))
    assert len(parts) == grew  # a part per read that found rows: each parsed only new bytes
    # Replaced by a shorter log (another inode): read again from its start.
    log.unlink()
    log.write_bytes(whole[:5_000])
    assert SOURCE.read_losses(run_dir, cache).table.num_rows == seen[3]


def test_a_read_with_nothing_new_maps_the_last_table_and_reads_no_part(
    written: Written, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing new (the log ends in a record still being written): the last read's table,
    kept whole, is returned without a part being read (each is garbage meanwhile: read, it
    would be named and the log read again) or the state written. What is appended after is
    read, only it; a replaced log is read from its start, never answered by the kept table."""
    whole = _log_of(written.scalars).read_bytes()
    run_dir = tmp_path / "wandb" / written.scalars.name
    run_dir.mkdir(parents=True)
    log = run_dir / _log_of(written.scalars).name
    cut = 2 * wandb_log.BLOCK_BYTES + 1000  # inside a record: it waits
    log.write_bytes(whole[:cut])
    cache = tmp_path / "cache"
    first = SOURCE.read_losses(run_dir, cache)
    assert 0 < first.table.num_rows < STEPS
    folder = cache / CACHE_FOLDER
    state = (folder / "state.json").stat()
    parts = {part: part.read_bytes() for part in folder.glob("*.parquet")}
    for part in parts:
        part.write_bytes(b"not parquet")
    with caplog.at_level("WARNING"):
        again = SOURCE.read_losses(run_dir, cache)
    assert caplog.records == []
    assert again.table.schema == first.table.schema and again.skipped == first.skipped
    assert repr(again.table.to_pydict()) == repr(first.table.to_pydict())  # NaN where NaN was
    assert (folder / "state.json").stat().st_mtime_ns == state.st_mtime_ns
    for part, data in parts.items():
        part.write_bytes(data)
    with log.open("ab") as handle:
        handle.write(whole[cut:])
    assert_same(read_values(run_dir, cache), scalars_logged())
    assert len(list(folder.glob("*.parquet"))) == len(parts) + 1  # the new records only
    assert SOURCE.read_losses(run_dir, cache).table.num_rows == STEPS  # nothing new again
    log.unlink()
    log.write_bytes(_log_of(written.parts[0]).read_bytes())  # another run's log
    assert read_values(run_dir, cache) == part_logged(0, 9)


def test_the_record_of_a_grown_log_is_read_from_where_the_last_read_ended(
    written: Written, tmp_path: Path
) -> None:
    """A training run's renders read its name, config and end at the cost of what it logged
    since: the records read before are not read again (here they are garbage meanwhile,
    behind the same first bytes: read again, the run's name and config would be lost). A
    replaced log is read from its start."""
    whole = _log_of(written.scalars).read_bytes()
    run_dir = tmp_path / "wandb" / written.scalars.name
    run_dir.mkdir(parents=True)
    log = run_dir / _log_of(written.scalars).name
    cut = 2 * wandb_log.BLOCK_BYTES + 1000
    log.write_bytes(whole[:cut])
    first = SOURCE.read_record(run_dir)
    assert (first.run_id, first.model, first.status) == (NAME, CONFIG["model_name"], "running")
    with log.open("r+b") as handle:
        handle.seek(HEAD_BYTES)
        handle.write(b"\xaa" * (wandb_log.BLOCK_BYTES - HEAD_BYTES))
        handle.seek(0, os.SEEK_END)
        handle.write(whole[cut:])
    grown = SOURCE.read_record(run_dir)
    assert (grown.run_id, grown.model, grown.status) == (NAME, CONFIG["model_name"], "completed")
    assert grown.config["wandb.summary"]["best_mse"] == 0.04
    log.unlink()
    log.write_bytes(_log_of(written.parts[0]).read_bytes())  # another run's log
    assert SOURCE.read_record(run_dir).config["wandb.id"] == "resume1"


def _inside_a_fragment(data: bytearray, block: int) -> int:
    """A byte of the data of the first fragment of 8 bytes or more in the block at `block`
    (a fixed offset may fall on a fragment's header, whose damage reads otherwise)."""
    at = block
    while (length := int.from_bytes(data[at + 4 : at + 6], "little")) < 8:
        at += wandb_log.FRAGMENT_HEADER_BYTES + length
    return at + wandb_log.FRAGMENT_HEADER_BYTES + length // 2


def test_a_damaged_fragment_is_named_and_the_rest_of_the_log_read(
    written: Written, tmp_path: Path
) -> None:
    data = bytearray(_log_of(written.scalars).read_bytes())
    assert len(data) > 2 * wandb_log.BLOCK_BYTES
    data[_inside_a_fragment(data, wandb_log.BLOCK_BYTES)] ^= 0xFF  # of the second block
    run_dir = tmp_path / "wandb" / written.scalars.name
    run_dir.mkdir(parents=True)
    (run_dir / _log_of(written.scalars).name).write_bytes(bytes(data))
    read = SOURCE.read_losses(run_dir, tmp_path / "cache")
    problems = [line for line in read.skipped if "fails its checksum" in line]
    assert len(problems) == 1 and "the rest of its block is skipped" in problems[0]
    steps = read.table.column("step").to_pylist()
    assert 0 in steps and STEPS - 1 in steps and len(steps) < STEPS  # before and after the damage
    again = SOURCE.read_losses(run_dir, tmp_path / "cache")  # nothing new: still named
    assert again.skipped == read.skipped and again.table.column("step").to_pylist() == steps


def test_a_file_that_is_not_a_wandb_log_is_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "wandb" / "run-20260101_000000-abc"
    run_dir.mkdir(parents=True)
    (run_dir / "run-abc.wandb").write_bytes(b"PK\x03\x04 not a log at all")
    data = SOURCE.read_losses(run_dir)
    assert data.table.num_rows == 0 and len(data.skipped) == 1
    assert "not a W&B transaction log" in data.skipped[0]
    with pytest.raises(MalformedRunFileError, match="not a W&B transaction log"):
        SOURCE.read_record(run_dir)


def test_a_linked_or_fifo_log_is_not_a_run_and_never_blocks(
    written: Written, tmp_path: Path
) -> None:
    run_dir = tmp_path / "wandb" / "run-20260101_000000-abc"
    run_dir.mkdir(parents=True)
    os.mkfifo(run_dir / "run-abc.wandb")
    assert not SOURCE.is_run(run_dir)
    assert f"{run_dir / 'run-abc.wandb'}: not a regular file (a FIFO)" in what_is_not_a_run(
        tmp_path
    )
    (run_dir / "run-abc.wandb").unlink()
    (run_dir / "run-abc.wandb").symlink_to(_log_of(written.scalars))
    assert not SOURCE.is_run(run_dir)
    assert "cannot be read" in SOURCE.read_losses(run_dir).skipped[0]


def test_without_the_extra_a_run_is_listed_and_render_says_so_in_one_line(
    written: Written, tmp_path: Path
) -> None:
    blocked = (
        "import sys; sys.modules['wandb'] = None; from lossreport.__main__ import main; "
        "sys.exit(main())"
    )
    run_dir = tmp_path / written.scalars.name
    shutil.copytree(written.scalars, run_dir)
    result = subprocess.run(
        [sys.executable, "-c", blocked, "render", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'watcher'}:{ROOT}"},
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "wandb extra" in line]
    assert lines == [
        f"lossreport: {run_dir}: reading W&B runs needs the wandb extra: "
        "pip install 'lossreport[wandb]'"
    ], result.stderr
    assert not (run_dir / "loss_graphs").exists()
