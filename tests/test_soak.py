"""The fast part of the reliability soak (benchmarks/soak.py --quick), in CI: trainer and
daemon kills, corrupt inputs, two writers of one run id, and runs deleted mid-render."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ROOT


@pytest.mark.slow
def test_the_quick_soak_loses_nothing_through_kills_corruption_shared_ids_and_deletions() -> None:
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
    assert re.search(r"writers sharing a run id\s+4 in 2 runs\n", out), out
    assert re.search(r"trainer SIGKILLs survived\s+2\n", out), out
    assert re.search(r"of writers sharing a run id\s+1\n", out), out
    assert re.search(r"daemon SIGKILLs \+ restarts survived\s+1\n", out), out
    assert re.search(r"corrupt inputs named in their report\s+2\n", out), out
    assert re.search(r"runs deleted mid-render\s+1 of 1\n", out), out
    assert re.search(r"runs deleted as their trainer ended\s+1\n", out), out
    assert re.search(r"deleted runs left behind \(must be 0\)\s+0\n", out), out
    assert re.search(r"reports complete\s+6 of 6\n", out), out
    assert re.search(r"hostile runs reported, what they hold bounded\s+4 of 4\n", out), out
    assert re.search(r"peak memory of each render worker and chart helper \(\d+\)\s+median", out)
    assert re.search(r"idle daemon CPU after the soak, 5 s\s+\d+\.\d% of a core", out), out
    workdir = re.search(r"lossreport soak \((.+)\)\n", out)
    assert workdir is not None and not Path(workdir[1]).exists()  # removed once it passed
