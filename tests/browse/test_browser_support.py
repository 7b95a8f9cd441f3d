"""The browser tests' own set-up: without a working chromium they skip with Debian's install
line, not Playwright's (tests/support/browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.optional import REQUIRE_ENV
from tests.support.procs import PYTHONPATH, ROOT

# What a chromium missing a library does: complain and exit.
BROKEN = (
    '#!/bin/sh\necho "chromium: error while loading shared libraries: libnss3.so" >&2\nexit 127\n'
)


@pytest.mark.parametrize("chromium", [None, BROKEN], ids=["missing", "broken"])
def test_without_a_working_chromium_the_skip_says_how_to_install_debians(
    tmp_path: Path, chromium: str | None
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if chromium is not None:
        (bin_dir / "chromium").write_text(chromium)
        (bin_dir / "chromium").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != REQUIRE_ENV}
    env |= {"PATH": str(bin_dir), "PYTHONPATH": PYTHONPATH}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/browse/test_zoom_browser.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (skipped,) = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped.endswith("(apt-get install chromium)"), skipped
    assert "playwright install" not in result.stdout + result.stderr
    if chromium is not None:
        assert "error while loading shared libraries" in skipped
