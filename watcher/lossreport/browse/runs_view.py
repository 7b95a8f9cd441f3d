"""The served runs index (`/`) and its JSON twin (`/.api/runs`, `/.api/sweeps`).

Both take the same query parameters, each checked before any reaches the catalog: a bad one
is a 400 that names it. The page shows one page of runs (or of sweeps) rendered here, so the
first page costs one query; its script asks for the page again as the form changes.

A team's catalog lists the runs of many places (catalog/places.py): a run of this server's
own place is linked, another's report is named (its host and path, or its bucket's URL), and
the `where` filter and column appear only when the catalog holds more than one place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

from .. import runformat
from ..catalog import Catalog, Page, RunQuery
from ..catalog.places import HERE, Place
from ..catalog.query import EXACT_FILTERS, is_sort, options, search
from ..catalog.sweeps import Sweep, in_sweeps, sweeps
from ..errors import QueryError
from ..report import pages
from .answers import Answer
from .params import Params, one_choice, one_int, one_text, reject_unknown

# The catalog's `source` is the tool that wrote the run: lossreport, lightning, mlflow...
FILTER_LABELS = [(name, "tool" if name == "source" else name) for name in EXACT_FILTERS]
MAX_TEXT = 200  # a filter value, a search text, a config `name=value`
MAX_WHERE = 9000  # a place's name: a host, a tree's path and an --output's (PATH_MAX each)
MAX_CONFIG_FILTERS = 8
PER_PAGE, MAX_PER_PAGE = 50, 200
MAX_PAGE = 10**6
GROUPS = ("runs", "sweeps")
PARAMETERS = {*EXACT_FILTERS, "where", "q", "config", "sort", "order", "page", "per_page", "group"}
SORT_LABELS = {
    "rendered": "last rendered",
    "started": "start time",
    "duration": "duration",
    "steps": "steps",
    "run": "run path",
}
SCRIPT = ("overlay.js", "browse.js")


@dataclass(frozen=True)
class IndexQuery:
    runs: RunQuery
    group: str  # runs or sweeps
    config_text: str  # as typed: `name=value`, or several joined by `,` (shown in the form)

    def url(self, **changes: Any) -> str:
        """The index's URL for this query, with `changes` (page=2) applied."""
        pairs: list[tuple[str, Any]] = []
        for name in EXACT_FILTERS:
            if getattr(self.runs, name) is not None:
                pairs.append((name, getattr(self.runs, name)))
        if self.runs.where is not None:
            pairs.append(("where", self.runs.where))
        if self.runs.text:
            pairs.append(("q", self.runs.text))
        pairs += [("config", f"{name}={value}") for name, value in self.runs.config]
        pairs += [
            ("sort", self.runs.sort),
            ("order", "desc" if self.runs.descending else "asc"),
            ("group", self.group),
            ("per_page", self.runs.per_page),
            ("page", changes.get("page", self.runs.page)),
        ]
        return "/?" + urlencode(pairs)


def parse_query(params: Params) -> IndexQuery:
    """The index query in `params` (parse_qs's dict); raises QueryError for any parameter
    that is unknown, repeated or out of range."""
    reject_unknown(params, PARAMETERS)
    filters = {name: one_text(params, name, MAX_TEXT) for name in EXACT_FILTERS}
    sort = one_text(params, "sort", MAX_TEXT) or "rendered"
    if not is_sort(sort):
        raise QueryError("sort", "must be one of rendered, started, duration, steps, run, "
                         "final:LOSS or minimum:LOSS")  # fmt: skip
    configs = params.get("config", [])
    if len(configs) > MAX_CONFIG_FILTERS:
        raise QueryError("config", f"may be given at most {MAX_CONFIG_FILTERS} times")
    config: list[tuple[str, str]] = []
    for text in configs:
        name, equals, value = text.partition("=")
        if not equals or not name or len(text) > MAX_TEXT or not text.isprintable():
            raise QueryError("config", "must be NAME=VALUE, printable, at most 200 characters")
        config.append((name.strip(), value.strip()))
    runs = RunQuery(
        **filters,
        where=one_text(params, "where", MAX_WHERE) or None,
        text=one_text(params, "q", MAX_TEXT) or None,
        config=tuple(config),
        sort=sort,
        descending=one_choice(params, "order", ("desc", "asc"), "desc") == "desc",
        page=one_int(params, "page", 1, MAX_PAGE, 1),
        per_page=one_int(params, "per_page", 1, MAX_PER_PAGE, PER_PAGE),
    )
    group = one_choice(params, "group", GROUPS, "runs")
    return IndexQuery(runs, group, ", ".join(configs))


def index_page(
    catalog: Catalog, kept: bool, params: Params, unreachable: str | None = None
) -> Answer:
    """`/`: the query form and one page of results; `unreachable`: why the team's catalog
    server is not read now (the rows are the markers' meanwhile)."""
    query = parse_query(params)
    found = {**catalog.remembered("options", lambda: options(catalog))}
    chosen: dict[str, Any] = {name: getattr(query.runs, name) or "" for name in EXACT_FILTERS}
    chosen["where"] = query.runs.where or ""
    for name in [*EXACT_FILTERS, "where"]:  # a value no longer offered stays selectable
        if chosen[name] and chosen[name] not in found[name]:
            found[name] = [chosen[name], *found[name]]
    chosen |= {
        "q": query.runs.text or "",
        "config": query.config_text,
        "sort": query.runs.sort,
        "order": "desc" if query.runs.descending else "asc",
        "group": query.group,
    }
    kind, _, sorted_loss = query.runs.sort.partition(":")
    sorts = list(SORT_LABELS.items())
    for loss in dict.fromkeys([*found["losses"], *([sorted_loss] if sorted_loss else [])]):
        sorts += [(f"final:{loss}", f"final {loss}"), (f"minimum:{loss}", f"minimum {loss}")]
    context: dict[str, Any] = {
        "total_runs": catalog.count(),
        "kept": kept,
        "unreachable": unreachable,
        "filters": FILTER_LABELS,
        "places": found["where"] if len(found["where"]) > 1 else [],
        "options": found,
        "chosen": chosen,
        "sorts": sorts,
        "max_text": MAX_TEXT,
        "sorted_loss": sorted_loss,
        "sort_label": f"{kind} {sorted_loss}",
        "loss_names": found["losses"],
        "preselected": pages.INDEX_PRESELECTED,
        "page": query.runs.page,
        "per_page": query.runs.per_page,
    }
    if query.group == "sweeps":
        total, groups = sweeps(catalog, query.runs)
        context["sweeps"] = [
            {**group.as_json(), "url": sweep_url(group.as_json())} for group in groups
        ]
        shown = len(groups)
    else:
        page = search(catalog, query.runs)
        total = page.total
        context["runs"] = _with_links(catalog, page, kind, sorted_loss)
        shown = len(page.rows)
    pages_in_all = max(1, math.ceil(total / query.runs.per_page))
    context |= {
        "total": total,
        "shown": shown,
        "pages": pages_in_all,
        "previous_url": query.url(page=max(1, query.runs.page - 1)),
        "next_url": query.url(page=min(pages_in_all, query.runs.page + 1)),
    }
    script = pages.template_script(*SCRIPT)
    html = pages.render_page("browse.html.j2", script=script, **context)
    return Answer.html(html, pages.script_csp(script, connect=True))


def runs_api(catalog: Catalog, params: Params) -> Answer:
    """`/.api/runs`: one page of runs as JSON, curves included."""
    query = parse_query(params)
    page = search(catalog, query.runs)
    kind, _, loss = query.runs.sort.partition(":")
    runs = _with_links(catalog, page, kind, loss)
    for linked in runs:
        linked["curves"] = json.loads(linked.pop("curves_json"))
    return Answer.json(
        {
            "total": page.total,
            "page": query.runs.page,
            "per_page": query.runs.per_page,
            "pages": max(1, math.ceil(page.total / query.runs.per_page)),
            "runs": runs,
        }
    )


def sweeps_api(catalog: Catalog, params: Params) -> Answer:
    """`/.api/sweeps`: one page of sweeps among the runs the filters leave."""
    query = parse_query(params)
    total, groups = sweeps(catalog, query.runs)
    return Answer.json(
        {
            "total": total,
            "page": query.runs.page,
            "per_page": query.runs.per_page,
            "sweeps": [_sweep_json(group) for group in groups],
        }
    )


def _sweep_json(group: Sweep) -> dict[str, Any]:
    return {**group.as_json(), "url": sweep_url(group.as_json())}


def sweep_url(names: dict[str, Any]) -> str:
    return "/.sweep?" + urlencode({key: names[key] for key in ("model", "hook", "architecture")})


def run_links(row: dict[str, Any], here: Place) -> dict[str, str]:
    """A catalog row's URLs on this server, the server of the place `here`, from its key and
    its report's file name only: a row's stored link may be relative to another folder
    (--output), or hand-edited. A run of another place has none: its files are not this
    server's, so its report is named (`report_at`) instead."""
    key, place = row["run_id"], row["place"]
    name = PurePosixPath(row["report"]).name
    plain = bool(name) and not name.startswith(".")
    if place not in (here, HERE):
        report_at = place.report_at(key, name) if plain else ""
        return {"report_url": "", "run_url": "", "report_at": report_at, "where": place.name}
    return {
        "report_url": f"{quote(key)}/{runformat.GRAPHS_DIR}/{quote(name)}" if plain else "",
        "run_url": f"/.run/{quote(key)}",
        "report_at": "",
        "where": place.name,
    }


def _with_links(catalog: Catalog, page: Page, kind: str, loss: str) -> list[dict[str, Any]]:
    """The page's rows with their URLs; `sweep_url` only for a run that has a sweep (a run
    alone in its model, hook and architecture has none: its link would be a 404)."""
    swept = in_sweeps(catalog, map(_names, page.rows))
    rows = []
    for row in page.rows:
        linked = {**row, **run_links(row, catalog.place)}
        linked["sweep_url"] = sweep_url(row) if _names(row) in swept else ""
        if loss:
            linked["sorted_value"] = row[kind].get(loss)
        del linked["report"], linked["place"]
        rows.append(linked)
    return rows


def _names(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["model"], row["hook"], row["architecture"]
