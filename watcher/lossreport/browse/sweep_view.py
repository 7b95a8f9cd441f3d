"""A sweep's own page (`/.sweep?model=M&hook=H&architecture=A`): its runs ranked by a loss,
their varying config values side by side, and their curves on one chart."""

from __future__ import annotations

from typing import Any

from ..catalog import Catalog, RunQuery
from ..catalog.query import LOSS_SORTS, is_sort, search
from ..catalog.sweeps import losses_of, sweep_of
from ..errors import QueryError
from ..report import pages
from .answers import Answer
from .params import Params, one_choice, one_text, reject_unknown
from .runs_view import MAX_TEXT, run_links

PARAMETERS = {"model", "hook", "architecture", "rank", "order"}
MAX_SWEEP_RUNS = 500  # shown on the page, best first; the index pages through any number
DRAWN = 10  # the best runs drawn when the page opens
SCRIPT = ("overlay.js", "sweep.js")


def sweep_page(catalog: Catalog, params: Params) -> Answer:
    reject_unknown(params, PARAMETERS)
    names = {name: one_text(params, name, MAX_TEXT) for name in ("model", "hook", "architecture")}
    if names["model"] is None or names["hook"] is None:
        raise QueryError("model" if names["model"] is None else "hook", "is required")
    sweep = sweep_of(catalog, names["model"], names["hook"], names["architecture"] or "")
    if sweep is None:
        return Answer.text(404, "no sweep: fewer than two runs share this model, hook and "
                                "architecture")  # fmt: skip
    losses = losses_of(catalog, sweep)
    rank = one_text(params, "rank", MAX_TEXT) or (f"final:{losses[0]}" if losses else "run")
    kind, _, loss = rank.partition(":")
    if not is_sort(rank) or kind not in ("final", "minimum"):
        raise QueryError("rank", "must be final:LOSS or minimum:LOSS")
    ascending = one_choice(params, "order", ("asc", "desc"), "asc") == "asc"
    query = RunQuery(
        model=sweep.model,
        hook=sweep.hook,
        architecture=sweep.architecture,
        sort=rank,
        descending=not ascending,
        per_page=MAX_SWEEP_RUNS,
    )
    runs: list[dict[str, Any]] = []
    for row in search(catalog, query).rows:
        runs.append({**row, **run_links(row, catalog.place), "ranked": row[kind].get(loss)})
    ranks = [(f"{which}:{name}", f"{which} {name}") for name in losses for which in LOSS_SORTS]
    script = pages.template_script(*SCRIPT)
    html = pages.render_page(
        "sweep.html.j2",
        sweep=sweep,
        runs=runs,
        ranks=ranks,
        rank=rank,
        rank_label=f"{kind} {loss}",
        ranked_loss=loss,
        ascending=ascending,
        losses=losses,
        drawn=DRAWN,
        max_runs=MAX_SWEEP_RUNS,
        script=script,
    )
    return Answer.html(html, pages.script_csp(script))
