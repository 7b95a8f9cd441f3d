"""The served index over a 100,000-run catalog, and a sweep's page, in real headless Chromium."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page

from lossreport.report import pages
from tests.support.browser import watched_page
from tests.support.catalog import fill_catalog, truth
from tests.support.server import serving

RUNS = 100_000


@pytest.fixture(scope="module")
def big_catalog(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    runs_dir = tmp_path_factory.mktemp("runs")
    fill_catalog(runs_dir, RUNS)
    rows = truth(RUNS)
    yield runs_dir, rows


def _shown(page: Page) -> str:
    return page.locator("#results[data-state=ready] #shown").inner_text()


def _changed(page: Page, action: Any) -> None:
    """Does `action` and waits until the results it asks for are in place."""
    before = page.locator("#results").element_handle()
    action()
    page.wait_for_function("old => !old.isConnected", arg=before, timeout=10_000)
    page.wait_for_selector("#results[data-state=ready]")


def _runs(page: Page) -> list[str]:
    return page.locator("#results tbody td:nth-child(2) > a").all_inner_texts()


def _column(page: Page, index: int) -> list[str]:
    return page.locator(f"#results tbody tr td:nth-child({index})").all_inner_texts()


def _local_only(requests: list[str], port: int) -> list[str]:
    return [url for url in requests if not url.startswith((f"http://127.0.0.1:{port}/", "data:"))]


def test_the_index_filters_sorts_and_pages_through_100000_runs(
    browser, big_catalog: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    runs_dir, rows = big_catalog
    with serving(runs_dir, tmp_path / "serve.log") as (_, port):
        watched = watched_page(browser, viewport={"width": 1280, "height": 900})
        page = watched.page
        page.goto(f"http://127.0.0.1:{port}/")
        assert (
            _shown(page) == f"1\N{EN DASH}50 of {RUNS:,} runs · page 1 of {math.ceil(RUNS / 50):,}"
        )
        newest = sorted(rows, key=lambda row: (row["rendered_at"],), reverse=True)
        assert _runs(page)[0] == newest[0]["run_id"]
        assert page.locator("#overlay polyline").count() == pages.INDEX_PRESELECTED

        # Filter by model: the total is that model's runs, every row shown is one.
        model, count = Counter(row["model"] for row in rows).most_common(2)[1]
        _changed(page, lambda: page.select_option("select[name=model]", model))
        assert _shown(page).startswith(f"1\N{EN DASH}50 of {count:,} runs")
        assert set(_column(page, 4)) == {model}
        assert parse_qs(urlsplit(page.url).query)["model"] == [model]  # the view is linkable

        # Sort by a loss's final value, lowest first: the lowest of that model comes first.
        _changed(page, lambda: page.select_option("select[name=sort]", "final:mse_loss"))
        _changed(page, lambda: page.select_option("select[name=order]", "asc"))
        finals = sorted(
            row["final"]["mse_loss"]
            for row in rows
            if row["model"] == model and row["final"].get("mse_loss") is not None
        )
        shown = [float(text) for text in _column(page, 10)]
        assert shown == sorted(shown)
        assert shown[0] == pytest.approx(finals[0], rel=1e-5)

        # The next page continues where the first ended.
        _changed(page, lambda: page.click("#next"))
        assert _shown(page).startswith(f"51\N{EN DASH}100 of {count:,} runs")
        assert float(_column(page, 10)[0]) >= shown[-1]
        page.go_back()
        page.wait_for_selector("#results[data-state=ready]")
        assert _shown(page).startswith("1\N{EN DASH}50 of")

        # A text search over run paths, names and config.
        _changed(page, lambda: page.select_option("select[name=model]", ""))
        target = rows[12345]["run_id"]
        _changed(page, lambda: page.fill("input[name=q]", target.upper()))
        assert target in _runs(page)
        assert watched.errors == []
        assert _local_only(watched.requests, port) == []


def test_a_sweep_groups_ranks_and_overlays_its_runs(
    browser, big_catalog: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    runs_dir, rows = big_catalog
    groups = Counter((row["model"], row["hook"], row["architecture"]) for row in rows)
    with serving(runs_dir, tmp_path / "serve.log") as (_, port):
        watched = watched_page(browser, viewport={"width": 1280, "height": 900})
        page = watched.page
        page.goto(f"http://127.0.0.1:{port}/?group=sweeps")
        largest = groups.most_common(1)[0]
        first = page.locator("#results tbody tr").first
        assert first.locator("td").nth(3).inner_text() == f"{largest[1]:,}"
        first.get_by_role("link", name="compare").click()
        page.wait_for_selector("#ranking")
        members = [
            row for row in rows if (row["model"], row["hook"], row["architecture"]) == largest[0]
        ]
        # Ranked by the first loss's final value, lowest first; the varying keys as columns.
        loss = sorted({name for row in members for name in row["final"]})[0]
        ranked = sorted(
            (row for row in members if row["final"].get(loss) is not None),
            key=lambda row: (row["final"][loss], row["run_id"]),
        )
        names = page.locator("#ranking tbody tr td:nth-child(3) > a").all_inner_texts()
        assert names[: len(ranked)] == [row["run_id"] for row in ranked][: len(names)]
        varying = sorted(
            name
            for name in {name for row in members for name in row["config"]}
            if len({row["config"].get(name) for row in members}) > 1
        )
        headers = page.locator("#ranking th.varying").all_inner_texts()
        assert headers == varying[: len(headers)] and headers
        assert page.locator("#overlay polyline").count() == min(10, len(names))
        # Ranking by the minimum instead reloads the page in that order.
        page.select_option("select[name=rank]", f"minimum:{loss}")
        page.wait_for_url(f"**rank=minimum%3A{loss}**")
        values = [
            float(text)
            for text in page.locator("#ranking tbody td:nth-last-child(2)").all_inner_texts()
            if text != "\N{EN DASH}"
        ]
        assert values == sorted(values)
        assert watched.errors == []
        assert _local_only(watched.requests, port) == []
