"""lossreport: record training losses to Parquet shards and turn finished runs into reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    CorruptShardError,
    InvalidLossError,
    LossReportError,
    MalformedRunFileError,
    RunClosedError,
    RunDirectoryError,
)
from .tracker import Run, start_run

try:
    __version__ = version("lossreport")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CorruptShardError",
    "InvalidLossError",
    "LossReportError",
    "MalformedRunFileError",
    "Run",
    "RunClosedError",
    "RunDirectoryError",
    "__version__",
    "start_run",
]
