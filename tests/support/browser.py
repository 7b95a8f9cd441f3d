"""Debian's headless Chromium, driven by Playwright, recording what a page does.

Without a chromium that starts, the browser tests skip (and fail in CI) saying how to install
Debian's: Playwright's own advice, `playwright install`, downloads a browser CI does not use."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

from tests.support.optional import missing

INSTALL = "apt-get install chromium"


def _why(exc: Error) -> str:
    """The browser's own complaint from Playwright's launch log, else its first line."""
    lines = str(exc).splitlines()
    said = [line.split("[err]", 1)[1].strip() for line in lines if "[err]" in line]
    return (said or lines or ["it did not start"])[0][:200]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        missing("Debian's chromium", INSTALL)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Error as exc:  # a stub (Ubuntu's snap wrapper), missing libraries
            missing(f"a chromium that starts ({executable}: {_why(exc)})", INSTALL)
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page and everything it did that a test may object to."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def watched_page(browser: Browser, **options: Any) -> Watched:
    page = browser.new_page(**options)
    watched = Watched(page)
    page.on(
        "console",
        lambda m: watched.errors.append(m.text) if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    page.on("request", lambda r: watched.requests.append(r.url))

    def dismiss(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return watched


def broken_images(page: Page) -> list[str]:
    return list(
        page.evaluate(
            "Array.from(document.images)"
            ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src)"
        )
    )
