"""A team's catalog in PostgreSQL as real daemons and a real `serve` use it: two daemons
following one tree (as on two hosts sharing it over NFS) and a server, all on the session's
server; that server stopped while runs finish and started again; a daemon SIGKILLed while
it writes. Every run reported once and listed once, no row lost, none torn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lossreport
from lossreport.catalog.postgres import PostgresCatalog
from lossreport.errors import CatalogSchemaError
from lossreport.runformat import GRAPHS_DIR, read_marker
from tests.support.daemon import Daemon
from tests.support.postgres import PostgresServer
from tests.support.procs import wait_for
from tests.support.server import request, serving

STEPS = 60


def _train(runs_dir: Path, name: str, lr: float) -> Path:
    with lossreport.start_run(
        runs_dir / "sweep", model="gpt2-small", hook="blocks.3.hook_resid_pre",
        architecture="topk", run_id=name, config={"lr": lr}, report_on_close=False,
    ) as run:  # fmt: skip
        for step in range(STEPS):
            run.log(step, mse_loss=lr * 100 / (step + 1), l1_loss=0.5)
    return run.path


def _catalog_keys(url: str) -> list[str]:
    """The runs the catalog lists; none before a daemon made it."""
    try:
        catalog = PostgresCatalog.connect(url, writable=False)
    except CatalogSchemaError:
        return []
    try:
        return [row["run_id"] for row in catalog.recent(1000)]
    finally:
        catalog.close()


def _api_runs(port: int) -> dict[str, Any]:
    status, _, body = request(port, "/.api/runs?per_page=100")
    assert status == 200, body[:500]
    return dict(json.loads(body))


def _untorn(url: str) -> None:
    """Every run's row whole: its details, its loss values and its config, or none of them."""
    catalog = PostgresCatalog.connect(url, writable=False)
    try:
        with catalog.reading() as connection:
            torn = connection.execute(
                "SELECT key FROM runs WHERE NOT EXISTS (SELECT 1 FROM details WHERE run = id)"
                " OR NOT EXISTS (SELECT 1 FROM loss_values WHERE run = id)"
                " OR NOT EXISTS (SELECT 1 FROM config WHERE run = id)"
            ).fetchall()
            orphans = connection.execute(
                "SELECT COUNT(*) FROM details WHERE run NOT IN (SELECT id FROM runs)"
            ).fetchone()
    finally:
        catalog.close()
    assert torn == [] and orphans == (0,)


@pytest.mark.slow
def test_two_daemons_and_a_server_share_one_catalog_through_an_outage(
    runs_dir: Path, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.url(postgres_server.new_database())
    before = {f"sweep/lr-{i}": _train(runs_dir, f"lr-{i}", lr) for i, lr in enumerate([1e-3, 3e-3])}
    daemons = [
        Daemon(runs_dir, "--catalog", url, log=tmp_path / f"daemon-{i}.log") for i in range(2)
    ]
    try:
        with serving(runs_dir, tmp_path / "serve.log", "--catalog", url) as (_, port):
            wait_for(lambda: sorted(_catalog_keys(url)) == sorted(before), timeout=120)
            assert [run["run_id"] for run in _api_runs(port)["runs"]].count("sweep/lr-0") == 1

            postgres_server.stop()  # runs finish while the catalog is down
            try:
                during = {f"sweep/lr-{i}": _train(runs_dir, f"lr-{i}", 1e-2) for i in (2, 3)}
                for home in during.values():
                    wait_for(lambda home=home: read_marker(home) is not None, timeout=120)
                # serve still serves the reports, and lists the runs from their markers
                answer = _api_runs(port)
                assert sorted(run["run_id"] for run in answer["runs"]) == sorted(before | during)
                report = next((during["sweep/lr-2"] / GRAPHS_DIR).glob("*.html"))
                status, _, _ = request(port, f"/sweep/lr-2/{GRAPHS_DIR}/{report.name}")
                assert status == 200
            finally:
                postgres_server.start()
            everything = sorted(before | during)
            wait_for(lambda: sorted(_catalog_keys(url)) == everything, timeout=90)
            wait_for(lambda: sorted(r["run_id"] for r in _api_runs(port)["runs"]) == everything,
                     timeout=30)  # fmt: skip
            assert sum(bool(d.events("catalog_unreachable")) for d in daemons) >= 1
            wait_for(lambda: any(d.events("catalog_reachable") for d in daemons), timeout=30)
            served = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                      if line.startswith("{")]  # fmt: skip
            kinds = [event.get("event") for event in served]
            assert kinds.count("catalog_unreachable") == 1, kinds
            for daemon in daemons:
                assert len(daemon.events("catalog_unreachable")) <= 1
                assert daemon.process.poll() is None, daemon.log.read_text()

            # A daemon killed however far it got with a write: no torn row.
            after = {f"sweep/lr-{i}": _train(runs_dir, f"lr-{i}", 1e-4) for i in (4, 5)}
            wait_for(lambda: len(_catalog_keys(url)) > len(everything), timeout=120)
            daemons[0].kill_everything()  # the daemon and its workers, at once
            daemons[0].process.wait(timeout=10)
            wait_for(lambda: sorted(_catalog_keys(url)) == sorted([*everything, *after]),
                     timeout=120)  # fmt: skip
            _untorn(url)
            keys = _catalog_keys(url)
            assert len(keys) == len(set(keys))
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.kill_everything()
