"""DVCLive runs, written by DVCLive itself in subprocesses, reported by `lossreport watch` and
`lossreport render`: every logged value in the CSV, the params as the config, the status by
the silence rule (DVCLive records no end)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lossreport import runformat
from lossreport.runformat import read_marker
from tests.support import dvclive_trainer
from tests.support.daemon import run_once
from tests.support.foreign import Logged, assert_same, csv_values
from tests.support.optional import missing
from tests.support.procs import run_cli

try:
    import dvclive  # noqa: F401  (the subprocesses import it; skip here when it is missing)
except ImportError:
    missing("dvclive", "pip install -e '.[dev]'")


def _assert_every_value(home: Path, logged: Logged) -> None:
    """Every value logged is in the report's CSV at its step (NaN and infinities too), and
    nothing else."""
    (csv_path,) = (home / runformat.GRAPHS_DIR).glob("loss_history_*.csv")
    assert_same(csv_values(csv_path), logged)


def _age(tree: Path, seconds: float) -> None:
    then = time.time() - seconds
    for folder, _dirs, files in os.walk(tree):
        for name in files:
            os.utime(Path(folder) / name, (then, then))


def test_the_daemon_reports_dvclive_runs_at_any_depth_as_finished_once_silent(
    runs_dir: Path,
) -> None:
    logged = {
        f"sae-sweep/lr-{lr}/dvclive": dvclive_trainer.write(
            runs_dir / "sae-sweep" / f"lr-{lr}" / "dvclive", steps
        )
        for lr, steps in (("1e-3", 12), ("3e-4_ω", 7))
    }
    _age(runs_dir, 3600)  # silent for longer than --stale-after: finished
    result = run_once(runs_dir)
    assert result.returncode == 0, result.stderr
    index = (runs_dir / runformat.INDEX_FILE).read_text()
    assert '<td class="tool">dvclive</td>' in index
    for key, values in logged.items():
        marker = read_marker(runs_dir / key)
        assert marker is not None and marker.status == "completed", key
        _assert_every_value(runs_dir / key, values)
        (summary,) = (runs_dir / key / runformat.GRAPHS_DIR).glob("*summary*.json")
        document = json.loads(summary.read_text())
        assert document["run"]["source"] == "dvclive"
        assert document["model_name"] == "gelu-1l_ω"
        (page,) = (runs_dir / key / runformat.GRAPHS_DIR).glob("*.html")
        text = page.read_text()
        assert "DVCLive" in text and "no new data" in text and "4096" in text  # rule, config


def test_render_reports_a_run_dvclive_is_writing_as_running(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "gelu-1l" / "dvclive"
    process = dvclive_trainer.start(run_dir, 10, hold=True)
    try:
        logged = dvclive_trainer.logged_by(process)
        result = run_cli("render", str(run_dir))
        assert result.returncode == 0, result.stderr
    finally:
        _, errors = process.communicate("\n", timeout=60)
    assert process.returncode == 0, errors
    _assert_every_value(run_dir, logged)
    (summary,) = (run_dir / runformat.GRAPHS_DIR).glob("*summary*.json")
    assert json.loads(summary.read_text())["run"]["status"] == "running"
