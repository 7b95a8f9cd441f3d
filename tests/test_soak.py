"""The fast part of the reliability soak (benchmarks/soak.py --quick), in CI."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.procs import ROOT


@pytest.mark.slow
def test_the_quick_soak_loses_nothing_through_kills_and_corruption() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"values lost \(must be 0\)\s+0\n", out), out
    assert re.search(r"trainer SIGKILLs survived\s+2\n", out), out
    assert re.search(r"daemon SIGKILLs \+ restarts survived\s+1\n", out), out
    assert re.search(r"corrupt inputs named in their report\s+2\n", out), out
    assert re.search(r"reports complete\s+8 of 8\n", out), out
