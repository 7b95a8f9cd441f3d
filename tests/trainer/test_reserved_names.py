"""A run id that is a name lossreport reserves (the runs index, the catalog, a run's own files
and folders) cannot take that name's place: its directory gets a hash, as an id that is not a
clean file name does, and the daemon still writes its index and renders every run."""

from __future__ import annotations

from pathlib import Path

import pytest

import lossreport
from lossreport import runformat
from tests.support.daemon import run_once

RESERVED_IDS = ["index.html", "INDEX.HTML", "loss_graphs", "losses", "run.json", "runs.sqlite"]


def _trained(runs_dir: Path, run_id: str) -> Path:
    with lossreport.start_run(runs_dir, model="gpt2", hook="blocks.8.hook_resid_pre",
                              run_id=run_id) as run:  # fmt: skip
        for step in range(50):
            run.log(step, mse_loss=1.0 / (step + 1))
    return Path(run.path)


@pytest.mark.parametrize("run_id", RESERVED_IDS)
def test_a_reserved_run_id_gets_a_directory_of_its_own(runs_dir: Path, run_id: str) -> None:
    run_dir = _trained(runs_dir, run_id)
    assert run_dir.parent == runs_dir
    assert run_dir.name.casefold() != run_id.casefold()
    assert run_dir.name.startswith(run_id + "-")
    assert runformat.read_run_file(run_dir).run_id == run_id
    assert not runformat.looks_like_run(runs_dir)  # no run.json or losses/ in the runs dir
    resumed = lossreport.start_run(runs_dir, model="gpt2", hook="h", run_id=run_id)
    resumed.close()
    assert resumed.path == run_dir  # the same id finds the same run again


def test_the_daemon_indexes_and_renders_runs_with_reserved_ids(runs_dir: Path) -> None:
    run_dirs = [_trained(runs_dir, run_id) for run_id in ("index.html", "loss_graphs")]
    done = run_once(runs_dir)
    assert done.returncode == 0, done.stderr
    index = runs_dir / runformat.INDEX_FILE
    assert index.is_file() and not index.is_symlink()
    for run_dir in run_dirs:
        marker = runformat.read_marker(run_dir)
        assert marker is not None and marker.status == "completed", run_dir
        assert run_dir.name in index.read_text()
