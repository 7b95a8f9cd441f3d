"""lossreport: record training losses to Parquet shards and turn finished runs into reports."""

from __future__ import annotations

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossreport' has no attribute {name!r}")
