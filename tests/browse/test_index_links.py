"""No link of the served runs index is a dead end: a run is linked to its sweep's page only
when it has a sweep (two runs or more share its model, hook and architecture)."""

from __future__ import annotations

import json
from pathlib import Path

import lossreport
from tests.support.links import dead_links, links_of
from tests.support.serve_thread import server_thread
from tests.support.server import request

MODEL = "tiny-stories-1L-21M"
HOOK = "blocks.0.hook_mlp_out"
LONE_MODEL = "Ωmega-7B «ablation»"


def _rendered(runs_dir: Path, model: str, hook: str, lr: float) -> str:
    with lossreport.start_run(
        runs_dir, model=model, hook=hook, architecture="gated", config={"lr": lr}
    ) as run:
        for step in range(60):
            run.log(step, mse_loss=1.0 / (step + 1) + lr, l1_loss=0.25 + 0.01 / (step + 1))
    lossreport.render_run(run.path)
    return run.path.name


def test_only_runs_with_a_sweep_link_to_one_and_every_link_answers(runs_dir: Path) -> None:
    swept = {_rendered(runs_dir, MODEL, HOOK, lr) for lr in (1e-4, 3e-4)}
    lone = _rendered(runs_dir, LONE_MODEL, HOOK, 1e-4)
    with server_thread(runs_dir) as port:
        for page in ("/", "/?group=sweeps"):
            status, _, body = request(port, page)
            assert status == 200
            assert links_of(body.decode()), page
            assert dead_links(port, page, body.decode()) == {}, page
        status, _, body = request(port, "/.api/runs")
        assert status == 200
        sweep_urls = {run["run_id"]: run["sweep_url"] for run in json.loads(body)["runs"]}
    assert sweep_urls.keys() == {*swept, lone}
    assert sweep_urls[lone] == ""
    assert all(sweep_urls[name].startswith("/.sweep?") for name in swept)
