"""`lossreport watch` over runs that other tools wrote: one index for a mixed tree, a
TensorBoard log that grows while the daemon runs, and runs in folders it cannot write."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

import lossreport
from lossreport import runformat, sources
from lossreport.daemon.jobs import render_job
from lossreport.daemon.options import WatchOptions
from lossreport.daemon.watch import Watcher
from lossreport.errors import UnsafePathError
from lossreport.runformat import Homes, read_marker
from tests.support.daemon import Daemon, run_once, wait_rendered
from tests.support.disk import read_only
from tests.support.foreign import (
    Logged,
    assert_all_logged,
    hf_trainer_run,
    lightning_run,
    mlflow_run,
    tensorboard_run,
)
from tests.support.optional import missing
from tests.support.procs import run_cli, wait_for
from tests.support.server import request, serving
from tests.support.smtp import SmtpServer
from tests.support.wandb_writer import wandb_run


def _native_run(parent: Path, run_id: str, steps: range) -> Logged:
    logged: Logged = {"mse_loss": {}}
    with lossreport.start_run(parent, model="m", hook="h", run_id=run_id) as run:
        for step in steps:
            run.log(step, mse_loss=float(step) / 7)
            logged["mse_loss"][step] = float(step) / 7
    return logged


def _age(tree: Path, seconds: float) -> None:
    """Date every file back, as if its writer had been silent for `seconds`."""
    then = time.time() - seconds
    for folder, _dirs, files in os.walk(tree):
        for name in files:
            os.utime(Path(folder) / name, (then, then))


def _csv_of(home: Path) -> Path:
    (csv_path,) = (home / runformat.GRAPHS_DIR).glob("loss_history_*.csv")
    return csv_path


def test_one_daemon_reports_every_kind_of_run_in_a_mixed_tree(runs_dir: Path) -> None:
    logged = {
        "native/sae-1": _native_run(runs_dir / "native", "sae-1", range(40)),
        "exp1/tb/run3": tensorboard_run(runs_dir / "exp1" / "tb" / "run3", range(30)),
        "exp1/lightning_logs/version_0": lightning_run(runs_dir / "exp1", range(20)),
        "hf/gpt2-tiny": hf_trainer_run(runs_dir / "hf" / "gpt2-tiny", 4),
    }
    mlflow_logged = mlflow_run(runs_dir / "mlruns", range(25))
    (mlflow_dir,) = [
        path for path in (runs_dir / "mlruns").glob("*/*") if (path / "metrics").is_dir()
    ]
    logged[mlflow_dir.relative_to(runs_dir).as_posix()] = mlflow_logged
    wandb_dir, wandb_logged = wandb_run(runs_dir / "exp2", "mixed1", 0, 14)
    logged[wandb_dir.relative_to(runs_dir).as_posix()] = wandb_logged
    _age(runs_dir, 3600)  # TensorBoard and Lightning record no end: silence finishes them

    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr

    found = {run.relative_to(runs_dir).as_posix() for run in sources.list_runs(runs_dir)}
    assert found == set(logged)
    index = (runs_dir / runformat.INDEX_FILE).read_text()
    for key, values in logged.items():
        marker = read_marker(runs_dir / key)
        assert marker is not None and marker.status == "completed", key
        assert_all_logged(_csv_of(runs_dir / key), values)
        assert f'href="{key}/{runformat.GRAPHS_DIR}/' in index, key
    for source_name in ("tensorboard", "lightning", "hf-trainer", "mlflow", "wandb"):
        assert f'<td class="tool">{source_name}</td>' in index
    report = next((runs_dir / "exp1" / "tb" / "run3" / runformat.GRAPHS_DIR).glob("*.html"))
    page = report.read_text()
    assert "TensorBoard event files" in page and "no new data" in page  # the rule it used


def _left(output: str) -> dict[str, str]:
    """What `watch --once` said of each run it left unrendered, from its JSON log lines."""
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {event["run"]: event["message"] for event in events if event.get("event") == "left"}


def test_once_renders_fresh_tensorboard_and_lightning_logs_and_says_why_it_waits(
    runs_dir: Path,
) -> None:
    logged = {
        "tb/sae-ünïcode": tensorboard_run(runs_dir / "tb" / "sae-ünïcode", range(12)),
        "exp/lightning_logs/version_0": lightning_run(runs_dir / "exp", range(9)),
    }
    _age(runs_dir, 30)  # `watch --once` typed half a minute after training ended
    # As the daemon does: they count as running until silent for --stale-after; each says so.
    waiting = run_once(runs_dir, "--once-foreign", "finished")
    assert waiting.returncode == 0, waiting.stderr
    assert all(read_marker(runs_dir / key) is None for key in logged)
    left = _left(waiting.stderr)
    assert sorted(left) == sorted(logged)
    assert re.fullmatch(
        r"run=tb/sae-ünïcode not rendered: written by tensorboard, last write 3\d s ago; "
        r"treated as running until --stale-after \(10m\) passes; --once-foreign=live renders "
        r"it now",
        left["tb/sae-ünïcode"],
    ), left
    assert "written by lightning" in left["exp/lightning_logs/version_0"]
    # The default: a one-shot command renders what exists, as running (not completed).
    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr
    assert _left(result.stderr) == {}
    for key, values in logged.items():
        marker = read_marker(runs_dir / key)
        assert marker is not None and marker.status == "running", key
        assert_all_logged(_csv_of(runs_dir / key), values)
    # (Silent for --stale-after, the next --once renders them as completed: test_runstate.py.)


def test_a_tensorboard_log_that_grows_is_reported_again(runs_dir: Path, tmp_path: Path) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        missing("torch's SummaryWriter", "pip install -e '.[dev]'")
    run_dir = runs_dir / "tb-live"
    writer = SummaryWriter(str(run_dir), flush_secs=3600)
    logged: Logged = {"loss": {}}

    def write(steps: range) -> None:
        for step in steps:
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            logged["loss"][step] = 1.0 / (step + 1)
        writer.flush()

    write(range(10))
    daemon = Daemon(runs_dir, "--stale-after", "2s", log=tmp_path / "daemon.log")
    try:
        wait_rendered(run_dir, "completed")
        assert_all_logged(_csv_of(run_dir), logged)
        write(range(10, 25))  # the same file, appended by the same writer
        wait_rendered(run_dir, "completed")
        wait_for(lambda: len(_csv_of(run_dir).read_text().splitlines()) == 26, timeout=30)
        assert_all_logged(_csv_of(run_dir), logged)
    finally:
        writer.close()
        code, _ = daemon.stop()
    assert code == 0
    assert daemon.events("render_failed") == []


def test_runs_in_unwritable_folders_are_reported_under_output(
    runs_dir: Path, tmp_path: Path
) -> None:
    theirs = runs_dir / "alice" / "tb"
    logged = tensorboard_run(theirs, range(15))
    mine = _native_run(runs_dir, "mine", range(5))
    _age(runs_dir, 3600)
    output = tmp_path / "reports"
    output.mkdir()
    before = sorted(os.listdir(theirs))
    with read_only(theirs):
        assert not os.access(theirs, os.W_OK)
        result = run_once(runs_dir, "--output", str(output))
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(theirs)) == before  # nothing written there, no cache either
    mirrored = output / "alice" / "tb"
    assert_all_logged(_csv_of(mirrored), logged)
    assert (mirrored / runformat.CACHE_DIR).is_dir()
    assert_all_logged(_csv_of(runs_dir / "mine"), mine)  # writable: reported in place
    assert not (output / "mine").exists()
    index = (output / runformat.INDEX_FILE).read_text()
    assert not (runs_dir / runformat.INDEX_FILE).exists()
    links = {
        "alice/tb/loss_graphs/": mirrored,
        "../runs/mine/loss_graphs/": runs_dir / "mine",
    }
    for link, home in links.items():
        assert f'href="{link}' in index, link
        assert (output / link).resolve() == (home / runformat.GRAPHS_DIR).resolve()
    # `serve` given the same --output shows both, each under its run's own URL.
    with serving(runs_dir, tmp_path / "serve.log", "--output", str(output)) as (_, port):
        status, _, page = request(port, "/")
        assert status == 200
        for key, home in (("alice/tb", mirrored), ("mine", runs_dir / "mine")):
            assert f'href="{key}/loss_graphs/' in page.decode(), key
            status, headers, _ = request(port, f"/{key}/")
            assert status == 302, key
            status, _, body = request(port, headers["Location"])
            assert status == 200 and body == next(home.glob("loss_graphs/*.html")).read_bytes()


def test_a_foreign_run_rendered_by_hand_is_still_mailed_once(runs_dir: Path) -> None:
    logged = mlflow_run(runs_dir / "mlruns", range(10))
    (run_dir,) = [p for p in (runs_dir / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    assert run_cli("render", str(run_dir)).returncode == 0  # its marker: not the daemon's
    with SmtpServer() as smtp:
        mail = ["--email-to", "you@example.com", "--smtp-host", "127.0.0.1"]
        mail += ["--smtp-port", str(smtp.port)]
        assert run_once(runs_dir, *mail).returncode == 0
        assert run_once(runs_dir, *mail).returncode == 0  # a second pass mails nothing more
        (received,) = smtp.received
    assert "mlflow-run completed" in received.message["Subject"]
    assert_all_logged(_csv_of(run_dir), logged)


def test_runs_that_add_scalars_writes_below_a_known_run_are_found_by_events(
    runs_dir: Path, tmp_path: Path
) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        missing("torch's SummaryWriter", "pip install -e '.[dev]'")
    run_dir = runs_dir / "tb"
    writer = SummaryWriter(str(run_dir), flush_secs=3600)
    writer.add_scalar("loss", 1.0, 0)
    writer.flush()
    daemon = Daemon(
        runs_dir, "--stale-after", "2s", "--rescan-every", "1h", log=tmp_path / "daemon.log"
    )
    try:
        wait_rendered(run_dir, "completed")
        # One run per tag, in folders below the run: seen from their events, not a rescan.
        writer.add_scalars("pair", {"mse": 0.5, "l1": 0.25}, 0)
        writer.flush()
        for tag, value in (("mse", 0.5), ("l1", 0.25)):
            wait_rendered(run_dir / f"pair_{tag}", "completed")
            assert_all_logged(_csv_of(run_dir / f"pair_{tag}"), {"pair": {0: value}})
    finally:
        writer.close()
        daemon.stop()


def test_a_folder_on_a_runs_path_swapped_for_a_link_is_never_read_or_written_through(
    runs_dir: Path, tmp_path: Path
) -> None:
    tensorboard_run(runs_dir / "exp" / "tb", range(5))
    homes = Homes(runs_dir)
    render_job(homes, "exp/tb", "completed", "inputs")
    dummy = tmp_path / "dummy"
    tensorboard_run(dummy / "tb", range(5))  # a run the daemon must not be led to
    (runs_dir / "exp").rename(tmp_path / "moved-away")
    (runs_dir / "exp").symlink_to(dummy, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        render_job(homes, "exp/tb", "completed", "inputs")
    assert sorted(os.listdir(dummy / "tb")) == sorted(
        name for name in os.listdir(dummy / "tb") if name.startswith("events.out.tfevents")
    )
    watcher = Watcher(runs_dir, WatchOptions(alerts=False))
    watcher._known.add("exp/tb")
    watcher._consider_run("exp/tb")  # what a scheduled look does: forgets it, reads nothing
    assert "exp/tb" not in watcher._known
