"""The files of a report: their names (the feature document's) and how each is written.

Every file is written whole or not at all (rundir.atomic_file), so a reader or a crash never
sees half of one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv

from . import charts, rundir
from .history import LossHistory, LossSeries
from .vega import ChartRenderer

REPORT_PREFIXES = ("loss_curves_", "loss_history_", "loss_summary_", "loss_report_")
TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"


@dataclass(frozen=True)
class OutputNames:
    """`{prefix}_{model}_{hook}_{timestamp}.{extension}`, model and hook cleaned."""

    model: str
    hook: str
    timestamp: str

    @classmethod
    def for_run(cls, model: str, hook: str, started: datetime) -> OutputNames:
        return cls(model, hook, started.strftime(TIMESTAMP_FORMAT))

    def _name(self, prefix: str, extension: str) -> str:
        model, hook = rundir.clean_name(self.model), rundir.clean_name(self.hook)
        return f"{prefix}_{model}_{hook}_{self.timestamp}.{extension}"

    def loss_png(self, loss: str) -> str:
        return self._name(f"loss_curves_{rundir.clean_name(loss)}", "png")

    @property
    def combined_png(self) -> str:
        return self._name("loss_curves_combined", "png")

    @property
    def csv(self) -> str:
        return self._name("loss_history", "csv")

    @property
    def summary_json(self) -> str:
        return self._name("loss_summary", "json")

    @property
    def report_html(self) -> str:
        return self._name("loss_report", "html")


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
    planned: list[tuple[Path, str, Callable[[], dict[str, Any]]]] = []
    for series in all_series:
        title = f"{series.name} — {names.model} · {names.hook}"
        spec = partial(charts.loss_chart, series, stats["losses"][series.name], title)
        planned.append((folder / names.loss_png(series.name), title, spec))
    if _has_finite(all_series):
        title = f"All losses — {names.model} · {names.hook}"
        spec = partial(charts.combined_chart, all_series, title)
        planned.append((folder / names.combined_png, title, spec))
    # Each spec is built as the renderer takes it, so a helper process draws the first chart
    # while this one builds the next.
    specs = (build() for _, _, build in planned)
    drawn = (renderer or ChartRenderer()).render_all(specs)
    written = []
    for (path, title, _), (svg, png) in zip(planned, drawn, strict=True):
        rundir.atomic_write(path, png)
        written.append(Chart(path, svg, title))
    return written


def write_csv(path: Path, history: LossHistory) -> Path:
    """Every logged row, `step` first; floats in shortest round-trip form, missing as empty."""
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(history.table.column_names)
    options = pacsv.WriteOptions(include_header=False)  # pyarrow would quote every name
    with rundir.atomic_file(path) as handle:
        handle.write(header.getvalue().encode())
        pacsv.write_csv(history.table, handle, write_options=options)
    return path


def write_json(path: Path, document: dict[str, Any]) -> Path:
    text = json.dumps(document, indent=2, allow_nan=False, default=str) + "\n"
    rundir.atomic_write(path, text.encode())
    return path


def _has_finite(all_series: list[LossSeries]) -> bool:
    return any(bool(np.isfinite(s.values).any()) for s in all_series)
