"""The DVCLive source: run folders written by DVCLive itself in a subprocess, read back value
for value while it writes and after `end()`; and metric files as links, FIFOs, damaged or
unfinished files."""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from lossreport import sources
from lossreport.sources.base import quiet_status
from lossreport.sources.dvclive import DvcLiveSource
from tests.support import dvclive_trainer
from tests.support.deadline import fails_if_blocked
from tests.support.foreign import Logged, assert_same, values_of
from tests.support.optional import missing

try:
    import dvclive  # noqa: F401  (the subprocess imports it; skip here when it is missing)
except ImportError:
    missing("dvclive", "pip install -e '.[dev]'")

SOURCE = DvcLiveSource()


def test_every_value_dvclive_logged_is_read_with_its_params_as_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "gpt2-sweep" / "exp-7_ω" / "dvclive"
    logged = dvclive_trainer.write(run_dir, 9)
    found = sources.find(run_dir)
    assert SOURCE.is_run(run_dir) and found is not None and found.name == "dvclive"
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == [] and data.over_budget == []
    assert_same(values_of(data), logged)  # a NaN and an infinity among them
    assert math.isnan(values_of(data)["train/mse_loss"][3])
    table = data.table.to_pydict()
    assert table["step"] == list(range(9))
    assert all(wall is not None and wall > 1.7e9 for wall in table["wall_time"])  # timestamps

    record = SOURCE.read_record(run_dir)
    # the default dvclive/ folder is named by the folder above; the params name the model
    assert (record.run_id, record.model, record.hook) == ("exp-7_ω", "gelu-1l_ω", "")
    assert record.config == {"model_name": "gelu-1l_ω", "lr": 0.0004, "sae": {"d_sae": 4096}}
    assert record.status == "running" and record.finished_at is None


def test_a_run_being_written_is_read_and_running_and_silence_finishes_it(
    tmp_path: Path,
) -> None:
    """DVCLive writes nothing at end() that next_step() does not (sources/dvclive.py), so the
    status is the silence rule's; the run is read while DVCLive holds it open."""
    run_dir = tmp_path / "live" / "dvclive"
    process = dvclive_trainer.start(run_dir, 6, hold=True)
    try:
        logged = dvclive_trainer.logged_by(process)  # six steps done, end() not called yet
        inputs = SOURCE.inputs(run_dir)
        assert inputs.status == "running" and inputs.silence_finishes
        assert inputs.status_rule is not None and "DVCLive logs" in inputs.status_rule
        assert inputs.heartbeat is not None
        assert quiet_status(inputs, inputs.heartbeat + timedelta(seconds=5)) == "running"
        assert_same(values_of(SOURCE.read_losses(run_dir)), logged)
    finally:
        _, errors = process.communicate("\n", timeout=60)
    assert process.returncode == 0, errors
    ended = SOURCE.inputs(run_dir)
    assert ended.fingerprint != inputs.fingerprint  # end() rewrote metrics.json
    assert ended.heartbeat is not None
    assert quiet_status(ended, ended.heartbeat + timedelta(seconds=601)) == "completed"


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "exp" / "dvclive"
    (run_dir / "plots" / "metrics").mkdir(parents=True)
    return run_dir


def test_links_and_fifos_are_named_never_followed_and_never_block(tmp_path: Path) -> None:
    dummy = tmp_path / "dummy"
    (dummy / "metrics").mkdir(parents=True)
    (dummy / "metrics" / "loss.tsv").write_text("step\tloss\n0\t1.0\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "plots").symlink_to(dummy)
    assert not SOURCE.is_run(linked)  # plots/ a link: not entered
    run_dir = _run_dir(tmp_path)
    metrics = run_dir / "plots" / "metrics"
    (metrics / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n")
    (metrics / "linked.tsv").symlink_to(dummy / "metrics" / "loss.tsv")
    (metrics / "train").symlink_to(dummy / "metrics")
    os.mkfifo(metrics / "fifo.tsv")
    with fails_if_blocked():
        assert SOURCE.is_run(run_dir)
        inputs = SOURCE.inputs(run_dir)
        data = SOURCE.read_losses(run_dir)
    assert "fifo" not in inputs.fingerprint and "linked" not in inputs.fingerprint
    assert values_of(data) == {"loss": {0: 1.0, 1: 0.5}}
    text = "\n".join(data.skipped)
    assert f"{metrics / 'linked.tsv'}: is a symbolic link" in text
    assert f"{metrics / 'train'}: is a symbolic link" in text
    assert f"{metrics / 'fifo.tsv'}: is a FIFO" in text


def test_damaged_unfinished_and_foreign_files_are_named_and_the_rest_read(
    tmp_path: Path,
) -> None:
    run_dir = _run_dir(tmp_path)
    metrics = run_dir / "plots" / "metrics"
    (metrics / "loss.tsv").write_text(
        "step\tloss\n0\t1.0\n1\toops\n\t0.7\n2\t0.5\t9\n3\t-inf\n3\t0.25\n4\t0.1"  # last unfinished
    )
    (metrics / "not_dvclive.tsv").write_text("epoch\ta\tb\n0\t1\t2\n")
    (metrics / "empty.tsv").write_text("")
    (metrics / "notes.txt").write_text("not a metric\n")
    data = SOURCE.read_losses(run_dir)
    expected: Logged = {"loss": {0: 1.0, 3: 0.25}}  # step 3 logged twice: the later row
    assert_same(values_of(data), expected)
    text = "\n".join(data.skipped)
    assert "loss.tsv: 1 rows skipped: not as many fields as the header" in text
    assert "loss.tsv: 1 rows skipped: no whole-number step" in text
    assert "loss.tsv: 1 values that are not numbers skipped" in text
    assert "not_dvclive.tsv: not a DVCLive metric file" in text
    assert "empty.tsv" not in text and "notes.txt" not in text


@pytest.mark.parametrize("name", ["step", "wall_time"])
def test_a_metric_named_as_the_reports_own_column_is_left_out(tmp_path: Path, name: str) -> None:
    run_dir = _run_dir(tmp_path)
    (run_dir / "plots" / "metrics" / f"{name}.tsv").write_text(f"step\t{name}\n0\t1.0\n")
    (run_dir / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n0\t2.0\n")
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"loss": {0: 2.0}}
    assert any(f"metric {name!r} left out" in line for line in data.skipped)


def test_runs_are_found_at_any_depth_and_not_below_a_run(tmp_path: Path) -> None:
    for key in ("a/dvclive", "b/c/d/custom_dir"):
        (tmp_path / key / "plots" / "metrics" / "inner" / "plots" / "metrics").mkdir(parents=True)
    found = [path.relative_to(tmp_path).as_posix() for path in sources.list_runs(tmp_path)]
    assert found == ["a/dvclive", "b/c/d/custom_dir"]
    record = SOURCE.read_record(tmp_path / "b/c/d/custom_dir")  # no params.yaml: no config
    assert (record.run_id, record.model, record.config) == ("custom_dir", "d", {})


def test_a_metric_file_past_the_read_budget_is_named_and_the_others_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a file takes once parsed is charged before it is parsed (a 2 MB file: some 10 MB)."""
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "4M")
    run_dir = _run_dir(tmp_path)
    rows = "".join(f"{step}\t{1.0 / (step + 1)}\n" for step in range(100_000))
    (run_dir / "plots" / "metrics" / "big.tsv").write_text(f"step\tbig\n{rows}")
    (run_dir / "plots" / "metrics" / "small.tsv").write_text("step\tsmall\n0\t1.0\n")
    data = SOURCE.read_losses(run_dir)
    assert values_of(data) == {"small": {0: 1.0}}
    (refused,) = data.over_budget
    assert refused.startswith(f"{run_dir / 'plots' / 'metrics' / 'big.tsv'}: would take ")
    assert refused in data.skipped


def test_each_files_parse_is_given_back_so_many_files_fit_that_each_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three files, each parsed within the budget but not all three at once: the budget holds
    each file's parse only while it runs, and every file's rows after."""
    monkeypatch.setenv("LOSSREPORT_READ_BUDGET", "4M")
    run_dir = _run_dir(tmp_path)
    logged: Logged = {}
    for index in range(3):
        name = f"loss_{index}"
        logged[name] = {step: (index + 1) / (step + 1) for step in range(20_000)}
        rows = "".join(f"{step}\t{value!r}\n" for step, value in logged[name].items())
        (run_dir / "plots" / "metrics" / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    data = SOURCE.read_losses(run_dir)
    assert data.skipped == [] and data.over_budget == []
    assert_same(values_of(data), logged)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """New bytes, as many, in the same file, its time put back: what only a read can see."""
    before = path.stat()
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_read_with_nothing_new_maps_the_last_table_and_a_change_is_read(
    tmp_path: Path,
) -> None:
    """While no metric file changed (name, inode, size, time), a read with a cache maps the
    last read's table and opens no metric file: one rewritten meanwhile at the same size and
    time still gives the values kept. A file that grew is read; one written in the last two
    seconds is read every time (rewritten within its time's tick, it would look the same)."""
    run_dir = tmp_path / "exp" / "dvclive"
    logged = dvclive_trainer.write(run_dir, 9)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for path in run_dir.rglob("*"):
        os.utime(path, ns=(an_hour_ago, an_hour_ago))
    cache = tmp_path / "cache"
    first = SOURCE.read_losses(run_dir, cache)
    mse = run_dir / "plots" / "metrics" / "train" / "mse_loss.tsv"
    _rewrite_in_place(mse, mse.read_bytes().replace(b"0.", b"9."))
    again = SOURCE.read_losses(run_dir, cache)
    assert again.skipped == first.skipped == []
    assert repr(again.table.to_pydict()) == repr(first.table.to_pydict())
    assert_same(values_of(again), logged)

    with mse.open("ab") as handle:  # grown, and written just now
        handle.write(b"9\t0.25\n")
    grown = SOURCE.read_losses(run_dir, cache)
    assert values_of(grown)["train/mse_loss"][9] == 0.25
    assert values_of(grown)["train/mse_loss"][1] == pytest.approx(9 + logged["train/mse_loss"][1])
    _rewrite_in_place(mse, mse.read_bytes().replace(b"0.25", b"0.75"))
    assert values_of(SOURCE.read_losses(run_dir, cache))["train/mse_loss"][9] == 0.75
