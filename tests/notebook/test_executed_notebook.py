"""A notebook executed on a real Jupyter kernel (nbclient): a DVCLive run opened with
`lossreport.open` and a live `Run` displayed, their outputs holding the summary and the
charts' specs; then the notebook exported to HTML (nbconvert) and drawn by headless Chromium
with every request off the machine refused: the charts draw from the inlined library."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Route

from tests.support import dvclive_trainer
from tests.support.browser import watched_page
from tests.support.optional import missing
from tests.support.procs import PYTHONPATH, wait_for

try:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
except ImportError:
    missing("nbclient, nbformat and nbconvert", "pip install -e '.[dev]'")

pytestmark = pytest.mark.slow  # a kernel, the chart library bundled in it, a browser
# What nbconvert's own page template loads from a CDN (its HTML, not the outputs'): refused
# like any other request, and not needed by the charts.
NBCONVERT_PAGE = re.compile(r"https://cdnjs\.cloudflare\.com/ajax/libs/(require\.js|mathjax)/")
LIVE_RUN = "live-sae_ω"


def _notebook(dvclive_dir: Path, runs: Path) -> Any:
    cells = [
        f"import lossreport\nview = lossreport.open({str(dvclive_dir)!r})\nview",
        "view.history.tail(3)",
        f"run = lossreport.start_run({str(runs)!r}, model='gelu-1l', "
        f"hook='blocks.0.hook_mlp_out', run_id={LIVE_RUN!r})\n"
        "for step in range(50):\n"
        "    run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.3 + 1.0 / (step + 2))\n"
        "run",
        "run.close()",
    ]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])


def _html_of(cell: Any) -> str:
    (output,) = [out for out in cell.outputs if out.output_type == "execute_result"]
    html: str = output.data["text/html"]
    return html


def _specs(html: str) -> list[dict[str, Any]]:
    found = re.search(r"var specs = (\[.*?\]);\n", html, re.S)
    assert found is not None
    specs: list[dict[str, Any]] = json.loads(found.group(1))
    return specs


def test_an_executed_notebook_shows_runs_and_its_html_draws_them_offline(
    tmp_path: Path, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)  # the kernel runs this checkout's package
    dvclive_dir = tmp_path / "sweep" / "lr-3e-4" / "dvclive"
    logged = dvclive_trainer.write(dvclive_dir, 12)
    runs = tmp_path / "runs"
    runs.mkdir()
    notebook = _notebook(dvclive_dir, runs)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    opened, history, live, _ = notebook.cells
    html = _html_of(opened)
    assert "lr-3e-4 (DVCLive, running)" in opened.outputs[0].data["text/plain"]
    assert "<td>train/mse_loss</td>" in html and "<td>eval/loss</td>" in html  # the summary
    specs = _specs(html)
    assert len(specs) == 1 + len(logged)
    assert [spec["layer"][0]["name"] for spec in specs[1:]] == ["raw"] * len(logged)
    assert "train/mse_loss" in json.dumps(specs[0]["datasets"])
    assert "l1_loss" in history.outputs[0].data["text/plain"]  # the DataFrame
    live_html = _html_of(live)
    assert LIVE_RUN in live_html and "<td>mse_loss</td>" in live_html
    assert len(_specs(live_html)) == 3  # both losses together, then each
    for page_html in (html, live_html):
        assert not re.search(r"<script[^>]*\bsrc=", page_html)  # the outputs fetch nothing

    exported, _ = HTMLExporter().from_notebook_node(notebook)
    page_file = tmp_path / "notebook.html"
    page_file.write_text(exported)
    refused: list[str] = []

    def local_only(route: Route) -> None:
        if route.request.url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    watched = watched_page(browser, viewport={"width": 1280, "height": 900})
    watched.page.route("**/*", local_only)
    watched.page.goto(page_file.as_uri())
    watched.page.wait_for_function(
        "Array.from(document.querySelectorAll('.lossreport-run'))"
        ".every(run => run.dataset.state === 'drawn')",
        timeout=60_000,
    )
    marks = watched.page.evaluate(
        "Array.from(document.querySelectorAll('.lossreport-run [data-chart]'))"
        ".map(chart => chart.querySelectorAll('svg path').length)"
    )
    assert len(marks) == len(specs) + 3 and min(marks) > 10, marks  # every chart drew
    assert watched.page.locator(".lossreport-run .lr-error").all_text_contents() == [""] * 2
    watched.page.screenshot(path=tmp_path / "notebook.png", full_page=True)
    # A loss's chart zooms its steps under the wheel.
    chart = watched.page.locator(".lossreport-run [data-chart]").nth(1)
    chart.scroll_into_view_if_needed()
    before = chart.locator(".role-axis-label text").all_text_contents()
    box = chart.locator("svg").bounding_box()
    assert box is not None
    watched.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    watched.page.mouse.wheel(0, -600)
    wait_for(lambda: chart.locator(".role-axis-label text").all_text_contents() != before)
    assert all(NBCONVERT_PAGE.match(url) for url in refused), refused
    assert [error for error in watched.errors if "ERR_FAILED" not in error] == []
    watched.page.close()
