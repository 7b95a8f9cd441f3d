"""Other tools' runs in the catalog, the summary and both indexes: the names each tool
records, the tool in a column of its own, no hook where the tool records none, and every
link answering: two versions of one Lightning logger are a sweep, with no hook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import markupsafe
import pytest

import lossreport
from lossreport import runformat
from lossreport.daemon.listing import Listing
from lossreport.runformat import Homes, read_marker
from tests.support.foreign import lightning_run, mlflow_run, tensorboard_run
from tests.support.links import dead_links
from tests.support.serve_thread import server_thread
from tests.support.server import request

pytestmark = pytest.mark.filterwarnings("ignore:.*[Ff]ile ?[Ss]tore.*")  # MLflow's, as it writes

LOGGER = "gpt2-small resid SAE ω"
EXPERIMENT = "pythia-70m «ablations»"
TB_EXPERIMENT = "tiny-stories-1L-21M"


def _tree(runs_dir: Path) -> dict[str, tuple[str, str, str]]:
    """Each tool's runs, rendered and listed as the daemon does: {key: (run, model, tool)}."""
    for lr in (1e-3, 3e-4):
        lightning_run(runs_dir / "lightning", range(12), name=LOGGER, hparams={"lr": lr})
    mlflow_run(runs_dir / "mlruns", range(12), EXPERIMENT, "lr-3e-4_l1-5", params={"lr": 3e-4})
    tensorboard_run(runs_dir / "tb" / TB_EXPERIMENT / "run-Ω7", range(12))
    (mlflow_dir,) = [
        path for path in (runs_dir / "mlruns").glob("*/*") if (path / "metrics").is_dir()
    ]
    expected = {
        f"lightning/{LOGGER}/version_0": ("version_0", LOGGER, "lightning"),
        f"lightning/{LOGGER}/version_1": ("version_1", LOGGER, "lightning"),
        mlflow_dir.relative_to(runs_dir).as_posix(): ("lr-3e-4_l1-5", EXPERIMENT, "mlflow"),
        f"tb/{TB_EXPERIMENT}/run-Ω7": ("run-Ω7", TB_EXPERIMENT, "tensorboard"),
    }
    listing = Listing(Homes(runs_dir))
    for key in expected:
        lossreport.render_run(runs_dir / key)
        marker = read_marker(runs_dir / key)
        assert marker is not None
        listing.rendered(key, marker.entry)
    listing.write_page()
    listing.close()
    return expected


def test_each_tool_names_its_runs_and_has_a_column_of_its_own(runs_dir: Path) -> None:
    expected = _tree(runs_dir)
    for key, (run, model, tool) in expected.items():
        (summary_file,) = (runs_dir / key / runformat.GRAPHS_DIR).glob("loss_summary_*.json")
        summary = json.loads(summary_file.read_text())
        assert (summary["model_name"], summary["hook_name"]) == (model, ""), key
        assert (summary["run"]["run_id"], summary["run"]["source"]) == (run, tool), key
    static = (runs_dir / runformat.INDEX_FILE).read_text()
    with server_thread(runs_dir) as port:
        status, _, body = request(port, "/.api/runs?per_page=200")
        assert status == 200
        listed = {row["run_id"]: row for row in json.loads(body)["runs"]}
        served = request(port, "/")[2].decode()
        assert dead_links(port, "/", served) == {}
        assert dead_links(port, "/", static) == {}
    assert listed.keys() == expected.keys()
    for key, (_, model, tool) in expected.items():
        row: dict[str, Any] = listed[key]
        assert (row["model"], row["hook"], row["source"]) == (model, "", tool), key
        cells = f'<td>{markupsafe.escape(model)}</td><td></td><td></td><td class="tool">{tool}</td>'
        assert cells in served, key
        assert cells in static, key
    # The logger's two versions are a sweep (same model, no hook, no architecture)
    lightning = [listed[key]["sweep_url"] for key in expected if key.startswith("lightning/")]
    assert lightning[0] and lightning[0] == lightning[1]
    assert all(not listed[key]["sweep_url"] for key in expected if not key.startswith("lightning/"))
    assert "<th>tool</th>" in served and "<th>tool</th>" in static
