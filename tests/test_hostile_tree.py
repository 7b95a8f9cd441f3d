"""A shared runs tree is hostile ground: links, FIFOs, folders where files belong, runs that
vanish. The renderer and the daemon must never act through a link, never block, and keep
whatever is wrong with one run to that run. Links point only at dummy folders in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import lossreport
from lossreport import rundir
from lossreport.errors import RunBusy, UnsafePathError
from lossreport.outbox import Outbox
from lossreport.render import render_lock, render_run
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.deadline import fails_if_blocked
from tests.support.procs import wait_for


def _finished_run(runs_dir: Path, run_id: str, steps: int = 50) -> Path:
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id=run_id) as run:
        for step in range(steps):
            run.log(step, mse_loss=1.0 / (step + 1))
    return run.path


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its contents, to prove nothing there changed."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def dummy(tmp_path: Path) -> Path:
    """A folder standing for someone else's data (a config directory, a home)."""
    folder = tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.conf").write_text("keep me\n")
    (folder / "sub" / "nested.txt").write_text("me too\n")
    (folder / "loss_curves_x.png").write_bytes(b"not ours either")
    return folder


def test_a_loss_graphs_symlink_is_refused_and_its_target_left_whole(
    runs_dir: Path, dummy: Path
) -> None:
    run_dir = _finished_run(runs_dir, "linked")
    (run_dir / "loss_graphs").symlink_to(dummy)
    before = _snapshot(dummy)

    with pytest.raises(UnsafePathError, match=r"loss_graphs.*symbolic link"):
        render_run(run_dir)

    assert _snapshot(dummy) == before
    assert (run_dir / "loss_graphs").is_symlink()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".loss_graphs")]


def test_the_daemon_refuses_a_linked_run_names_it_in_the_index_and_renders_the_rest(
    runs_dir: Path, dummy: Path
) -> None:
    linked = _finished_run(runs_dir, "linked")
    (linked / "loss_graphs").symlink_to(dummy)
    good = _finished_run(runs_dir, "good")
    before = _snapshot(dummy)

    result = run_once(runs_dir)

    assert result.returncode == 1, result.stderr  # a run could not be rendered
    assert _snapshot(dummy) == before
    assert (good / "loss_graphs").is_dir()
    index = (runs_dir / "index.html").read_text()
    assert "not rendered" in index and "symbolic link" in index
    assert "Traceback" not in result.stderr


def test_a_lock_file_that_is_a_symlink_creates_nothing_at_its_target(
    runs_dir: Path, tmp_path: Path
) -> None:
    run_dir = _finished_run(runs_dir, "r")
    target = tmp_path / "elsewhere" / "created-by-lossreport"
    target.parent.mkdir()
    (run_dir / ".lossreport-render.lock").symlink_to(target)

    with pytest.raises(UnsafePathError):
        render_run(run_dir)
    assert not target.exists()


def test_a_fifo_as_lock_file_is_refused_without_blocking(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    os.mkfifo(run_dir / ".lossreport-render.lock")
    with fails_if_blocked(), pytest.raises(UnsafePathError, match="FIFO"):
        render_run(run_dir)


def test_render_lock_is_still_exclusive(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    with render_lock(run_dir, wait=False), pytest.raises(RunBusy):
        render_run(run_dir, wait=False)


def test_a_linked_run_directory_is_not_a_run(runs_dir: Path, tmp_path: Path) -> None:
    real = _finished_run(tmp_path / "other-runs", "theirs")
    (runs_dir / "alias").symlink_to(real)
    assert rundir.list_run_dirs(runs_dir) == []
    with pytest.raises(lossreport.RunDirectoryError, match="symbolic link"):
        render_run(runs_dir / "alias")
    assert not (real / "loss_graphs").exists()


@pytest.mark.parametrize("kind", ["fifo", "deep", "huge", "link", "folder"])
def test_a_hostile_run_json_is_reported_and_never_blocks(
    runs_dir: Path, tmp_path: Path, kind: str
) -> None:
    run_dir = _finished_run(runs_dir, "r")
    run_file = run_dir / "run.json"
    text = run_file.read_text()
    run_file.unlink()
    if kind == "fifo":
        os.mkfifo(run_file)
    elif kind == "deep":
        run_file.write_text('{"config": ' + "[" * 1000 + "]" * 1000 + "}")
    elif kind == "huge":  # valid, but past the 16 MiB limit: not read at all
        document = {**json.loads(text), "model": "SECRET", "config": {"blob": "x" * 17 * 2**20}}
        run_file.write_text(json.dumps(document))
    elif kind == "link":  # another user's file, which the daemon could read for them
        secret = tmp_path / "secret.json"
        secret.write_text(json.dumps({**json.loads(text), "model": "SECRET"}))
        run_file.symlink_to(secret)
    else:
        run_file.mkdir()

    with fails_if_blocked():
        result = render_run(run_dir)

    assert any("run.json" in problem for problem in result.problems), result.problems
    assert "SECRET" not in result.report.read_text()
    assert result.stats["losses"]["mse_loss"]["final"] == pytest.approx(1 / 50)


@pytest.mark.parametrize("kind", ["fifo", "link", "folder"])
def test_a_shard_that_is_not_a_regular_file_is_skipped_and_named(
    runs_dir: Path, tmp_path: Path, kind: str
) -> None:
    run_dir = _finished_run(runs_dir, "r")
    shard = run_dir / "losses" / "part-999999.parquet"
    if kind == "fifo":
        os.mkfifo(shard)
    elif kind == "link":  # another user's readable file, which the daemon could read for them
        theirs = tmp_path / "theirs.parquet"
        shutil.copy(next((run_dir / "losses").glob("part-*.parquet")), theirs)
        shard.symlink_to(theirs)
    else:
        shard.mkdir()

    with fails_if_blocked():
        result = render_run(run_dir)

    assert [problem for problem in result.problems if "part-999999" in problem], result.problems
    assert result.stats["total_steps"] == 50


def test_losses_that_is_a_link_is_not_read(runs_dir: Path, tmp_path: Path) -> None:
    theirs = _finished_run(tmp_path / "other", "theirs")
    run_dir = _finished_run(runs_dir, "r")
    shutil.rmtree(run_dir / "losses")
    (run_dir / "losses").symlink_to(theirs / "losses")

    result = render_run(run_dir)

    assert any("losses" in problem and "symbolic link" in problem for problem in result.problems)
    assert result.stats["total_steps"] == 0


def test_one_run_json_nested_1000_deep_does_not_stop_the_daemon(runs_dir: Path) -> None:
    runs = [_finished_run(runs_dir, f"run-{n:02d}", steps=5) for n in range(6)]
    (runs[2] / "run.json").write_text('{"format": "x", "a": ' + "[" * 1000 + "]" * 1000 + "}")
    (runs[4] / "run.json").write_text(
        '{"format": "' + rundir.FORMAT + '", ' + '"c":{' * 999 + "}" * 1000
    )

    result = run_once(runs_dir)

    assert result.returncode == 0, result.stderr
    for run_dir in runs:
        assert (run_dir / "loss_graphs").is_dir(), run_dir


def test_the_outbox_is_never_followed_through_a_link(runs_dir: Path, dummy: Path) -> None:
    from email.message import EmailMessage

    (runs_dir / ".lossreport").symlink_to(dummy)
    before = _snapshot(dummy)
    message = EmailMessage()
    message["X-Lossreport-Key"] = "k"
    with pytest.raises(UnsafePathError):
        Outbox(runs_dir).add(message)
    assert _snapshot(dummy) == before
    assert Outbox(runs_dir).pending() == []


def test_a_negative_duration_is_not_shown(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    record = rundir.read_run_file(run_dir)
    record.finished_at = "2000-01-01T00:00:00+00:00"
    rundir.write_run_file(run_dir, record)
    assert render_run(run_dir).run["duration"] is None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_runs_that_vanish_before_their_render_are_forgotten(runs_dir: Path, tmp_path: Path) -> None:
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        daemon.wait_for_event("watching")
        brief = [_finished_run(runs_dir, f"brief-{n:02d}", steps=2) for n in range(20)]
        # One worker renders them in turn: most are still queued when they are deleted.
        wait_for(lambda: len(daemon.events("render_started")) >= len(brief), timeout=60)
        for run_dir in brief:
            shutil.rmtree(run_dir)
        survivor = _finished_run(runs_dir, "survivor", steps=2)
        wait_rendered(survivor, "completed")
        assert not [p for p in runs_dir.iterdir() if p.name.startswith("brief")]  # none recreated
        # Each vanished run used to be retried every 10 ms for ever (14% CPU when idle).
        start_cpu, start = _cpu_seconds(daemon.process.pid), time.monotonic()
        wait_for(lambda: time.monotonic() - start > 5, timeout=10, interval=0.5)
        used = _cpu_seconds(daemon.process.pid) - start_cpu
        assert used < 0.25, f"idle daemon used {used:.2f}s CPU in 5s"
        assert daemon.process.poll() is None
    finally:
        daemon.stop()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_with_a_sigkilled_daemon(runs_dir: Path, tmp_path: Path) -> None:
    run_dir = _finished_run(runs_dir, "r", steps=5)
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        wait_rendered(run_dir, "completed")
        children = _children(daemon.process.pid)
        assert children  # the render worker (and the resource tracker)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait()
        wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20)
    finally:
        if daemon.process.poll() is None:
            daemon.kill_everything()


def test_a_renamed_run_shows_its_new_name_in_the_index(runs_dir: Path, tmp_path: Path) -> None:
    run_dir = _finished_run(runs_dir, "before", steps=5)
    daemon = Daemon(runs_dir, log=tmp_path / "daemon.log")
    try:
        wait_rendered(run_dir, "completed")
        index = runs_dir / "index.html"
        wait_for(lambda: index.exists() and ">before<" in index.read_text())
        run_dir.rename(runs_dir / "after")

        def renamed() -> bool:
            text = index.read_text()
            return ">after<" in text and ">before<" not in text

        wait_for(renamed, timeout=20)
        assert 'href="after/loss_graphs/' in index.read_text()
    finally:
        daemon.stop()


def test_a_trainer_never_writes_into_a_linked_run_directory(runs_dir: Path, dummy: Path) -> None:
    (runs_dir / "planted").symlink_to(dummy)
    before = _snapshot(dummy)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        lossreport.start_run(runs_dir, model="m", hook="h", run_id="planted")
    assert _snapshot(dummy) == before
    assert not (dummy / "losses").exists()


def test_a_run_named_on_the_command_line_through_a_link_is_rendered(
    runs_dir: Path, tmp_path: Path
) -> None:
    from tests.support.procs import run_cli

    run_dir = _finished_run(runs_dir, "r", steps=5)
    (tmp_path / "latest").symlink_to(run_dir)
    result = run_cli("render", str(tmp_path / "latest"))
    assert result.returncode == 0, result.stderr
    assert (run_dir / "loss_graphs").is_dir()
