"""A run view's notebook HTML: its summary, and its charts drawn by the chart library inlined
in the output once (gzip, base64: about 400 kB), so a notebook draws them offline, with no CDN
and no server: in Jupyter, JupyterLab, VS Code and an `nbconvert --to html` page alike.

The library is the chart engine's own bundle (report/vega.py), the one `serve`'s zoomable
charts run. Several outputs in one page unpack it once (the first to run); each draws its own
charts into its own element, named by an id unique to the output.
"""

from __future__ import annotations

import base64
import gzip
import math
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any

from ..report import pages, vega

if TYPE_CHECKING:
    from .view import RunView

TEMPLATE = "notebook.html.j2"
SCRIPT = "notebook.js"


@cache
def packed_library() -> str:
    """The chart library, gzipped and in base64 (bundled once per process: about 2 s)."""
    return base64.b64encode(gzip.compress(vega.javascript_bundle(), mtime=0)).decode("ascii")


def view_html(view: RunView) -> str:
    """The output: the run's names and status, a table of each loss's statistics, what could
    not be read, and the charts (every loss together, then each loss, zoomable on steps)."""
    specs = [finite(spec) for spec in view.specs()]
    return pages.render_page(
        TEMPLATE,
        uid=f"lossreport-{uuid.uuid4().hex}",
        view=view,
        run=view.record,
        losses=view.summary["losses"],
        total_steps=view.summary["total_steps"],
        chart_count=len(specs),
        specs_json=pages.script_json(specs),
        library=packed_library(),
        script=pages.template_script(SCRIPT),
    )


def finite(value: Any) -> Any:
    """`value` (a spec) with every NaN and infinity as null: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value
