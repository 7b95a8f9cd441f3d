"""Vega-Lite specs to SVG and 300 DPI PNG with vl-convert, in this process or in a helper one.

Kept apart from charts.py (which imports Altair) so a helper process starts with only
vl-convert. vl-convert holds the GIL and one global lock while it draws, so a second core
only helps from a second process. Its JavaScript engine takes 0.4 s of CPU to start in each
process, so `ChartRenderer(helper=True)` starts it once, in the helper, which makes the SVGs;
rasterising them to PNG needs no engine and runs here, overlapped with the helper.

Each spec is compiled from Vega-Lite to Vega once per chart *shape* (`compiled`): a report's
charts differ from the run before's only in their data and titles, which are put into a copy of
the compiled shape, and Vega draws that.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import cache, lru_cache
from types import TracebackType
from typing import Any

import vl_convert

from ..errors import ChartRenderError
from ..processes import exit_with_parent

PPI = 300
# Compiled chart shapes kept per process: one per loss name, axis kind and set of layers in use,
# about 2 KB each. A sweep's runs share a handful; more only recompile.
COMPILED_SHAPES = 256
_TITLE_PARTS = ("text", "subtitle")
_TOKEN = re.compile(r"\\u0001((?:text|subtitle)-\d+)\\u0001")  # a title line's place, in JSON


# What the browser bundle leaves for a page's own script: vega-embed and Vega (its interpreter).
BUNDLE_GLOBALS = "window.vegaEmbed = vegaEmbed; window.vega = vega;"


def javascript_bundle() -> bytes:
    """Vega, Vega-Lite and vega-embed for a browser, as this chart engine bundles them: the
    zoomable charts run the library that draws the reports (about 2 s; cache it)."""
    return vl_convert.javascript_bundle(BUNDLE_GLOBALS).encode()


@cache
def warm_up() -> None:
    """Start vl-convert's JavaScript engine (about 0.4 s, once per process)."""
    vl_convert.vegalite_to_svg({"mark": "point"}, allowed_base_urls=[])


def _start_helper() -> None:
    """The helper process's start: end with the process it draws for, then warm up. A killed
    `lossreport render` would otherwise leave it waiting for work for ever (its own end of the
    pool's queue keeps that open), holding 190 MB and the pipes a trainer reads to their end."""
    exit_with_parent()
    warm_up()


def render(spec: dict[str, Any]) -> tuple[str, bytes]:
    """The chart as SVG (for pages) and as a 300 DPI PNG rasterised from that SVG. No network."""
    svg = to_svg(spec)
    return svg, to_png(svg)


def to_svg(spec: dict[str, Any]) -> str:
    """Runs Vega in the JavaScript engine: the only step that needs `warm_up`."""
    with _as_chart_error():
        return str(vl_convert.vega_to_svg(compiled(spec), allowed_base_urls=[]))


def compiled(spec: dict[str, Any]) -> dict[str, Any]:
    """The Vega-Lite `spec` as Vega, the same as Vega-Lite's compiler makes it (which costs
    20 ms a chart, a seventh of drawing it): `spec` without its datasets and title lines is
    compiled once (`_compiled_shape`), then the run's own title lines and data go into a copy."""
    shape = {key: value for key, value in spec.items() if key != "datasets"}
    shape["datasets"] = {name: [] for name in spec.get("datasets", {})}
    lines: dict[str, str] = {}
    title = spec.get("title")
    if isinstance(title, dict):
        shape["title"] = dict(title)
        for part in _TITLE_PARTS:
            texts = title.get(part)
            if isinstance(texts, str):
                lines[f"{part}-0"] = texts
                shape["title"][part] = f"\x01{part}-0\x01"
            elif isinstance(texts, list):
                # A control character: none is left in a chart's text (charts.chart_text).
                lines.update({f"{part}-{index}": str(line) for index, line in enumerate(texts)})
                shape["title"][part] = [f"\x01{part}-{index}\x01" for index in range(len(texts))]
    text = _TOKEN.sub(
        lambda token: json.dumps(lines[token[1]])[1:-1],
        _compiled_shape(json.dumps(shape, sort_keys=True)),
    )
    vega: dict[str, Any] = json.loads(text)
    datasets = spec.get("datasets", {})
    for entry in vega.get("data", []):
        if entry.get("name") in datasets and "values" in entry:
            entry["values"] = datasets[entry["name"]]
    return vega


@lru_cache(maxsize=COMPILED_SHAPES)
def _compiled_shape(shape: str) -> str:
    """A chart shape (JSON) compiled to Vega, as JSON."""
    return json.dumps(vl_convert.vegalite_to_vega(json.loads(shape)))


def to_png(svg: str, ppi: float = PPI) -> bytes:
    """resvg, no JavaScript: costs the same in a cold process. vl-convert writes the pHYs chunk
    that records the resolution (300 DPI for files; mail draws at screen size)."""
    with _as_chart_error():
        return bytes(vl_convert.svg_to_png(svg, ppi=ppi))


@contextmanager
def _as_chart_error() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # vl-convert raises plain ValueError/RuntimeError from Rust
        raise ChartRenderError(f"chart rendering failed: {exc}") from exc


class ChartRenderer:
    """Draws a list of specs in this process or, with `helper=True`, in two stages on two cores:
    a warm helper process turns each spec into SVG while this one rasterises the one before."""

    def __init__(self, helper: bool = False) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if helper:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_helper,
            )
            self._pool.submit(int)  # start the helper now (pools start lazily): it warms up
            # while this process imports the charting modules and reads the shards

    def render_all(self, specs: Iterable[dict[str, Any]]) -> list[tuple[str, bytes]]:
        """Specs may come from a generator: the helper draws the first while the next is built."""
        if self._pool is None:
            return [render(spec) for spec in specs]
        svgs: list[Future[str]] = [self._pool.submit(to_svg, spec) for spec in specs]
        drawn = []
        for future in svgs:
            svg = future.result()
            drawn.append((svg, to_png(svg)))
        return drawn

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
