from __future__ import annotations

import subprocess
import sys

import lossreport


def test_public_names_are_pinned() -> None:
    assert sorted(lossreport.__all__) == sorted(
        [
            "ChartRenderError",
            "CorruptShardError",
            "FileTooLargeError",
            "InvalidInputError",
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

    from lossreport import errors

    errors = [
        lossreport.LossReportError("plain"),
        lossreport.InvalidInputError("loss_history needs a 'steps' (or 'step') entry"),
        lossreport.ChartRenderError("chart rendering failed: no engine"),
        lossreport.InvalidLossError("bad value", key="mse_loss", value=object()),
        lossreport.RunClosedError(Path("runs/r")),
        lossreport.RunDirectoryError(Path("runs/r"), "is not a directory"),
        lossreport.MalformedRunFileError(Path("runs/r/run.json"), "not valid JSON"),
        lossreport.CorruptShardError(Path("runs/r/losses/part-000001.parquet"), "truncated"),
        lossreport.RunBusy(Path("runs/r")),
        lossreport.UnsafePathError(Path("runs/r/loss_graphs"), "is a symbolic link"),
        lossreport.FileTooLargeError(Path("runs/r/run.json"), "is 2 GB, over the limit"),
        errors.ConfigError("lossreport.toml: not a TOML file"),
        errors.MailError("sending through localhost:25 failed"),
        errors.ServeError("cannot listen on 127.0.0.1:80: permission denied"),
        errors.DemoError("an example trainer failed (exit 1)"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert getattr(copy, "path", None) == getattr(error, "path", None)
        assert getattr(copy, "key", None) == getattr(error, "key", None)


def test_the_tree_in_errors_docstring_is_the_real_one() -> None:
    """Every exception class is in errors.py, and its docstring draws them as they are."""
    import re

    from lossreport import errors

    drawn: dict[str, str | None] = {}
    parents: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^([│├└─ ]*)([A-Z]\w+) {2,}", line)
        if match is None:
            continue
        depth = len(match.group(1)) // 4
        parents[depth:] = [match.group(2)]
        drawn[match.group(2)] = parents[depth - 1] if depth else None
    real = {
        name: next((b.__name__ for b in cls.__bases__ if issubclass(b, Exception)), None)
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, Exception)
    }
    real["LossReportError"] = None
    assert drawn == real
