"""The native source: lossreport's own run folders, as the daemon and the renderer see them."""

from __future__ import annotations

from pathlib import Path

import lossreport
from lossreport import runformat, sources
from lossreport.daemon.runstate import read_state
from lossreport.sources.native import stat_fingerprint
from tests.support.procs import start_python


def test_the_fingerprint_changes_with_every_input_and_only_with_inputs(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    before = read_state(run.path)
    (run.path / "loss_graphs").mkdir()
    (run.path / "loss_graphs" / "x.png").write_bytes(b"")
    (run.path / "losses" / ".part-000002.parquet.tmp").write_bytes(b"half")
    assert read_state(run.path).fingerprint == before.fingerprint
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(1, mse_loss=1.0)
    assert read_state(run.path).fingerprint != before.fingerprint


def test_the_fingerprint_from_stats_alone_is_the_one_read_with_run_json(
    runs_dir: Path, tmp_path: Path
) -> None:
    """What a restarted daemon compares (no run.json read) is the fingerprint of a full look,
    whatever the folder holds: alerts, a linked shard, losses that are a file, nothing."""
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    (tmp_path / "elsewhere.parquet").write_bytes(b"x")
    (run.path / "losses" / "part-000009.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    runformat.append_alert_log(run.path, [{"rule": "stalled", "detail": "d"}])
    odd = runs_dir / "odd"
    odd.mkdir()
    (odd / runformat.LOSSES_DIR).write_bytes(b"a file")
    for folder in (run.path, odd, runs_dir / "gone"):
        assert stat_fingerprint(folder)[0] == sources.NATIVE.inputs(folder).fingerprint
    assert "part-000009.parquet" in stat_fingerprint(run.path)[0]


def test_a_run_folder_is_found_and_anything_else_is_not(runs_dir: Path, tmp_path: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
    (runs_dir / "not-a-run").mkdir()
    (runs_dir / ".lossreport").mkdir()
    dummy = tmp_path / "dummy"
    (dummy / "losses").mkdir(parents=True)  # would be a run, but is reached through a link
    (runs_dir / "linked").symlink_to(dummy, target_is_directory=True)
    assert sources.find(run.path) is sources.NATIVE
    assert sources.find(runs_dir / "not-a-run") is None
    assert sources.find(runs_dir / "linked") is None
    assert sources.list_runs(runs_dir) == [run.path]


def test_the_native_source_reads_what_the_trainer_wrote(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(0, mse_loss=1.0)
        run.log(1, mse_loss=0.5)
    inputs = sources.NATIVE.inputs(run.path)
    assert inputs.status == "completed" and inputs.heartbeat is not None
    assert sources.NATIVE.read_record(run.path).run_id == "r"
    data = sources.NATIVE.read_losses(run.path)
    assert data.table.column("mse_loss").to_pylist() == [1.0, 0.5] and data.skipped == []


def test_a_run_json_replaced_while_it_is_looked_at_gives_the_status_of_the_version_stated(
    runs_dir: Path,
) -> None:
    """A look stats run.json, then reads it. A trainer that replaces it in between (its last
    write says completed) must not give the old version's fingerprint with the new status:
    the render would record that fingerprint, and the next look, seeing the new one, would
    render the finished run a second time. A second process replaces run.json while this one
    looks, every 0.1 ms or so (a trainer does every few seconds; at random, so that the looks
    do not fall into step with it); every look must pair a version's size with that version's
    status (the two versions differ in size). Ten shards make the time between the stat and
    the read long enough for the race to be lost often."""
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        for step in range(10):
            run.log(step, mse_loss=1.0)
            run.flush()
    versions = {}
    for status in (runformat.RUNNING, runformat.COMPLETED):
        record = runformat.read_run_file(run.path)
        record.status = status
        text = record.to_json().encode()
        versions[len(text)] = status
        (run.path / f"{status}.json").write_bytes(text)
        runformat.write_run_file(run.path, record)  # so run.json is always one of the two
    assert len(versions) == 2
    swapper = start_python(
        "-c",
        "import os, random, sys, time\n"
        "folder, end = sys.argv[1], time.monotonic() + 30\n"
        "print('go', flush=True)\n"
        "while time.monotonic() < end:\n"
        "    for name in ('running.json', 'completed.json'):\n"
        "        with open(os.path.join(folder, name), 'rb') as f: data = f.read()\n"
        "        with open(os.path.join(folder, '.swap'), 'wb') as f: f.write(data)\n"
        "        os.replace(os.path.join(folder, '.swap'), os.path.join(folder, 'run.json'))\n"
        "        time.sleep(random.uniform(0, 0.0002))\n",
        str(run.path),
    )
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == "go\n"
        paired = []
        for _ in range(30_000):
            inputs = sources.NATIVE.inputs(run.path)
            size = int(inputs.fingerprint.split("|")[0].split(":")[1])
            paired.append((versions[size], inputs.status))
    finally:
        swapper.kill()
        swapper.wait()
    mismatched = [pair for pair in paired if pair[0] != pair[1]]
    assert len({status for _, status in paired}) == 2  # the race was run, both ways
    assert mismatched == []
