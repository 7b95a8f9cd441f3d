"""The installed version, here rather than in the package's `__init__` so that modules can
show it without importing back up the layers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lossreport")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
