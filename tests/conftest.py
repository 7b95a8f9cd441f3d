from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossreport.trainer.closing_report import ENVIRONMENT_VARIABLE
from tests.support.browser import browser

__all__ = ["browser"]  # one Chromium for the whole session: Playwright runs one at a time

# A run renders its report at close unless a daemon follows its directory: a second and a half
# per run, which most tests do not look at. The tests of that report remove this (and trainer
# subprocesses inherit it).
os.environ[ENVIRONMENT_VARIABLE] = "0"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "runs"
    path.mkdir()
    yield path
