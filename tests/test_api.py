from __future__ import annotations

import subprocess
import sys

import lossreport


def test_public_names_are_pinned() -> None:
    assert sorted(lossreport.__all__) == sorted(
        [
            "CorruptShardError",
            "InvalidLossError",
            "LossGraphGenerator",
            "LossReportError",
            "MalformedRunFileError",
            "RenderResult",
            "Run",
            "RunClosedError",
            "RunDirectoryError",
            "__version__",
            "render_run",
            "start_run",
        ]
    )
    for name in lossreport.__all__:
        assert hasattr(lossreport, name)


def test_importing_the_trainer_side_loads_no_plotting_watching_or_torch() -> None:
    code = (
        "import sys, lossreport\n"
        "heavy = {'torch', 'altair', 'vl_convert', 'jinja2', 'watchdog'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
