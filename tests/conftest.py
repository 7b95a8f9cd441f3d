from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossreport.trainer.closing_report import ENVIRONMENT_VARIABLE
from tests.support.browser import browser
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["browser", "postgres_server", "postgres_url"]  # one Chromium, one PostgreSQL server
# for the whole session: Playwright runs one at a time; each test has its own database

# A run renders its report at close unless a daemon follows its directory: a second and a half
# per run, which most tests do not look at. The tests of that report remove this (and trainer
# subprocesses inherit it).
os.environ[ENVIRONMENT_VARIABLE] = "0"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "runs"
    path.mkdir()
    yield path
