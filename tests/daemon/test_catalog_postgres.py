"""A team's catalog in PostgreSQL as real daemons and real `serve`s use it: three daemons,
on two runs trees and a bucket on the S3 test server, and two servers (one on each tree), all
on the session's server; that server stopped for 30 s while runs finish everywhere, and
started again; a daemon SIGKILLed while it writes, and started again. Every run reported
once and listed once, in both servers, with its place; no row lost, none torn."""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import lossreport
from lossreport import runformat
from lossreport.catalog.postgres import PostgresCatalog
from lossreport.errors import CatalogSchemaError
from lossreport.runformat import GRAPHS_DIR, read_marker
from lossreport.storage import s3
from tests.support.daemon import Daemon
from tests.support.postgres import PostgresServer
from tests.support.procs import wait_for
from tests.support.s3 import boto, client_env, keys, s3_server
from tests.support.server import request, serving

STEPS = 60
OUTAGE_S = 30  # how long the acceptance keeps the database down
BUCKET = "team-runs"


def _train(where: Path | str, name: str, lr: float) -> None:
    """A finished run `sweep/NAME` in a tree (a folder) or a bucket (an s3:// URL)."""
    parent = where / "sweep" if isinstance(where, Path) else f"{where}/sweep"
    with lossreport.start_run(
        parent, model="gpt2-small", hook="blocks.3.hook_resid_pre", architecture="topk",
        run_id=name, config={"lr": lr}, report_on_close=False,
    ) as run:  # fmt: skip
        for step in range(STEPS):
            run.log(step, mse_loss=lr * 100 / (step + 1), l1_loss=0.5)


def _listed(url: str) -> list[tuple[str, str]]:
    """(place, run) of every row the catalog holds; none before a daemon made it."""
    try:
        catalog = PostgresCatalog.connect(url, writable=False)
    except CatalogSchemaError:
        return []
    try:
        return sorted((row["place"].name, row["run_id"]) for row in catalog.recent(1000))
    finally:
        catalog.close()


def _served(port: int) -> list[dict[str, Any]]:
    status, _, body = request(port, "/.api/runs?per_page=200")
    assert status == 200, body[:500]
    return list(json.loads(body)["runs"])


def _served_places(port: int) -> list[tuple[str, str]]:
    return sorted((run["where"], run["run_id"]) for run in _served(port))


def _reported(where: Path | str, names: list[str]) -> bool:
    """Whether every run `sweep/NAME` has its report and render marker."""
    if isinstance(where, Path):
        return all(read_marker(where / "sweep" / name) is not None for name in names)
    found = keys(boto(s3.endpoint()), BUCKET, "runs/sweep/")
    return all(f"runs/sweep/{name}/{GRAPHS_DIR}/{runformat.MARKER}" in found for name in names)


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
def test_three_daemons_and_two_servers_share_one_catalog_through_an_outage(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.url(postgres_server.new_database())
    trees = [tmp_path / "cluster-a" / "runs", tmp_path / "cluster-ß" / "runs"]
    for tree in trees:
        tree.mkdir(parents=True)
    bucket = f"s3://{BUCKET}/runs"
    host = socket.gethostname()
    places: dict[Path | str, str] = {trees[0]: f"{host}:{trees[0]}", trees[1]: f"{host}:{trees[1]}",
                                     bucket: bucket}  # fmt: skip
    runs: dict[Path | str, list[str]] = {where: [] for where in places}

    def train(number: int, lr: float, where: list[Path | str]) -> None:
        for place in where:  # one path in every place: a run of each
            _train(place, f"lr-{number}", lr)
            runs[place].append(f"lr-{number}")

    def expected() -> list[tuple[str, str]]:
        return sorted((places[where], f"sweep/{name}") for where in runs for name in runs[where])

    with s3_server(tmp_path) as (store, _), ExitStack() as stack:
        for name, value in client_env(store.url).items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)
        s3.filesystem.cache_clear()
        boto(store.url).create_bucket(Bucket=BUCKET)
        train(0, 1e-3, list(places))

        catalog = ("--catalog", url)
        daemons = [Daemon(tree, *catalog, log=tmp_path / f"daemon-{n}.log")
                   for n, tree in enumerate(trees)]  # fmt: skip
        daemons.append(Daemon(bucket, "--mirror", str(tmp_path / "mirror"), "--poll-interval",
                              "0.3", *catalog, log=tmp_path / "daemon-s3.log",
                              env=client_env(store.url)))  # fmt: skip
        stack.callback(lambda: [d.kill_everything() for d in daemons if d.process.poll() is None])
        ports = [stack.enter_context(serving(tree, tmp_path / f"serve-{n}.log", *catalog))[1]
                 for n, tree in enumerate(trees)]  # fmt: skip

        # Every run listed once, with its place, by both servers; each links its own tree's
        # reports and names the others'.
        wait_for(lambda: _listed(url) == expected(), timeout=120)
        for port, own in zip(ports, trees, strict=True):
            wait_for(lambda port=port: _served_places(port) == expected(), timeout=30)
            for run in _served(port):
                if run["where"] == places[own]:
                    assert run["report_at"] == ""
                    assert request(port, f"/{run['report_url']}")[0] == 200
                else:
                    assert run["report_url"] == run["run_url"] == ""
                    assert run["report_at"].startswith(f"{run['where']}/{run['run_id']}/")

        # The database down for OUTAGE_S while runs finish in every place: each reported, each
        # server still serving its tree's reports.
        postgres_server.stop()
        down = time.monotonic()
        try:
            train(1, 3e-3, list(places))
            for where, names in runs.items():
                wait_for(lambda where=where, names=names: _reported(where, names), timeout=90)
            for port, own in zip(ports, trees, strict=True):
                wait_for(lambda port=port, own=own: len(_served(port)) == len(runs[own]), 30)
                report = next((own / "sweep" / "lr-1" / GRAPHS_DIR).glob("*.html"))
                assert request(port, f"/sweep/lr-1/{GRAPHS_DIR}/{report.name}")[0] == 200
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))  # the outage's length
        finally:
            postgres_server.start()
        wait_for(lambda: _listed(url) == expected(), timeout=60)  # no row lost
        for port in ports:
            wait_for(lambda port=port: _served_places(port) == expected(), timeout=30)
        for daemon in daemons:
            assert len(daemon.events("catalog_unreachable")) == 1, daemon.log.read_text()
            assert daemon.events("catalog_reachable"), daemon.log.read_text()
            assert daemon.process.poll() is None, daemon.log.read_text()

        # A daemon killed however far it got with a write: no torn row; started again, it
        # lists what its tree has.
        train(2, 1e-4, [trees[0]])
        train(3, 3e-4, [trees[0]])
        wait_for(lambda: len(_listed(url)) > len(expected()) - 2, timeout=120)
        daemons[0].kill_everything()
        _untorn(url)
        daemons.append(Daemon(trees[0], *catalog, log=tmp_path / "daemon-again.log"))
        wait_for(lambda: _listed(url) == expected(), timeout=120)
        _untorn(url)
        for port in ports:
            wait_for(lambda port=port: _served_places(port) == expected(), timeout=30)
    # Each run reported once: by one daemon of its place (the killed one's runs but those it
    # may have been rendering as it was killed, by it alone).
    rendered = [(d.log.name, e["run"]) for d in daemons for e in d.events("rendered")]
    assert len(rendered) == len(set(rendered)), rendered
    assert {e["run"] for e in daemons[-1].events("rendered")} <= {"sweep/lr-2", "sweep/lr-3"}
