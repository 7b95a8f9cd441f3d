"""Vega-Lite specs to SVG and 300 DPI PNG with vl-convert, in this process or in a helper one.

Kept apart from charts.py (which imports Altair) so a helper process starts with only
vl-convert. vl-convert holds the GIL and one global lock while it draws, so a second core
only helps from a second process: `ChartRenderer(helper=True)` draws half of the charts there.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import cache
from types import TracebackType
from typing import Any

import vl_convert

from .errors import LossReportError

PPI = 300


@cache
def warm_up() -> None:
    """Start vl-convert's JavaScript engine (about 0.4 s, once per process)."""
    vl_convert.vegalite_to_svg({"mark": "point"}, allowed_base_urls=[])


def render(spec: dict[str, Any]) -> tuple[str, bytes]:
    """The chart as SVG (for pages) and as a 300 DPI PNG (vl-convert writes its pHYs chunk).

    The PNG is rasterised from the SVG, so both cost about one render. No network access.
    """
    try:
        svg = str(vl_convert.vegalite_to_svg(spec, allowed_base_urls=[]))
        return svg, bytes(vl_convert.svg_to_png(svg, ppi=PPI))
    except Exception as exc:  # vl-convert raises plain ValueError/RuntimeError from Rust
        raise LossReportError(f"chart rendering failed: {exc}") from exc


class ChartRenderer:
    """Draws a list of specs; with `helper=True`, a warm second process draws some of them."""

    def __init__(self, helper: bool = False) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if helper:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=warm_up
            )
            self._pool.submit(int)  # start the helper now (pools start lazily): it warms up
            # while this process imports the charting modules and reads the shards

    def render_all(self, specs: Sequence[dict[str, Any]]) -> list[tuple[str, bytes]]:
        if self._pool is None or len(specs) < 2:
            return [render(spec) for spec in specs]
        # The helper is warm by now; this process still has to start its chart engine, so the
        # helper takes the larger share.
        split = len(specs) // 2
        remote: list[Future[tuple[str, bytes]]] = [
            self._pool.submit(render, spec) for spec in specs[split:]
        ]
        local = [render(spec) for spec in specs[:split]]
        return local + [future.result() for future in remote]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> ChartRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
