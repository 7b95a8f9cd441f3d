"""The index, a report and a mail, opened in real headless Chromium."""

from __future__ import annotations

import base64
from pathlib import Path

import lossreport
from lossreport import runformat
from lossreport.report.render import render_held, render_lock
from tests.support.browser import broken_images, watched_page
from tests.support.daemon import run_once
from tests.support.server import serving
from tests.support.smtp import SmtpServer

XSS_MODEL = "<img src=x onerror=alert(1)>"
XSS_HOOK = '"><script>alert(2)</script>'
RUNS = [
    ("standard-run", "tiny-stories-1L-21M", "blocks.0.hook_mlp_out", "standard", 1.0),
    ("gated-run", "gpt2-small", "blocks.8.hook_resid_pre", "gated", 0.7),
    ("hostile-run", XSS_MODEL, XSS_HOOK, "topk", 1.3),
]


def _train(runs_dir: Path) -> None:
    for run_id, model, hook, architecture, scale in RUNS:
        with lossreport.start_run(
            runs_dir, model=model, hook=hook, architecture=architecture, run_id=run_id,
            config={"note": "<b>bold?</b>"},
        ) as run:  # fmt: skip
            for step in range(500):
                run.log(step, mse_loss=scale / (1 + step / 50), l1_loss=0.2 + 0.001 * (step % 7))


def _local_only(requests: list[str], port: int) -> list[str]:
    allowed = (f"http://127.0.0.1:{port}/", "data:")
    return [url for url in requests if not url.startswith(allowed)]


def test_the_static_index_compares_runs_and_runs_no_injected_code(browser, runs_dir: Path) -> None:
    _train(runs_dir)
    assert run_once(runs_dir).returncode == 0
    watched = watched_page(browser, viewport={"width": 1280, "height": 900})
    page = watched.page
    page.goto((runs_dir / runformat.INDEX_FILE).as_uri())  # opened from disk, no server
    assert page.locator("#shown").inner_text() == "3 of 3 runs"
    assert page.locator("#overlay polyline").count() == 3
    # The hostile model name is shown as text; no element came out of it.
    assert page.get_by_role("cell", name=XSS_MODEL, exact=True).is_visible()
    assert page.get_by_role("cell", name=XSS_HOOK, exact=True).is_visible()
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("body script").count() == 2  # our data block and our script
    # Filter by model: one run left, one line in the overlay.
    page.select_option("select[data-filter=model]", "gpt2-small")
    assert page.locator("#shown").inner_text() == "1 of 3 runs"
    assert page.locator("#overlay polyline").count() == 1
    page.select_option("select[data-filter=model]", "")
    page.select_option("select[data-filter=architecture]", "topk")
    assert page.locator("#legend li").all_inner_texts() == ["hostile-run"]
    page.select_option("select[data-filter=architecture]", "")
    page.select_option("#loss", "l1_loss")
    page.check("#log-scale")
    assert page.locator("#overlay polyline").count() == 3
    page.click("#select-none")
    assert page.locator("#overlay polyline").count() == 0
    # Into a report through its link.
    page.get_by_role("link", name="hostile-run").click()
    page.wait_for_load_state()
    assert page.url.startswith((runs_dir / "hostile-run" / "loss_graphs").as_uri())
    assert page.locator("h1").inner_text().startswith(XSS_MODEL)
    assert broken_images(page) == []
    assert page.locator("b").count() == 0  # the config's <b> is text
    assert watched.errors == []
    assert watched.dialogs == []
    assert [url for url in watched.requests if not url.startswith(("file://", "data:"))] == []
    page.close()


def test_the_served_index_compares_runs_and_runs_no_injected_code(
    browser, runs_dir: Path, tmp_path: Path
) -> None:
    _train(runs_dir)
    assert run_once(runs_dir).returncode == 0
    with serving(runs_dir, tmp_path / "serve.log") as (_, port):
        watched = watched_page(browser, viewport={"width": 1280, "height": 900})
        page = watched.page
        page.goto(f"http://127.0.0.1:{port}/")
        assert page.locator("#shown").inner_text() == "1\N{EN DASH}3 of 3 runs · page 1 of 1"
        assert page.locator("#overlay polyline").count() == 3
        assert page.get_by_role("cell", name=XSS_MODEL, exact=True).is_visible()
        assert page.get_by_role("cell", name=XSS_HOOK, exact=True).is_visible()
        assert page.locator("img[src=x]").count() == 0
        # The filter's options hold the hostile name as text too; choosing it asks the server.
        before = page.locator("#results").element_handle()
        page.select_option("select[name=model]", XSS_MODEL)
        page.wait_for_function("old => !old.isConnected", arg=before)
        assert (
            page.locator("#results[data-state=ready] #shown")
            .inner_text()
            .startswith("1\N{EN DASH}1 of 1")
        )
        assert page.locator("#legend li").all_inner_texts() == ["hostile-run"]
        page.get_by_role("link", name="hostile-run").click()
        page.wait_for_load_state()
        assert page.url.startswith(f"http://127.0.0.1:{port}/hostile-run/loss_graphs/")
        assert page.locator("img").count() >= 3
        assert broken_images(page) == []
        assert page.locator("b").count() == 0
        assert watched.errors == []
        assert watched.dialogs == []
        assert _local_only(watched.requests, port) == []
        page.close()


def test_the_mailed_html_shows_its_chart_and_fetches_nothing(browser, runs_dir: Path) -> None:
    _train(runs_dir)
    with SmtpServer() as smtp:
        result = run_once(runs_dir, "--email-to", "me@example.com", "--smtp-port", str(smtp.port))
        assert result.returncode == 0, result.stderr
        messages = [r.message for r in smtp.received]
    (message,) = [m for m in messages if m["X-Lossreport-Run"] == "hostile-run"]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    for part in message.walk():  # what a mail client does with cid: references
        if part["Content-ID"]:
            data = base64.b64encode(part.get_content()).decode()
            html = html.replace(
                f"cid:{part['Content-ID'].strip('<>')}", f"data:image/png;base64,{data}"
            )
    watched = watched_page(browser, viewport={"width": 760, "height": 900})
    watched.page.set_content(html)
    assert broken_images(watched.page) == []
    assert watched.page.locator("h1").inner_text().startswith(XSS_MODEL)
    assert watched.errors == [] and watched.dialogs == []
    assert [url for url in watched.requests if not url.startswith(("data:", "about:"))] == []
    watched.page.close()


def test_the_quick_report_says_its_charts_are_coming_and_runs_no_injected_code(
    browser, runs_dir: Path
) -> None:
    """The page a backlog writes first (daemon/scheduler.py's RenderQueue): the summary and the
    run's details, a note that the charts are being drawn, nothing a run's names could run."""
    with lossreport.start_run(
        runs_dir, model=XSS_MODEL + " 中文", hook=XSS_HOOK, architecture="topk",
        config={"note": "<b>bold?</b>"},
    ) as run:  # fmt: skip
        for step in range(300):
            run.log(step, mse_loss=1 / (1 + step / 40), l1_loss=0.2 + step / 3000)
    with render_lock(run.path, wait=0) as run_fd:
        result = render_held(run.path, run_fd, draw=False)
    watched = watched_page(browser, viewport={"width": 1100, "height": 900})
    page = watched.page
    page.goto(result.report.as_uri())
    note = page.get_by_role("status")
    assert note.is_visible() and note.inner_text().startswith("The charts are being drawn.")
    assert page.locator("h1").inner_text().startswith(XSS_MODEL + " 中文")
    assert page.get_by_role("cell", name="mse_loss", exact=True).is_visible()
    assert page.locator("img").count() == 0 and page.locator("b").count() == 0
    assert page.locator("script").count() == 0
    assert watched.errors == [] and watched.dialogs == []
    assert [url for url in watched.requests if not url.startswith(("file://", "data:"))] == []
    page.close()
