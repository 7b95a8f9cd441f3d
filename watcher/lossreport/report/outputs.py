"""The files of a report: their names (the feature document's) and how each is written.

Every file is written whole or not at all (storage.atomic_file), so a reader or a crash never
sees half of one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv

from .. import runformat, storage
from . import charts
from .history import LossHistory, LossSeries
from .shown import shortened
from .vega import ChartRenderer

REPORT_PREFIXES = ("loss_curves_", "loss_history_", "loss_summary_", "loss_report_")
TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
# A name as OutputNames makes them (a prefix, ..., the run's start, an extension of ours): a
# file so named in loss_graphs/ is an earlier render's, which the next one replaces. Any other
# (loss_report_notes.md) is the user's, and kept.
REPORT_FILE = re.compile(
    rf"(?:{'|'.join(map(re.escape, REPORT_PREFIXES))}).*_\d{{8}}_\d{{6}}\.(?:png|csv|json|html)"
)
COMBINED = "combined"  # the combined chart's part of its file name, where a loss name goes
# File names stay well under the usual 255-byte limit, which three 100-character name parts
# would pass, with room for atomic_file's temp name around them.
MAX_FILE_NAME = 200
_PART_LIMIT = 50
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet cell a formula
_DIGEST_LENGTH = 8


@dataclass(frozen=True)
class OutputNames:
    """`{prefix}_{model}_{hook}_{timestamp}.{extension}`, model and hook cleaned (no hook
    part for a run without one: another tool's), and each part shortened to its start and a
    hash when the whole would pass MAX_FILE_NAME."""

    model: str
    hook: str
    timestamp: str

    @classmethod
    def for_run(cls, model: str, hook: str, started: datetime) -> OutputNames:
        return cls(model, hook, started.strftime(TIMESTAMP_FORMAT))

    def _name(self, prefix: str, extension: str, loss_part: str | None = None) -> str:
        names = (
            (self.model, self.hook, self.timestamp) if self.hook else (self.model, self.timestamp)
        )
        parts = [runformat.clean_name(text) for text in names]
        if loss_part is not None:
            parts.insert(0, loss_part)
        name = "_".join([prefix, *parts]) + f".{extension}"
        if len(name) <= MAX_FILE_NAME:
            return name
        return "_".join([prefix, *map(_shortened, parts)]) + f".{extension}"

    def loss_pngs(self, losses: Iterable[str]) -> dict[str, str]:
        """Each loss's chart file name, one file per loss (see `loss_parts`)."""
        parts = loss_parts(losses)
        return {loss: self._name("loss_curves", "png", part) for loss, part in parts.items()}

    @property
    def combined_png(self) -> str:
        return self._name("loss_curves", "png", COMBINED)

    @property
    def csv(self) -> str:
        return self._name("loss_history", "csv")

    @property
    def summary_json(self) -> str:
        return self._name("loss_summary", "json")

    @property
    def report_html(self) -> str:
        return self._name("loss_report", "html")


def loss_parts(losses: Iterable[str]) -> dict[str, str]:
    """Each loss's part of its chart's file name, distinct for distinct losses.

    A name that is already a clean file name is used as it is (the feature document's names).
    Any other (`a/b` and `a_b`, or two non-Latin names, would both clean alike) and the combined
    chart's own `combined` get the cleaned name and a hash of the original: `a_b-1f0e3d2c`. The
    part depends on the name alone, so a loss keeps its file name as others come and go, unless
    two parts differ only in case, which a case-insensitive filesystem would merge: both are
    hashed then.
    """
    parts = {}
    for loss in losses:
        part = runformat.clean_name(loss)
        parts[loss] = part if part == loss and part.lower() != COMBINED else _tagged(part, loss)
    seen = Counter(part.lower() for part in parts.values())
    return {
        loss: _tagged(part, loss) if seen[part.lower()] > 1 else part
        for loss, part in parts.items()
    }


def _tagged(part: str, original: str) -> str:
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{part}-{digest[:_DIGEST_LENGTH]}"


def _shortened(part: str) -> str:
    """A part longer than _PART_LIMIT as its start and a hash of it: still distinct."""
    if len(part) <= _PART_LIMIT:
        return part
    return _tagged(part[: _PART_LIMIT - _DIGEST_LENGTH - 1], part)


@dataclass(frozen=True)
class Chart:
    """A rendered chart: where its PNG was saved, and its SVG (for embedding in pages)."""

    path: Path
    svg: str
    title: str


def write_charts(
    folder: Path,
    history: LossHistory,
    stats: dict[str, Any],
    names: OutputNames,
    renderer: ChartRenderer | None = None,
) -> list[Chart]:
    """One PNG per loss, then the combined PNG; nothing for a history without values."""
    all_series = [s for s in history.series() if s.values.size]
    pngs = names.loss_pngs(series.name for series in all_series)
    planned: list[tuple[Path, str, Callable[[], dict[str, Any]]]] = []
    model, hook = shortened(names.model), shortened(names.hook)
    for series in all_series:
        lines = charts.title_lines(series.name, names.model, names.hook)
        spec = partial(charts.loss_chart, series, stats["losses"][series.name], lines)
        title = f"{shortened(series.name)} — {model} · {hook}"
        planned.append((folder / pngs[series.name], title, spec))
    if _has_finite(all_series):
        lines = charts.title_lines("All losses", names.model, names.hook)
        spec = partial(charts.combined_chart, all_series, lines)
        planned.append((folder / names.combined_png, f"All losses — {model} · {hook}", spec))
    # Each spec is built as the renderer takes it, so a helper process draws the first chart
    # while this one builds the next.
    specs = (build() for _, _, build in planned)
    drawn = (renderer or ChartRenderer()).render_all(specs)
    written = []
    for (path, title, _), (svg, png) in zip(planned, drawn, strict=True):
        storage.atomic_write(path, png)
        written.append(Chart(path, svg, title))
    return written


def write_csv(path: Path, history: LossHistory) -> Path:
    """Every logged row, `step` first; floats in shortest round-trip form, missing as empty.

    Every cell is a number (an integer step, a float loss: `-0.5` stays a number); the header
    is the loss names, which a spreadsheet would run as formulas, so each is `inert`."""
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(map(inert, history.table.column_names))
    options = pacsv.WriteOptions(include_header=False)  # pyarrow would quote every name
    with storage.atomic_file(path) as handle:
        handle.write(header.getvalue().encode())
        pacsv.write_csv(history.table, handle, write_options=options)
    return path


def inert(text: str) -> str:
    """`text` as a spreadsheet shows it rather than runs it (OWASP's CSV injection advice): a
    leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'` before it."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def write_json(path: Path, document: dict[str, Any]) -> Path:
    text = json.dumps(document, indent=2, allow_nan=False, default=str) + "\n"
    storage.atomic_write(path, text.encode())
    return path


def _has_finite(all_series: list[LossSeries]) -> bool:
    return any(bool(np.isfinite(s.values).any()) for s in all_series)
