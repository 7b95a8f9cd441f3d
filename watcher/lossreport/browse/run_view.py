"""A run's zoomable charts (`/.run/RUN`) and the full-resolution points they fetch
(`/.api/series`).

The page draws each loss with Vega-Lite (the spec made here with Altair, the library served
from the package): wheel or drag to zoom and pan on steps, a value under the pointer, a
smoothing slider (TensorBoard's debiased exponential moving average) and a log toggle. Each
zoom or pan asks `/.api/series` for the visible range again, at full resolution.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from pathlib import Path
from typing import Any

import altair as alt

from .. import runformat, sources, storage
from ..errors import QueryError, ReadBudgetError
from ..report import pages
from ..runformat.layout import MAX_RUN_KEY_LENGTH
from . import assets
from .answers import Answer
from .params import Params, one_int, one_number, one_text, reject_unknown
from .series import RunColumns, SeriesCache, window

logger = logging.getLogger(__name__)

SERIES_PARAMETERS = ("run", "loss", "start", "end", "width")
MAX_WIDTH = 4000
DEFAULT_WIDTH = 1000
RAW, SMOOTHED = "#9ab8d8", "#0072B2"
SCRIPT = ("run.js",)


def read_run(root: Path, cache: SeriesCache, key: str) -> tuple[RunColumns, dict[str, str]] | None:
    """The run `key`'s columns and names, or None when it is no run of the tree. Its folders
    are opened first without following a link, and after reading, the path must still name
    the folder opened: a link swapped in meanwhile means nothing read is shown. Raises
    ReadBudgetError for a run over its read budget (`over_budget` answers it)."""
    if not runformat.is_run_name(key):
        return None
    run_dir, parts = root / key, key.split("/")
    try:
        with storage.opened_beneath(root, parts) as fd:
            columns = cache.columns(run_dir) if sources.find(run_dir) is not None else None
            if columns is None:
                return None
            try:  # the names as the run says them now (the catalog's row may not exist yet)
                record = sources.source_of(run_dir).read_record(run_dir)
                names = {"model": record.model, "hook": record.hook}
                names["architecture"] = record.architecture or ""
            except (OSError, ValueError) as exc:
                logger.info("run %s: no names shown: %s", key, exc)
                names = {}
            if not storage.still_at(run_dir, fd, root, parts):
                cache.forget(run_dir)
                return None
    except ReadBudgetError:
        raise
    except OSError:  # missing, or a link on the way
        return None
    return columns, names


def over_budget(root: Path, exc: ReadBudgetError) -> Answer:
    """A run too large to read within its budget: 507 (the server cannot hold it), with the
    reason, its paths relative to the runs directory."""
    message = str(exc).replace(f"{root}/", "")
    return Answer.text(HTTPStatus.INSUFFICIENT_STORAGE, message)


def run_page(
    root: Path, cache: SeriesCache, key: str, row: dict[str, Any] | None, report_url: str | None
) -> Answer:
    """The page of the run `key`; `row`: its catalog row, where it has one (its status);
    `report_url`: where its report is on this server, if it has one."""
    try:
        found = read_run(root, cache, key)
    except ReadBudgetError as exc:
        return over_budget(root, exc)
    if found is None:
        return Answer.text(HTTPStatus.NOT_FOUND, f"no run at {key!r}")
    columns, names = found
    losses = list(columns.losses)
    charts = {
        "run": key,
        "losses": losses,
        "spec": chart_spec(log=False),
        "log_spec": chart_spec(log=True),
        "max_width": MAX_WIDTH,
    }
    script = pages.template_script(*SCRIPT)
    html = pages.render_page(
        "run.html.j2",
        key=key,
        row=row or {},
        names=names,
        report_url=report_url or "",
        losses=losses,
        steps=int(columns.steps.size),
        charts_json=pages.script_json(charts),
        library=f"/.assets/{assets.CHART_LIBRARY}",
        library_hash=assets.chart_library_hash(),
        script=script,
    )
    csp = pages.script_csp(script, connect=True, hashes_of=(assets.chart_library_hash(),))
    return Answer.html(html, csp)


def series(root: Path, cache: SeriesCache, params: Params) -> Answer:
    """`/.api/series`: one loss of one run between two steps, reduced to `width` columns."""
    reject_unknown(params, SERIES_PARAMETERS)
    key = one_text(params, "run", MAX_RUN_KEY_LENGTH)
    loss = one_text(params, "loss", 1000)
    if key is None or loss is None:
        raise QueryError("run" if key is None else "loss", "is required")
    start, end = one_number(params, "start"), one_number(params, "end")
    width = one_int(params, "width", 1, MAX_WIDTH, DEFAULT_WIDTH)
    if start is not None and end is not None and start >= end:
        raise QueryError("end", "must be greater than start")
    try:
        found = read_run(root, cache, key)
    except ReadBudgetError as exc:
        return over_budget(root, exc)
    if found is None:
        return Answer.text(HTTPStatus.NOT_FOUND, f"no run at {key!r}")
    logged = found[0].losses.get(loss)
    if logged is None:
        return Answer.text(HTTPStatus.NOT_FOUND, f"run {key!r} has no loss named {loss!r}")
    steps = logged.steps
    whole = (int(steps[0]), int(steps[-1])) if steps.size else (0, 0)
    low = start if start is not None else whole[0]
    high = end if end is not None else whole[1]
    return Answer.json(
        {
            "run": key,
            "loss": loss,
            "start": low,
            "end": high,
            **window(steps, logged.values, low, high, width),
        }
    )


def chart_spec(*, log: bool) -> dict[str, Any]:
    """One loss's zoomable chart, filled later through its named data set `points` (rows of
    step, value, smoothed)."""
    zoom = alt.selection_interval(name="zoom", bind="scales", encodings=["x"])
    hover = alt.selection_point(
        name="hover", nearest=True, on="pointerover", fields=["step"], empty=False,
        clear="pointerout",
    )  # fmt: skip
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    x = alt.X(
        "step:Q",
        title="step",
        scale=alt.Scale(zero=False, nice=False),
        # Steps are whole, however far zoomed in; a label every 100 pixels or so, apart.
        axis=alt.Axis(
            format=",d", tickMinStep=1, tickCount=alt.ExprRef("ceil(width / 100)"),
            labelSeparation=12,
        ),
    )  # fmt: skip
    base = alt.Chart(alt.NamedData("points")).encode(x=x)
    # No axis title: the loss's name heads the chart, and the log box says the scale.
    raw = base.mark_line(color=RAW, strokeWidth=1).encode(
        y=alt.Y("value:Q", title=None, scale=y_scale)
    )
    smoothed = base.mark_line(color=SMOOTHED, strokeWidth=1.8).encode(y=alt.Y("smoothed:Q"))
    marks = base.mark_point(filled=True, color=SMOOTHED, size=50).encode(
        y=alt.Y("value:Q"),
        opacity=alt.condition(hover, alt.value(1), alt.value(0)),
        tooltip=[alt.Tooltip("step:Q", format=","), alt.Tooltip("value:Q", format=".6g")],
    )
    rule = base.mark_rule(color="#888").encode(
        opacity=alt.condition(hover, alt.value(0.6), alt.value(0))
    )
    chart = alt.layer(raw.add_params(zoom), smoothed, marks.add_params(hover), rule)
    # The width: the page's, set by run.js. Fitted again at each update, as the value axis's
    # labels change with the zoom (else they are cut off at the chart's edge).
    autosize = alt.AutoSizeParams(type="fit-x", contains="padding", resize=True)
    spec = chart.properties(height=300, autosize=autosize).to_dict()
    spec.pop("$schema", None)  # a URL: nothing here may name the network
    return spec
