"""The self-contained HTML report: one file with its charts embedded, readable offline.

Jinja2 autoescaping is on for every template, so model, hook, loss and config strings from a
run are shown as text; file links are URL-quoted as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

import jinja2
import markupsafe

from .. import runformat
from ..clock import utc_time
from ..runformat import GRAPHS_DIR
from ..runformat.packed import pack
from ..sources.series import Drawn
from ..version import __version__
from . import theme
from .outputs import Chart
from .shown import MAX_FULL_CHARS, listed, shortened

TEMPLATE = "report.html.j2"
INDEX_TEMPLATE = "index.html.j2"
EMAIL_TEMPLATE = "email.html.j2"
OVERLAY_SCRIPT = "overlay.js"  # the overlay chart that pages comparing runs share
INDEX_SCRIPT = "index.js"
INDEX_FILTERS = [
    ("model", "model"),
    ("hook", "hook"),
    ("architecture", "architecture"),
    ("status", "status"),
    ("source", "tool"),  # the tool that wrote the run: lossreport, lightning, mlflow...
]
# Each has a badge colour of its own (_status.css.j2); anything else is shown as unknown.
STATUS_CLASSES = runformat.STATUSES | {runformat.STALLED}
INDEX_PRESELECTED = 8  # newest runs ticked for the overlay when the page opens
INDEX_MAX_RUNS = 500  # the static index shows this many, newest first: `serve` shows all
# A run's config as the catalog keeps it: enough to find and compare a sweep's runs.
MAX_CONFIG_KEYS, MAX_CONFIG_NAME, MAX_CONFIG_VALUE, MAX_CONFIG_DEPTH = 200, 120, 200, 8
MISSING = "\u2013"  # an en dash marks a statistic that does not exist
PENDING_RELOAD_SECONDS = 15  # a quick report reloads itself, so its reader sees the charts come


# Pages say what they may load in a CSP meta tag, so it holds wherever a page is opened (from
# disk, from `lossreport serve`, from a mail attachment): nothing from the network, and no
# script but the index's own.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def script_hash(script: str | bytes) -> str:
    """A script's CSP hash source (and its subresource-integrity value, in quotes)."""
    data = script.encode() if isinstance(script, str) else script
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


@cache
def index_csp() -> str:
    return script_csp(index_script())


def script_csp(*scripts: str, connect: bool = False, hashes_of: tuple[str, ...] = ()) -> str:
    """The CSP of a page whose only scripts are `scripts`, inline, and those whose hashes are
    `hashes_of` (loaded with that integrity), each allowed by its hash; `connect`: the page
    fetches from its own server (`serve`'s pages)."""
    hashes = " ".join(f"'{digest}'" for digest in (*map(script_hash, scripts), *hashes_of))
    fetches = "; connect-src 'self'" if connect else ""
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        f"img-src 'self' data:{fetches}"
    )


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("lossreport.report_templates", ""),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = format_number
    environment.filters["percent"] = format_percent
    environment.filters["as_json"] = lambda value: json.dumps(value, default=str)
    environment.filters["breakable"] = breakable
    environment.filters["joined_names"] = joined_names
    environment.filters["short"] = lambda text: shortened(str(text))
    environment.filters["shown"] = shown
    environment.filters["listed"] = listed
    environment.filters["shown_full"] = lambda text: shortened(str(text), MAX_FULL_CHARS)
    environment.globals["nan_colour"] = theme.NAN_COLOUR
    environment.globals["nan_colour_name"] = theme.NAN_COLOUR_NAME
    return environment


def joined_names(names: list[str | None]) -> str:
    """A run's names (model, hook, architecture) as one title, leaving out those it has not:
    another tool's run has no hook."""
    return " · ".join(name for name in names if name)


def shown(text: Any, wrap: bool = False) -> markupsafe.Markup:
    """A user's text, escaped and shortened to MAX_SHOWN_CHARS (shown.py), with up to
    MAX_FULL_CHARS of it in a tooltip; `wrap`: `breakable`."""
    text = str(text)
    short = shortened(text)
    inner = breakable(short) if wrap else markupsafe.escape(short)
    if short == text:
        return inner
    return markupsafe.Markup('<span title="{}">{}</span>').format(
        shortened(text, MAX_FULL_CHARS), inner
    )


def breakable(text: str) -> markupsafe.Markup:
    """Escaped text that a narrow column wraps after `_` or `.` (auxiliary_reconstruction_ /
    loss), not at whatever letter reaches the edge."""
    escaped = markupsafe.escape(text)
    return markupsafe.Markup(re.sub(r"([_.])", r"\1<wbr>", str(escaped)))


def render_html(
    *,
    run: dict[str, Any],
    stats: dict[str, Any],
    charts: list[Chart],
    combined_chart: str,
    files: dict[str, str],
    problems: list[str],
    anomalies: list[str],
    alerts: list[dict[str, Any]] | None = None,
    not_drawn: Drawn | None = None,
    charts_pending: bool = False,
) -> str:
    """The report page. `run` holds run.json's fields (and `duration`); `combined_chart` is the
    file name of the all-losses chart among `charts`; `files` maps a label to a file name in
    the same folder; `not_drawn`: the series kept in the CSV only; `charts_pending`: the quick
    report, which says its charts are being drawn and reloads itself until the full report
    has replaced it."""
    images = [
        {
            "title": chart.title,
            "name": chart.path.name,
            "data": base64.b64encode(chart.svg.encode()).decode("ascii"),
        }
        for chart in charts
    ]
    combined = [image for image in images if image["name"] == combined_chart]
    per_loss = [image for image in images if image not in combined]
    return render_page(
        TEMPLATE,
        run=run,
        stats=stats,
        combined=combined,
        per_loss=per_loss,
        files=files,
        problems=problems,
        anomalies=anomalies,
        alerts=alerts or [],
        not_drawn=not_drawn or Drawn([]),
        charts_pending=charts_pending,
        reload_seconds=PENDING_RELOAD_SECONDS,
        csp=REPORT_CSP,
    )


def render_index(rows: list[dict[str, Any]], total: int | None = None) -> str:
    """The runs index from `index_row`s: newest render first, with filters and an overlay
    chart (a small inline script, allowed by its hash alone). `total`: how many runs there
    are, where `rows` are only the newest of them."""
    rows = sorted(rows, key=lambda row: row["rendered_at"], reverse=True)
    options = {key: sorted({row[key] for row in rows} - {""}) for key, _ in INDEX_FILTERS}
    loss_names = list(dict.fromkeys(name for row in rows for name in row["losses"]))
    return render_page(
        INDEX_TEMPLATE,
        entries=rows,
        total=max(total or 0, len(rows)),
        filters=INDEX_FILTERS,
        options=options,
        loss_names=loss_names,
        preselected=INDEX_PRESELECTED,
        script=index_script(),
        csp=index_csp(),
    )


def index_row(
    entry: dict[str, Any], run_name: str, graphs_link: str | None = None
) -> dict[str, Any]:
    """An index row for the run in folder `run_name` from its render marker's entry, whatever
    an older version (or a hand edit) left in it: known fields only, each of the type the page
    expects. The name and the report link come from the folder, never from the marker, so a
    renamed run shows its new name and a marker cannot point the page elsewhere. The overview
    curves are the entry's as they are: bounded already (`runformat.index_curves`), and packed
    by the catalog straight from them.

    `graphs_link`: the run's loss_graphs/ relative to the page, where that is not
    `RUN/loss_graphs` (a report kept in the --output mirror, seen from an index elsewhere)."""

    def text(key: str) -> str:
        value = entry.get(key)
        return "" if value is None else str(value)

    def count(key: str) -> int:
        value = number(entry.get(key))
        return value if isinstance(value, int) else 0

    def number(value: Any) -> float | int | None:
        """A number as the catalog stores it: an integer past 64 bits (the catalog's, and
        SQLite's) is none."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value if isinstance(value, float) or -(2**63) <= value < 2**63 else None

    def numbers(key: str) -> dict[str, float | int | None]:
        found = entry.get(key)
        return {str(k): number(v) for k, v in found.items()} if isinstance(found, dict) else {}

    curves = entry.get("curves")
    curves = curves if isinstance(curves, dict) else {}
    status = text("status")
    report_name = PurePosixPath(text("report")).name
    return {
        "run_id": run_name,
        "status": status,
        "status_class": status_class(status),
        "model": text("model"),
        "hook": text("hook"),
        "architecture": text("architecture"),
        "steps": number(entry.get("steps")),
        "final": numbers("final"),
        "minimum": numbers("minimum"),
        "started_at": text("started_at"),
        "duration": number(entry.get("duration_seconds")),
        "config": flat_config(entry.get("config")),
        "problems": count("problems"),
        "anomalies": count("anomalies"),
        "alerts": _texts(entry.get("alerts")),
        "report": f"{graphs_link or f'{run_name}/{GRAPHS_DIR}'}/{report_name}"
        if report_name
        else "",
        "source": text("source"),
        "error": text("error"),
        "rendered_at": text("rendered_at"),
        "losses": [str(name) for name in curves],
        "curves": curves,
    }


def marker_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` (a runs-index entry, its overview curves as `{loss: [[step, value], ...]}`) as
    the render marker keeps it: the curves bounded (`runformat.index_curves`) and packed with
    what the index shows of the run into the blob the catalog stores (`runformat.packed`), as
    base64 in `packed`. A daemon that lists many rendered runs then copies each run's blob
    (`catalog.packed_row`) instead of checking and packing its 180 points again."""
    curves = runformat.index_curves(entry.get("curves"))
    shown = index_row({**entry, "curves": curves}, "")
    kept = {name: value for name, value in entry.items() if name != "curves"}
    kept["packed"] = base64.b64encode(pack(shown, curves)).decode("ascii")
    return kept


def flat_config(config: Any) -> dict[str, str]:
    """A run's config as `name: text` pairs, nested keys joined by dots (`optimizer.lr`),
    each value as JSON shows it (strings as they are), all bounded: what the catalog filters
    on and a sweep compares. Flat already, it comes back the same."""
    if type(config) is dict and len(config) <= MAX_CONFIG_KEYS and all(
        type(key) is str and 0 < len(key) <= MAX_CONFIG_NAME
        and type(value) is str and len(value) <= MAX_CONFIG_VALUE
        for key, value in config.items()
    ):  # fmt: skip
        return dict(config)  # flat and bounded, as every marker's is: no walk (a first start)
    flat: dict[str, str] = {}

    def walk(value: Any, prefix: str, depth: int) -> None:
        if len(flat) >= MAX_CONFIG_KEYS:
            return
        if isinstance(value, dict) and value and depth < MAX_CONFIG_DEPTH:
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        elif prefix:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[prefix[:MAX_CONFIG_NAME]] = text[:MAX_CONFIG_VALUE]

    walk(config if isinstance(config, dict) else {}, "", 0)
    return flat


def _texts(value: Any, most: int = 5) -> list[str]:
    """A marker's list of short texts (its alerts), as text, bounded; [] for anything else."""
    return [str(item)[:200] for item in value[:most]] if isinstance(value, list) else []


def status_class(status: str) -> str:
    """The CSS class of a status badge: the status itself where it has a colour of its own,
    else `unknown` (a run.json that cannot be read, a run not rendered, a hand-edited marker)."""
    return status if status in STATUS_CLASSES else runformat.UNKNOWN


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> block: no `<`, `>` or `&` appear as such."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or inf in a hand-edited marker: no curve rather than bad JSON
        text = "{}"
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def template_script(*names: str) -> str:
    """The scripts `names` of report_templates/, as one (one hash, one <script> block)."""
    folder = resources.files("lossreport.report_templates")
    return "\n".join(folder.joinpath(name).read_text() for name in names)


def index_script() -> str:
    return template_script(OVERLAY_SCRIPT, INDEX_SCRIPT)


def render_email_html(**context: Any) -> str:
    """The HTML part of a run's email, before its CSS is inlined (see message.py)."""
    return render_page(EMAIL_TEMPLATE, **context)


def render_page(template: str, **context: Any) -> str:
    """`template` rendered with `context`, plus the version and time every page shows."""
    generated_at = utc_time().strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        _environment()
        .get_template(template)
        .render(version=__version__, generated_at=generated_at, **context)
    )


def format_number(value: float | int | None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


def format_percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}%"
