"""A million-step run's zoomable charts, through `lossreport serve`, in real headless Chromium:
zoomed with the mouse wheel down to about a hundred steps, a single step's value read under
the pointer, smoothing and the log scale switched."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, Page

from tests.support.browser import watched_page
from tests.support.long_run import value_at, write_long_run
from tests.support.server import serving

CHART = "section[data-loss=mse_loss]"


def _range(page: Page) -> tuple[int, bool]:
    """How many steps the mse_loss chart's range holds, and whether every one is drawn."""
    page.wait_for_selector(f"{CHART}[data-state=ready]")
    text = page.locator(f"{CHART} [data-range]").inner_text()
    match = re.search(r": ([\d,]+) logged, (every one shown|each pixel column)", text)
    assert match, text
    return int(match.group(1).replace(",", "")), match.group(2) == "every one shown"


def _paths(page: Page) -> list[str]:
    """The `d` of the raw and the smoothed lines."""
    return [
        str(path.get_attribute("d")) for path in page.locator(f"{CHART} g.mark-line path").all()
    ]


def _axis_labels(page: Page, axis: str) -> list[str]:
    return page.locator(f"{CHART} g[aria-label^='{axis}'] g.mark-text text").all_inner_texts()


def test_a_million_step_chart_zooms_to_single_steps(
    browser: Browser, runs_dir: Path, tmp_path: Path
) -> None:
    write_long_run(runs_dir)
    with serving(runs_dir, tmp_path / "serve.log") as (_, port):
        watched = watched_page(browser, viewport={"width": 1280, "height": 900})
        page = watched.page
        response = page.goto(f"http://127.0.0.1:{port}/.run/long-run")
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "'unsafe-eval'" not in policy and "script-src 'sha256-" in policy
        assert _range(page) == (1_000_000, False)

        # Wheel in around step 734,000 until about a hundred steps are in view.
        plot = page.locator(f"{CHART} svg").bounding_box()
        assert plot is not None
        x, y = plot["x"] + plot["width"] * 0.73, plot["y"] + plot["height"] * 0.5
        page.mouse.move(x, y)
        steps, exact = 1_000_000, False
        for _ in range(40):
            if steps <= 200:
                break
            before = page.locator(f"{CHART} [data-range]").inner_text()
            page.mouse.wheel(0, -400)
            page.wait_for_function(
                "([selector, old]) => document.querySelector(selector).textContent !== old",
                arg=[f"{CHART} [data-range]", before],
            )
            steps, exact = _range(page)
        assert 20 <= steps <= 200 and exact, steps

        # The value under the pointer is the step's own, as logged.
        page.mouse.move(x + 5, y)
        readout = page.locator(f"{CHART} [data-readout]")
        page.wait_for_function(
            "selector => document.querySelector(selector).textContent.startsWith('step ')",
            arg=f"{CHART} [data-readout]",
        )
        step_text, value_text = readout.inner_text().removeprefix("step ").split(": ")
        step = int(step_text.replace(",", ""))
        assert 600_000 < step < 900_000
        assert float(value_text) == float(value_at(step))  # exactly as logged

        # Smoothing 0 draws the smoothed line on the raw one; 0.9 moves it off.
        page.locator("#smoothing").fill("0")
        page.wait_for_function(
            "selector => { const d = [...document.querySelectorAll(selector)]"
            ".map(p => p.getAttribute('d')); return d.length === 2 && d[0] === d[1]; }",
            arg=f"{CHART} g.mark-line path",
        )
        page.locator("#smoothing").fill("0.9")
        page.wait_for_function(
            "selector => { const d = [...document.querySelectorAll(selector)]"
            ".map(p => p.getAttribute('d')); return d.length === 2 && d[0] !== d[1]; }",
            arg=f"{CHART} g.mark-line path",
        )

        # The log scale keeps the zoom; its value axis is another.
        steps_shown = _axis_labels(page, "X-axis")
        values_linear = _axis_labels(page, "Y-axis")
        page.check("#log-scale")
        page.wait_for_function(
            "([selector, old]) => { const t = [...document.querySelectorAll(selector)]"
            ".map(e => e.textContent); return t.length > 0 && t.join() !== old.join(); }",
            arg=[f"{CHART} g[aria-label^='Y-axis'] g.mark-text text", values_linear],
        )
        assert _axis_labels(page, "X-axis") == steps_shown

        # Double-click: all steps again.
        before = page.locator(f"{CHART} [data-range]").inner_text()
        page.mouse.dblclick(x, y)
        page.wait_for_function(
            "([selector, old]) => document.querySelector(selector).textContent !== old",
            arg=[f"{CHART} [data-range]", before],
        )
        assert _range(page) == (1_000_000, False)
        assert watched.errors == []
        assert watched.dialogs == []
        allowed = (f"http://127.0.0.1:{port}/", "data:")
        assert [url for url in watched.requests if not url.startswith(allowed)] == []
