"""A shared runs tree is hostile ground: links, FIFOs, folders where files belong, runs that
vanish. The renderer and the daemon must never act through a link, never block, and keep
whatever is wrong with one run to that run. Links point only at dummy folders in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lossreport
from lossreport import runformat, sources
from lossreport.delivery.outbox import Outbox, Senders
from lossreport.errors import RunBusy, UnsafePathError
from lossreport.report.render import render_lock, render_run
from lossreport.runformat import Homes
from lossreport.sources.series import MAX_CHARTS
from tests.support.bombs import write_constant_shard
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.deadline import fails_if_blocked
from tests.support.memory import peak_memory
from tests.support.procs import ROOT, wait_for


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
    with render_lock(run_dir, wait=0), pytest.raises(RunBusy):
        render_run(run_dir, wait=False)


def test_a_linked_run_directory_is_not_a_run(runs_dir: Path, tmp_path: Path) -> None:
    real = _finished_run(tmp_path / "other-runs", "theirs")
    (runs_dir / "alias").symlink_to(real)
    assert sources.list_runs(runs_dir) == []
    assert sources.list_run_keys(runs_dir) == []
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
        '{"format": "' + runformat.FORMAT + '", ' + '"c":{' * 999 + "}" * 1000
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
        Outbox(Homes(runs_dir)).add(message)
    assert _snapshot(dummy) == before
    assert Outbox(Homes(runs_dir)).pending() == []


def test_a_negative_duration_is_not_shown(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    record = runformat.read_run_file(run_dir)
    record.finished_at = "2000-01-01T00:00:00+00:00"
    runformat.write_run_file(run_dir, record)
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
        for run_dir in brief:  # as a user would: `rm -rf` again while a render writes there
            wait_for(lambda run_dir=run_dir: _removed(run_dir), timeout=30, interval=0.05)
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


def _removed(folder: Path) -> bool:
    """`rm -rf folder` once; whether it is gone (a render in flight may add a file meanwhile:
    its folder is then not empty yet)."""
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


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


def test_a_run_folder_swapped_for_a_link_mid_render_changes_nothing_at_the_target(
    runs_dir: Path, dummy: Path
) -> None:
    from lossreport.report.render import render_held

    run_dir = _finished_run(runs_dir, "r")
    (dummy / ".loss_graphs.old-0000").mkdir()  # what a path-based stage sweep would delete
    before = _snapshot(dummy) | {"dirs": str(sorted(p.name for p in dummy.iterdir()))}
    with render_lock(run_dir, wait=0) as run_fd:
        run_dir.rename(runs_dir / "moved")  # the owner swaps the folder for a link
        run_dir.symlink_to(dummy)
        with pytest.raises(OSError):
            render_held(run_dir, run_fd)
    assert _snapshot(dummy) | {"dirs": str(sorted(p.name for p in dummy.iterdir()))} == before
    assert not [p for p in (runs_dir / "moved").iterdir() if p.name.startswith(".loss_graphs")]


def test_a_lock_held_by_someone_else_is_given_up_on(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    started = time.monotonic()
    with render_lock(run_dir, wait=0), pytest.raises(RunBusy):
        render_run(run_dir, wait=0.5)
    assert 0.5 <= time.monotonic() - started < 10


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's file")


@needs_root
def test_an_outbox_folder_of_another_user_is_never_used(runs_dir: Path) -> None:
    from email.message import EmailMessage

    outbox = runs_dir / ".lossreport" / "outbox"
    outbox.mkdir(parents=True)
    os.chown(outbox, 65534, 65534)
    (outbox / "planted.eml").write_text("To: victim@example.com\n\nspam\n")
    message = EmailMessage()
    message["X-Lossreport-Key"] = "k"
    with pytest.raises(UnsafePathError, match="uid 65534"):
        Outbox(Homes(runs_dir)).add(message)
    assert Outbox(Homes(runs_dir)).pending() == []


@needs_root
def test_a_message_another_user_put_in_the_outbox_is_never_sent(runs_dir: Path) -> None:
    from email.message import EmailMessage

    from lossreport.delivery.smtp import SmtpSettings

    message = EmailMessage()
    message["X-Lossreport-Key"] = "k"
    queued = Outbox(Homes(runs_dir)).add(message)
    os.chown(queued, 65534, 65534)  # as if another user had renamed their file over ours
    assert Outbox(Homes(runs_dir)).pending() == []
    with pytest.raises(UnsafePathError, match="not a file this user queued"):
        Outbox(Homes(runs_dir)).deliver(queued, Senders(SmtpSettings(host="127.0.0.1", port=9)))


def test_a_broken_queued_message_does_not_stop_the_sender(runs_dir: Path) -> None:
    from email.message import EmailMessage

    from lossreport.delivery.outbox import OutboxSender
    from lossreport.delivery.smtp import SmtpSettings

    message = EmailMessage()
    message["X-Lossreport-Key"] = "k"
    queued = Outbox(Homes(runs_dir)).add(message)
    with queued.open("r+b") as handle:  # past the 64 MiB limit: not read, not sent
        handle.truncate(65 * 2**20)
    sender = OutboxSender(Outbox(Homes(runs_dir)), Senders(SmtpSettings(host="127.0.0.1", port=9)))
    assert sender.send_due() == 1  # failed, waits for its retry; the sender goes on


def test_a_file_where_the_outbox_belongs_does_not_undo_the_render(
    runs_dir: Path, tmp_path: Path
) -> None:
    from lossreport.runformat import read_marker

    run_dir = _finished_run(runs_dir, "r", steps=5)
    (runs_dir / ".lossreport").write_text("in the way")
    result = run_once(runs_dir, "--email-to", "me@example.com", "--smtp-host", "127.0.0.1")
    assert read_marker(run_dir) is not None, result.stderr  # rendered and recorded
    assert "mail_not_queued" in result.stderr + result.stdout


def test_values_no_catalog_or_chart_takes_stop_neither_the_daemon_nor_the_other_runs(
    runs_dir: Path,
) -> None:
    """Anyone who can write a run can put in its marker an integer past 64 bits or a lone
    surrogate escape (valid ASCII JSON, half a character), in its run.json a number past a
    float's range, and can name a folder in bytes that are not UTF-8. The catalog refused
    each such row, and the daemon stopped, for every run; the chart engine and the summary's
    strict JSON refused the run.json."""
    plain, odd_marker, odd_record = (
        _finished_run(runs_dir, name) for name in ("plain", "odd-marker", "odd-record")
    )
    render_run(odd_marker)
    marker = odd_marker / runformat.GRAPHS_DIR / runformat.MARKER
    document = json.loads(marker.read_text())
    document["entry"].update(steps=10**20, problems=-(10**30), model="tiny\ud800model")
    marker.write_text(json.dumps(document))  # `\ud800`, escaped
    record = json.loads((odd_record / "run.json").read_text())
    record.update(model="tiny\udcffmodel", config={"lr": 0.0})
    (odd_record / "run.json").write_text(json.dumps(record).replace("0.0", "1e400"))
    shutil.copytree(plain, runs_dir / os.fsdecode(b"run-\xff-latin1"))

    result = run_once(runs_dir)

    assert result.returncode == 0, result.stderr
    (warned,) = [json.loads(line) for line in result.stderr.splitlines() if "not_utf8" in line]
    assert "run-\ufffd-latin1: its name is not UTF-8, so it is not read" in warned["message"]
    index = (runs_dir / "index.html").read_text()
    for run_dir in (plain, odd_marker, odd_record):
        assert f"{run_dir.name}/loss_graphs" in index
    assert "tiny\ufffdmodel" in index
    (summary,) = (odd_record / runformat.GRAPHS_DIR).glob("loss_summary_*.json")
    shown = json.loads(summary.read_text())["run"]
    assert (shown["model"], shown["config"]) == ("tiny\ufffdmodel", {"lr": "1e400"})


def test_what_a_user_keeps_in_loss_graphs_outlives_a_render_whatever_its_name(
    runs_dir: Path,
) -> None:
    """A render replaced every entry whose name began as a report file's does: notes named
    loss_report_notes.md, a folder loss_curves_archive/ and what was in it were deleted."""
    run_dir = _finished_run(runs_dir, "r")
    graphs = render_run(run_dir).report.parent
    (graphs / "loss_report_notes.md").write_text("my notes")
    (graphs / "loss_curves_archive").mkdir()
    (graphs / "loss_curves_archive" / "old.png").write_bytes(b"an old chart")
    (csv,) = graphs.glob("loss_history_*.csv")  # where the next render puts its CSV
    csv.unlink()
    csv.mkdir()
    (csv / "data.txt").write_text("mine")

    result = render_run(run_dir)

    assert (graphs / "loss_report_notes.md").read_text() == "my notes"
    assert (graphs / "loss_curves_archive" / "old.png").read_bytes() == b"an old chart"
    assert (csv / "data.txt").read_text() == "mine"  # kept: the report goes without its CSV
    assert result.report.is_file()
    assert len(list(graphs.glob("loss_report_*.html"))) == 1  # the earlier one replaced


def test_a_render_that_cannot_replace_the_report_keeps_the_old_one_and_the_users_files(
    runs_dir: Path, dummy: Path
) -> None:
    """A render carries the user's files into its new folder, then swaps the folders. When
    an entry could not be carried (a mount point; another user's folder), the new folder was
    removed with the user's files already in it."""
    if os.geteuid() != 0:
        pytest.skip("a mount point in loss_graphs/ needs root (CI runs as root)")
    run_dir = _finished_run(runs_dir, "r")
    graphs = render_run(run_dir).report.parent
    for name in ("a_notes.txt", "b_notes.txt"):
        (graphs / name).write_text(f"my {name}")
    before = _snapshot(graphs)
    (graphs / "zz_mounted").mkdir()
    subprocess.run(["mount", "--bind", str(dummy), str(graphs / "zz_mounted")], check=True)
    try:
        with pytest.raises(lossreport.RunDirectoryError, match=r"loss_graphs: not replaced"):
            render_run(run_dir)  # renaming a mount point: EBUSY, even for root
    finally:
        subprocess.run(["umount", str(graphs / "zz_mounted")], check=True)
    (graphs / "zz_mounted").rmdir()
    assert _snapshot(graphs) == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".loss_graphs")]


def test_a_refusal_on_the_way_to_a_folder_names_the_whole_path(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", run_id="r", report_on_close=False)
    run.log(0, mse_loss=1.0)
    run.flush()
    elsewhere = runs_dir.parent / "elsewhere"
    elsewhere.mkdir()
    (run.path / runformat.LOSSES_DIR / runformat.CLEARED_DIR).symlink_to(elsewhere)
    with pytest.raises(lossreport.RunDirectoryError, match=r"r/losses/cleared: is a symbolic"):
        run.clear_loss_history()
    run.close()
    assert list(elsewhere.iterdir()) == []


def test_a_run_json_with_an_integer_of_5000_digits_is_reported(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r")
    document = json.loads((run_dir / "run.json").read_text())
    text = json.dumps(document).replace('"config": {}', '"config": {"x": ' + "9" * 5000 + "}")
    (run_dir / "run.json").write_text(text)
    result = render_run(run_dir)
    assert any("run.json" in problem for problem in result.problems)


def test_a_runs_directory_reached_through_a_link_gets_its_index(
    runs_dir: Path, tmp_path: Path
) -> None:
    _finished_run(runs_dir, "r", steps=5)
    (tmp_path / "alias").symlink_to(runs_dir)
    result = run_once(tmp_path / "alias")
    assert result.returncode == 0, result.stderr
    assert (runs_dir / "index.html").is_file()


def test_resuming_a_run_whose_pid_is_absurd_works(runs_dir: Path) -> None:
    run_dir = _finished_run(runs_dir, "r", steps=5)
    record = runformat.read_run_file(run_dir)
    record.status, record.pid, record.heartbeat_at = "running", 2**40, runformat.utc_now()
    runformat.write_run_file(run_dir, record)
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="r") as run:
        run.log(100, mse_loss=0.5)


@pytest.mark.parametrize("poll", [False, True])
def test_link_loops_and_deep_folders_in_a_run_neither_stop_nor_spin_the_daemon(
    runs_dir: Path, tmp_path: Path, poll: bool
) -> None:
    hostile = _finished_run(runs_dir, "hostile", steps=5)
    (hostile / "a").symlink_to("..")
    (hostile / "b").symlink_to("..")
    _nest(hostile / "deep", 1300)  # past Python's recursion limit
    daemon = Daemon(
        runs_dir, *(["--poll", "--poll-interval", "0.2"] if poll else []), log=tmp_path / "d.log"
    )
    try:
        daemon.wait_for_event("watching")
        fresh = _finished_run(runs_dir, "fresh", steps=5)
        wait_rendered(fresh, "completed")
        start_cpu, start = _cpu_seconds(daemon.process.pid), time.monotonic()
        wait_for(lambda: time.monotonic() - start > 3, timeout=10, interval=0.5)
        used = _cpu_seconds(daemon.process.pid) - start_cpu
        assert used < 0.6, f"the daemon used {used:.2f}s CPU in 3s"
    finally:
        code, seconds = daemon.stop()
        subprocess.run(["rm", "-rf", str(hostile / "deep")], check=True)  # rmtree would recurse
    assert code == 0 and seconds < 15, daemon.log.read_text()[-2000:]


def _nest(folder: Path, depth: int) -> None:
    """`folder/d/d/.../d`, `depth` levels, made without recursion (os.makedirs recurses)."""
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


# -- size: every input has a budget ------------------------------------------------------
# The most one `lossreport render` of any run may hold, its chart helper included (README.md,
# "Budgets"): a run of 100,000-character names and 300 series peaks near 300 MB.
MAX_RENDER_BYTES = 2**30
HUGE = 100_000
RENDER_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _huge_run(runs_dir: Path) -> Path:
    """Every user string 100,000 characters and more, 300 series of 2,000-character names
    (some a spreadsheet formula), a full alert log and a marker too big to read."""
    long_text = "ñ名" + "m" * HUGE
    with lossreport.start_run(
        runs_dir,
        model=long_text,
        hook="blocks.0." * (HUGE // 9),
        architecture="a" * HUGE,
        config={"k" * HUGE: "v" * 10 * HUGE, "nested": {"x" * HUGE: ["y" * HUGE]}},
        run_id="huge",
    ) as run:
        for step in range(50):
            run.log(step, mse_loss=1.0 / (step + 1))
    steps = np.arange(50, 250)
    columns = {
        f"{'=' if index % 7 == 0 else ''}feature_{index}_{'x' * 2_000}": np.linspace(1, 0, 200)
        for index in range(300)
    }
    columns["l" * HUGE] = np.linspace(2, 1, 200)
    columns["learning_rate"] = np.full(200, 3e-4)
    shard = pa.table({"step": steps, "wall_time": 1.7e9 + steps.astype(float), **columns})
    pq.write_table(shard, run.path / runformat.LOSSES_DIR / runformat.shard_name(99))
    alert = {"rule": "r" * HUGE, "loss": "l" * HUGE, "step": 3, "detail": "d" * 10 * HUGE}
    (run.path / runformat.ALERTS_FILE).write_text(json.dumps({"alerts": [alert] * 3}))
    (run.path / runformat.GRAPHS_DIR).mkdir()
    (run.path / runformat.GRAPHS_DIR / runformat.MARKER).write_bytes(b"[" * 5 * 2**20)
    return run.path


def test_a_run_of_huge_names_and_hundreds_of_series_renders_within_its_memory_budget(
    runs_dir: Path,
) -> None:
    run_dir = _huge_run(runs_dir)

    measured = peak_memory(
        sys.executable, "-m", "lossreport", "render", str(run_dir), env=RENDER_ENV
    )

    assert measured.returncode == 0, measured.output
    assert measured.peak_bytes <= MAX_RENDER_BYTES, measured.peak_bytes
    graphs = run_dir / runformat.GRAPHS_DIR
    assert len(list(graphs.glob("loss_curves_*.png"))) == MAX_CHARTS + 1
    assert all(len(path.name) <= 255 for path in graphs.iterdir())
    (page,) = graphs.glob("loss_report_*.html")
    assert page.stat().st_size < 4 * 2**20  # 300 charts whole made an 8 MB page
    assert "290 more losses, not drawn" in page.read_text()
    summary = json.loads(next(graphs.glob("loss_summary_*.json")).read_text())
    assert summary["model_name"] == "ñ名" + "m" * HUGE  # whole in the data


def test_a_tiny_shard_that_decodes_to_tens_of_millions_of_rows_stays_within_the_budget(
    runs_dir: Path,
) -> None:
    run_dir = _finished_run(runs_dir, "bomb")
    path = run_dir / runformat.LOSSES_DIR / runformat.shard_name(99)
    write_constant_shard(path, 40_000_000)
    assert path.stat().st_size < 2**20  # under a megabyte on disk

    measured = peak_memory(
        sys.executable, "-m", "lossreport", "render", str(run_dir), env=RENDER_ENV
    )

    assert measured.returncode in (0, 1), measured.output  # a report, or a one-line error
    assert "Traceback" not in measured.output
    assert measured.peak_bytes <= MAX_RENDER_BYTES, measured.peak_bytes


def test_a_mirror_folder_that_cannot_be_made_is_named_whole(
    runs_dir: Path, dummy: Path, tmp_path: Path
) -> None:
    """A read-only --output failed a render with "Permission denied: 'x1'": the last part of
    the folder it was making, not where."""
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (CI runs as root)")
    output = tmp_path / "reports"
    output.mkdir()
    before = sorted(dummy.rglob("*"))
    subprocess.run(["mount", "--bind", str(dummy), str(output)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(output)], check=True)
        homes = Homes(runs_dir, output, every_run_to_output=True)
        with pytest.raises(lossreport.RunDirectoryError) as refused:
            homes.make_home("sweep-ü/x1")
    finally:
        subprocess.run(["umount", str(output)], check=True)
    assert str(refused.value) == f"{output}/sweep-ü: cannot be made (Read-only file system)"
    assert sorted(dummy.rglob("*")) == before
