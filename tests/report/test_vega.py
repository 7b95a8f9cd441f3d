"""The chart renderer: in this process, or split between a warm helper (SVG) and this process
(PNG). Both must give the same charts, and a helper's failure must reach the caller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lossreport.errors import LossReportError
from lossreport.report import charts, vega
from lossreport.report.history import LossSeries
from lossreport.report.stats import loss_stats
from tests.support.png import png_size_and_dpi

BLOCKED_URL_SPEC = {
    "mark": "line",
    "data": {"url": "https://127.0.0.1:9/losses.csv"},  # never fetched: no base URL is allowed
    "encoding": {"x": {"field": "step", "type": "quantitative"}},
}


def _specs(count: int) -> Iterator[dict]:
    for index in range(count):
        values = np.geomspace(10, 0.1, 3_000) * (index + 1)
        series = LossSeries(f"loss_{index}", np.arange(values.size), values)
        yield charts.loss_chart(series, loss_stats(series), f"loss_{index} — m · h")


def test_the_helper_draws_the_same_charts_as_this_process(tmp_path: Path) -> None:
    here = vega.ChartRenderer().render_all(_specs(3))
    with vega.ChartRenderer(helper=True) as renderer:
        split = renderer.render_all(_specs(3))  # a generator: drawn while the next is built
    assert [svg for svg, _ in split] == [svg for svg, _ in here]
    for index, (_, png) in enumerate(split):
        path = tmp_path / f"{index}.png"
        path.write_bytes(png)
        width, height, dpi = png_size_and_dpi(path)
        assert dpi == pytest.approx(300, abs=0.5)
        assert width > 2_000 and height > 1_000


def test_a_chart_the_helper_cannot_draw_is_an_error_naming_the_cause() -> None:
    with vega.ChartRenderer(helper=True) as renderer:
        with pytest.raises(LossReportError, match="External data url not allowed"):
            renderer.render_all([BLOCKED_URL_SPEC])
        # The helper survives a failed chart and draws the next.
        [(svg, png)] = renderer.render_all(_specs(1))
    assert svg.startswith("<svg") and png.startswith(b"\x89PNG")
