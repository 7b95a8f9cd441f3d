"""lossreport: record training losses to Parquet shards and turn finished runs into reports."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .errors import (
    ChartRenderError,
    CorruptShardError,
    FileTooLargeError,
    InvalidInputError,
    InvalidLossError,
    LossReportError,
    MalformedRunFileError,
    RunBusy,
    RunClosedError,
    RunDirectoryError,
    UnsafePathError,
)
from .version import __version__

if TYPE_CHECKING:
    from .report.graphs import LossGraphGenerator
    from .report.render import RenderResult, render_run
    from .trainer.tracker import Run, start_run


__all__ = [
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

# Imported on first use: a trainer that only logs never loads Altair, vl-convert and Jinja2, and
# a chart-drawing helper process (report/vega.py) starts without pyarrow and numpy.
_LAZY = {
    "Run": "lossreport.trainer.tracker",
    "start_run": "lossreport.trainer.tracker",
    "LossGraphGenerator": "lossreport.report.graphs",
    "RenderResult": "lossreport.report.render",
    "render_run": "lossreport.report.render",
}


# `lossreport.open`: not in __all__, so `from lossreport import *` never hides the built-in.
_LAZY_RENAMED = {"open": ("lossreport.notebook.opening", "open_run")}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_RENAMED:
        module, attribute = _LAZY_RENAMED[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'lossreport' has no attribute {name!r}")


def _show_runs_in_notebooks() -> None:
    """Under IPython (Jupyter, VS Code), a `Run` displays as `lossreport.open` of its folder.
    Registered by the class's name, so nothing is imported until a run is shown, and a
    training script outside a notebook does nothing here."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    html = shell.display_formatter.formatters["text/html"]
    html.for_type_by_name("lossreport.trainer.tracker", "Run", _run_html)


def _run_html(run: Any) -> str:
    from .notebook.opening import live_run_html

    return live_run_html(run)


_show_runs_in_notebooks()
