"""Optional test dependencies (a browser, SAELens): skip without them on a developer's machine,
fail in CI, which installs them all and sets LOSSREPORT_REQUIRE_OPTIONAL=1."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "LOSSREPORT_REQUIRE_OPTIONAL"


def missing(what: str, how: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but {what} is missing ({how})")
    pytest.skip(f"{what} is not installed ({how})", allow_module_level=True)
