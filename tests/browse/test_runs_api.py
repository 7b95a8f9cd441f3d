"""The index's and the sweeps' query parameters over HTTP, against a real `lossreport serve`:
each bad one a 400 that names it, and hostile strings shown as text."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import markupsafe
import pytest

import lossreport
from lossreport.browse.catalog_access import REFRESH_SECONDS
from lossreport.report.render import render_run
from tests.support.catalog import HOSTILE as HOSTILE_NOTE
from tests.support.catalog import fill_catalog, truth
from tests.support.server import request, serving

RUNS = 2_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    runs_dir = tmp_path_factory.mktemp("runs")
    fill_catalog(runs_dir, RUNS)
    rows = truth(RUNS)
    with serving(runs_dir, tmp_path_factory.mktemp("log") / "serve.log") as (_, port):
        yield port, rows


def _json(port: int, path: str) -> Any:
    status, headers, body = request(port, path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("colour=red", "colour"),
        ("page=1&page=2", "page"),
        ("page=0", "page"),
        ("page=two", "page"),
        ("page=99999999999", "page"),
        ("per_page=1000", "per_page"),
        ("per_page=-5", "per_page"),
        ("sort=loss", "sort"),
        ("sort=final%3A", "sort"),
        ("sort=maximum%3Amse_loss", "sort"),
        ("order=sideways", "order"),
        ("group=everything", "group"),
        ("config=lr", "config"),
        ("config=%3D1", "config"),
        ("q=" + "x" * 201, "q"),
        ("model=" + "m" * 201, "model"),
        ("q=a%00b", "q"),
        ("&".join(["config=a%3D1"] * 9), "config"),
    ],
)
@pytest.mark.parametrize("path", ["/", "/.api/runs", "/.api/sweeps"])
def test_a_bad_parameter_is_a_400_naming_it(
    served: tuple[int, list[dict[str, Any]]], path: str, query: str, named: str
) -> None:
    status, _, body = request(served[0], f"{path}?{query}")
    assert status == 400, (path, query, body[:200])
    assert f"'{named}'" in body.decode(), body


def test_the_json_answers_agree_with_the_rows(served: tuple[int, list[dict[str, Any]]]) -> None:
    port, rows = served
    answer = _json(port, "/.api/runs?per_page=200")
    assert answer["total"] == RUNS and len(answer["runs"]) == 200
    newest = sorted(rows, key=lambda row: (row["rendered_at"], row["run_id"]), reverse=True)
    assert answer["runs"][0]["run_id"] == newest[0]["run_id"]
    model, count = Counter(row["model"] for row in rows).most_common(1)[0]
    answer = _json(
        port,
        "/.api/runs?" + urlencode({"model": model, "sort": "minimum:mse_loss", "order": "asc"}),
    )
    assert answer["total"] == count
    minima = sorted(
        row["minimum"]["mse_loss"]
        for row in rows
        if row["model"] == model and row["minimum"].get("mse_loss") is not None
    )
    assert [run["minimum"]["mse_loss"] for run in answer["runs"]] == pytest.approx(minima[:50])
    name, value = next(iter(rows[7]["config"].items()))
    answer = _json(port, "/.api/runs?" + urlencode({"config": f"{name}={value}", "per_page": 200}))
    expected = {row["run_id"] for row in rows if row["config"].get(name) == value}
    assert answer["total"] == len(expected)
    assert {run["run_id"] for run in answer["runs"]} <= expected
    answer = _json(port, "/.api/sweeps?per_page=5")
    sizes = sorted(
        Counter((r["model"], r["hook"], r["architecture"]) for r in rows).values(), reverse=True
    )
    assert [group["runs"] for group in answer["sweeps"]] == [size for size in sizes if size > 1][:5]


def test_hostile_strings_are_text_on_every_page(served: tuple[int, list[dict[str, Any]]]) -> None:
    port, rows = served
    hostile = next(row for row in rows if "<" in row["model"])
    status, headers, body = request(port, "/?" + urlencode({"model": hostile["model"]}))
    assert status == 200
    page = body.decode()
    assert hostile["model"] not in page  # only escaped
    assert str(markupsafe.escape(hostile["model"])) in page
    assert "'unsafe-eval'" not in headers["Content-Security-Policy"]
    # A config value with a script in it, found by text, on the index and on its sweep's page.
    noted = next(row for row in rows if row["config"].get("note") == HOSTILE_NOTE)
    status, _, body = request(port, "/?" + urlencode({"q": "<script>", "per_page": 200}))
    assert status == 200 and noted["run_id"].encode() in body
    assert HOSTILE_NOTE.encode() not in body
    query = {key: noted[key] for key in ("model", "hook", "architecture")}
    status, _, body = request(port, "/.sweep?" + urlencode(query))
    assert status == 200
    assert HOSTILE_NOTE.encode() not in body
    assert str(markupsafe.escape(HOSTILE_NOTE)).encode() in body  # shown, as text


def test_sweep_page_parameters(served: tuple[int, list[dict[str, Any]]]) -> None:
    port, rows = served
    row = rows[0]
    names = {key: row[key] for key in ("model", "hook", "architecture")}
    assert request(port, "/.sweep?" + urlencode(names))[0] == 200
    assert request(port, "/.sweep?" + urlencode({**names, "rank": "steps"}))[0] == 400
    assert request(port, "/.sweep?" + urlencode({**names, "colour": "red"}))[0] == 400
    assert request(port, "/.sweep?hook=h")[0] == 400
    assert request(port, "/.sweep?" + urlencode({**names, "model": "no such model"}))[0] == 404
    for path in ("/.api/runs/extra", "/.api/../index.html", "/.API/runs", "/.sweep/x", "/.api"):
        assert request(port, path)[0] == 404, path
    assert request(port, "/" + quote(".api/runs", safe=""))[0] == 404


def test_a_tree_without_a_daemon_catalog_is_served_to_many_clients_at_once(
    runs_dir: Path, tmp_path: Path
) -> None:
    """Where no daemon keeps a catalog (reports made by `lossreport render`), serve makes one
    from the markers every 2 s, and closed the one before while other requests were still
    querying it: the server died of SIGSEGV within seconds of six clients."""
    for number in range(8):
        with lossreport.start_run(runs_dir, model="m", hook="h", run_id=f"r{number}") as run:
            run.log(0, mse_loss=1.0)
        render_run(run.path)
    answers: Counter[int | str] = Counter()

    def client(port: int, path: str, until: float) -> None:
        while time.monotonic() < until:
            try:
                answers[request(port, path)[0]] += 1
            except OSError as exc:  # the server gone
                answers[type(exc).__name__] += 1
                return

    with serving(runs_dir, tmp_path / "serve.log") as (_, port):  # its exit code checked
        until = time.monotonic() + 3 * REFRESH_SECONDS  # three catalogs made meanwhile
        clients = [
            threading.Thread(target=client, args=(port, path, until))
            for path in ("/", "/.run/r0", "/.api/runs") * 2
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    assert set(answers) == {200}, answers
