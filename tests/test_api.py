from __future__ import annotations

import subprocess
import sys

import lossreport


def test_public_names_are_pinned() -> None:
    assert sorted(lossreport.__all__) == sorted(
        [
            "CorruptShardError",
            "FileTooLargeError",
            "InvalidLossError",
            "LossGraphGenerator",
            "LossReportError",
            "MalformedRunFileError",
            "RenderResult",
            "Run",
            "RunBusy",
            "RunClosedError",
            "RunDirectoryError",
            "UnsafePathError",
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


def test_every_error_survives_pickling_between_processes() -> None:
    import pickle
    from pathlib import Path

    errors = [
        lossreport.LossReportError("plain"),
        lossreport.InvalidLossError("bad value", key="mse_loss", value=object()),
        lossreport.RunClosedError(Path("runs/r")),
        lossreport.RunDirectoryError(Path("runs/r"), "is not a directory"),
        lossreport.MalformedRunFileError(Path("runs/r/run.json"), "not valid JSON"),
        lossreport.CorruptShardError(Path("runs/r/losses/part-000001.parquet"), "truncated"),
        lossreport.RunBusy(Path("runs/r")),
        lossreport.UnsafePathError(Path("runs/r/loss_graphs"), "is a symbolic link"),
        lossreport.FileTooLargeError(Path("runs/r/run.json"), "is 2 GB, over the limit"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert getattr(copy, "path", None) == getattr(error, "path", None)
        assert getattr(copy, "key", None) == getattr(error, "key", None)
