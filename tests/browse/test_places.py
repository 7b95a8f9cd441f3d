"""A team's catalog on one page: `serve` links the reports of its own place and names the
others' (host and path, or bucket URL), every name escaped; the `where` filter lists the
places and narrows the runs; a catalog of one place shows neither the filter nor the column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote_plus

import markupsafe
import pytest

from tests.support.optional import missing

try:
    import psycopg  # noqa: F401
except ImportError:
    missing("psycopg", "pip install 'lossreport[postgresql]'")

from lossreport.browse.runs_view import index_page, runs_api
from lossreport.catalog.places import Place
from lossreport.catalog.postgres import PostgresCatalog
from lossreport.catalog.urls import CatalogServer
from lossreport.report import pages
from tests.support.catalog import realistic_entries

OURS = Place("login-1", "/scratch/team/runs")
THEIRS = Place("gpu-b", "/srv/<b>runs</b> & co")  # a hostile folder name, escaped everywhere
BUCKET = Place("", "s3://team-bucket/runs")


def _put(url: str, place: Place, keys: list[str]) -> None:
    writer = PostgresCatalog.connect(CatalogServer(url, place=place), writable=True)
    entries = realistic_entries(len(keys), seed=len(place.tree))
    rows = []
    for key, (_, entry) in zip(keys, entries, strict=True):
        report = f"{key}/loss_graphs/report.html"
        rows.append({**pages.index_row(entry, key), "report": report})
    writer.put_many(rows)
    writer.close()


@pytest.fixture
def team(postgres_url: str) -> Iterator[PostgresCatalog]:
    """A catalog of three places, read as the `serve` of OURS reads it."""
    _put(postgres_url, OURS, ["sweep/ours-1", "sweep/ours-2"])
    _put(postgres_url, THEIRS, ["sweep/theirs-Ωmega", "sweep/ours-1"])  # one path in both
    _put(postgres_url, BUCKET, ["bucket-run"])
    reader = PostgresCatalog.connect(CatalogServer(postgres_url, place=OURS), writable=False)
    yield reader
    reader.close()


def _api(catalog: PostgresCatalog, **params: str) -> dict[str, dict[str, str]]:
    answer = runs_api(catalog, {name: [value] for name, value in params.items()})
    runs = json.loads(answer.body)["runs"]
    return {f"{run['where']} {run['run_id']}": run for run in runs}


def test_own_reports_are_linked_and_the_others_named(team: PostgresCatalog) -> None:
    runs = _api(team, per_page="100")
    assert len(runs) == 5  # one path in two trees: two runs
    ours = runs[f"{OURS.name} sweep/ours-1"]
    assert ours["report_url"] == "sweep/ours-1/loss_graphs/report.html"
    assert ours["run_url"] == "/.run/sweep/ours-1" and ours["report_at"] == ""
    theirs = runs[f"{THEIRS.name} sweep/ours-1"]
    assert theirs["report_url"] == theirs["run_url"] == ""
    assert theirs["report_at"] == "gpu-b:/srv/<b>runs</b> & co/sweep/ours-1/loss_graphs/report.html"
    bucket = runs[f"{BUCKET.name} bucket-run"]
    assert bucket["report_at"] == "s3://team-bucket/runs/bucket-run/loss_graphs/report.html"
    assert bucket["where"] == "s3://team-bucket/runs"


def test_the_where_filter_lists_the_places_and_narrows_the_runs(
    team: PostgresCatalog,
) -> None:
    assert sorted(_api(team, where=THEIRS.name)) == [
        f"{THEIRS.name} sweep/ours-1",
        f"{THEIRS.name} sweep/theirs-Ωmega",
    ]
    assert _api(team, where="nowhere:/at/all") == {}
    html = index_page(team, True, {"where": [BUCKET.name]}).body.decode()
    assert '<select name="where">' in html
    for place in (OURS, THEIRS, BUCKET):
        assert f'<option value="{markupsafe.escape(place.name)}"' in html
    assert "<b>runs</b>" not in html and "/srv/&lt;b&gt;runs&lt;/b&gt; &amp; co" in html
    assert f"where={quote_plus(BUCKET.name)}" in html  # the pager keeps the filter
    assert "bucket-run" in html and "sweep/ours-2" not in html  # the bucket's run alone


def test_a_catalog_of_one_place_shows_no_where(postgres_url: str) -> None:
    _put(postgres_url, OURS, ["sweep/ours-1", "sweep/ours-2"])
    reader = PostgresCatalog.connect(CatalogServer(postgres_url, place=OURS), writable=False)
    try:
        html = index_page(reader, True, {}).body.decode()
    finally:
        reader.close()
    assert 'name="where"' not in html and 'class="where"' not in html
    assert 'href="sweep/ours-1/loss_graphs/report.html"' in html
