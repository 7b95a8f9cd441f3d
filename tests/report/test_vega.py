"""The chart renderer: in this process, or split between a warm helper (SVG) and this process
(PNG). Both must give the same charts, and a helper's failure must reach the caller."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import vl_convert

import lossreport
from lossreport.errors import LossReportError
from lossreport.report import charts, vega
from lossreport.report.history import LossSeries
from lossreport.report.stats import loss_stats
from tests.support.daemon import child_workers
from tests.support.png import png_size_and_dpi
from tests.support.procs import start_python, wait_for

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


def _sweep_chart(run: int, name: str, title: list[str]) -> dict:
    """Run `run` of a sweep: its own curve and title, the loss the other runs log too."""
    values = np.geomspace(10, 0.1, 3_000) * (run + 1)
    values[::97] = np.nan  # NaN marks: a fourth layer
    series = LossSeries(name, np.arange(values.size), values)
    return charts.loss_chart(series, loss_stats(series), title)


def test_a_sweep_compiles_a_chart_shape_once_and_draws_what_a_fresh_compile_draws() -> None:
    """Vega-Lite's compiler (20 ms a chart) runs once per chart shape, not once per run: the
    next run's chart of the same loss gets its own title lines and data put into the compiled
    shape, including text that JSON and Vega expressions escape."""
    name = "l1_loss 'sparsity' \\ \"ünïcode\" Ωmega"
    titles = [
        [f"{name} — Qwen/Qwen2.5-7B-中文-instruct", "blocks.3.hook_resid_post"],
        [f"{name} — google/gemma-2-9b-it-résumé-distilled", "blocks.4 'x' \"y\""],
    ]
    before = vega._compiled_shape.cache_info()
    for run, title in enumerate(titles):
        spec = _sweep_chart(run, name, title)
        assert vega.to_svg(spec) == vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
    after = vega._compiled_shape.cache_info()
    assert after.misses - before.misses <= 1  # the first run's, unless an earlier test's
    assert after.hits - before.hits >= 1


def _exited(pid: int) -> bool:
    """Gone, or a zombie that nobody reaps (a container's init may not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="`render` starts a helper on 2+ cores")
def test_a_killed_render_takes_its_chart_helper_with_it(tmp_path: Path) -> None:
    """The helper waited for work for ever (190 MB), and kept the pipes a trainer's report at
    close reads to their end: that trainer waited out its 600 s timeout."""
    with lossreport.start_run(tmp_path, model="gpt2-small", hook="blocks.8.hook_resid_pre") as run:
        for step in range(3_000):
            run.log(step, **{f"mse_loss_{k}": 1.0 / (step + 1 + k) for k in range(6)})
    render = start_python("-m", "lossreport", "render", str(run.path))
    helpers: list[int] = []
    try:
        wait_for(lambda: helpers.extend(child_workers(render.pid)) or helpers, 60)
        wait_for(  # half way: the report is being written
            lambda: any(p.name.startswith(".loss_graphs.new-") for p in run.path.iterdir()), 60
        )
        assert render.poll() is None, "the render ended before the test could kill it"
        render.kill()
        render.wait()
        wait_for(lambda: _exited(helpers[0]), 10)
        render.communicate(timeout=10)  # the helper held the pipes open: a trainer waited
    finally:
        for pid in helpers:
            if not _exited(pid):
                os.kill(pid, signal.SIGKILL)
