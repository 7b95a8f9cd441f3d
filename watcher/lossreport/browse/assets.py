"""The chart library the zoomable charts run on: Vega, Vega-Lite and vega-embed as the
installed chart engine (vl-convert) bundles them, so nothing is fetched from a CDN and the
library in the browser is the one that draws the reports' PNGs.

Bundling takes about two seconds, once per server; the page loads it from `/.assets/chart.js`
with its hash as subresource integrity, and the page's policy allows it by that hash alone.
"""

from __future__ import annotations

import threading
from functools import cache

from ..report import pages, vega

CHART_LIBRARY = "chart.js"
_lock = threading.Lock()


@cache
def _bundle() -> bytes:
    return vega.javascript_bundle()


def chart_library() -> bytes:
    with _lock:  # the first requests of a page arrive together: bundle once
        return _bundle()


def chart_library_hash() -> str:
    """The bundle's `sha256-...`, for the page's CSP and the script's integrity attribute."""
    return _library_hash(chart_library())


@cache
def _library_hash(bundle: bytes) -> str:
    return pages.script_hash(bundle)
