"""The run page and `/.api/series` over HTTP against a real `lossreport serve`: each bad
parameter a 400 that names it, no path out of the runs, hostile names shown as text."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import numpy as np
import pyarrow as pa
import pytest

import lossreport
from lossreport import runformat
from lossreport.runformat import RunRecord
from tests.support.long_run import write_long_run
from tests.support.server import request, serving

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_LOSS = '</script><script>alert(1)</script>&"'


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("tree")
    runs_dir = root / "runs"
    runs_dir.mkdir()
    write_long_run(runs_dir, "long", steps=200_000)
    with lossreport.start_run(runs_dir / "team", model=HOSTILE, hook="h", run_id="odd") as run:
        for step in range(50):
            run.log(step, **{"loss": float(step), "x_loss": 1.0})
    lossreport.render_run(run.path)
    # A loss name no trainer of ours writes, but a hand-made shard (or another tool) may.
    hostile_run = runs_dir / "hostile"
    (hostile_run / runformat.LOSSES_DIR).mkdir(parents=True)
    runformat.write_run_file(hostile_run, RunRecord(run_id="hostile", model="m", hook="h"))
    steps = np.arange(10, dtype=np.int64)
    columns = {"step": steps, "wall_time": np.full(10, 1.7e9), HOSTILE_LOSS: np.ones(10)}
    runformat.write_shard(hostile_run, 0, pa.table(columns))
    elsewhere = root / "elsewhere"  # a run outside the runs directory, linked into it
    write_long_run(elsewhere, "outside", steps=1000)
    os.symlink(elsewhere / "outside", runs_dir / "linked")
    (runs_dir / "team2").symlink_to(runs_dir / "team", target_is_directory=True)
    with serving(runs_dir, root / "serve.log") as (_, bound):
        yield bound


def _series(port: int, **params: object) -> tuple[int, bytes]:
    status, _, body = request(port, "/.api/series?" + urlencode(params))
    return status, body


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"loss": "mse_loss"}, "run"),
        ({"run": "long"}, "loss"),
        ({"run": "long", "loss": "mse_loss", "width": 0}, "width"),
        ({"run": "long", "loss": "mse_loss", "width": 4001}, "width"),
        ({"run": "long", "loss": "mse_loss", "width": "wide"}, "width"),
        ({"run": "long", "loss": "mse_loss", "start": "nan"}, "start"),
        ({"run": "long", "loss": "mse_loss", "end": "inf"}, "end"),
        ({"run": "long", "loss": "mse_loss", "start": "1e400"}, "start"),
        ({"run": "long", "loss": "mse_loss", "start": 10, "end": 10}, "end"),
        ({"run": "long", "loss": "mse_loss", "zoom": 2}, "zoom"),
        ({"run": "long\x00", "loss": "mse_loss"}, "run"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    port: int, params: dict[str, object], named: str
) -> None:
    status, body = _series(port, **params)
    assert status == 400, body
    assert f"'{named}'" in body.decode()


def test_a_repeated_parameter_is_a_400(port: int) -> None:
    status, _, body = request(port, "/.api/series?run=long&loss=mse_loss&width=5&width=6")
    assert status == 400 and b"'width'" in body


@pytest.mark.parametrize(
    "run",
    ["missing", "../runs/long", "long/..", "..", ".hidden", "linked", "team2/odd", "/long", ""],
)
def test_only_real_runs_of_the_tree_are_answered(port: int, run: str) -> None:
    status, _ = _series(port, run=run, loss="mse_loss")
    assert status in (400, 404), run
    assert request(port, "/.run/" + quote(run))[0] in (400, 404), run


@pytest.mark.parametrize(
    "path", ["/.run/..%2Flong", "/.run/%2e%2e/runs/long", "/.run/long%00", "/.run/linked", "/.run/"]
)
def test_path_tricks_reach_no_run(port: int, path: str) -> None:
    assert request(port, path)[0] == 404, path


def test_answers_for_a_real_run(port: int) -> None:
    status, body = _series(port, run="long", loss="mse_loss", start=100, end=160, width=1000)
    assert status == 200
    answer = json.loads(body)
    assert answer["exact"] and answer["steps_in_range"] == 61
    assert [point[0] for point in answer["points"]] == list(range(100, 161))
    assert _series(port, run="long", loss="no_such_loss")[0] == 404
    status, headers, page = request(port, "/.run/long")
    assert status == 200 and b"mse_loss" in page and b"l1_loss" in page
    assert "'unsafe-eval'" not in headers["Content-Security-Policy"]
    status, headers, library = request(port, "/.assets/chart.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript"
    assert b"vegaEmbed" in library
    assert request(port, "/.assets/chart.js?v=2")[0] == 404
    assert request(port, "/.assets/other.js")[0] == 404


def test_hostile_names_are_text_on_the_run_page(port: int) -> None:
    status, _, page = request(port, "/.run/team/odd")
    assert status == 200
    text = page.decode()
    assert HOSTILE not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    status, headers, _ = request(port, "/.run/team/odd%3Cb%3E")  # said back, but as text
    assert status == 404 and headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_hostile_loss_name_is_text_and_can_be_asked_for(port: int) -> None:
    status, _, page = request(port, "/.run/hostile")
    assert status == 200
    text = page.decode()
    assert HOSTILE_LOSS not in text and "<script>alert" not in text
    assert text.count("</script>") == 3  # the data, the library, the page's script
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#34;" in text
    status, body = _series(port, run="hostile", loss=HOSTILE_LOSS)
    assert status == 200 and json.loads(body)["loss"] == HOSTILE_LOSS


def test_the_run_page_links_its_report(port: int) -> None:
    """Its link is the one `/RUN/` redirects to; a run without a report has none."""
    page = request(port, "/.run/team/odd")[2].decode()
    found = re.search(r'<a href="(/team/odd/loss_graphs/loss_report_[^"]+\.html)">', page)
    assert found, page
    status, headers, _ = request(port, "/team/odd/")
    assert status == 302 and headers["Location"] == found.group(1)
    assert request(port, found.group(1))[0] == 200
    assert b"its report" not in request(port, "/.run/long")[2]
