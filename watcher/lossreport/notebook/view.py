"""A run as a notebook shows it: read once, without writing anything into its folder.

The summary is the report's (report/stats.py: the same losses, the same numbers), the charts
the report's per-loss and combined charts, made zoomable on steps; `history` is every logged
series, as `Run.get_loss_history` gives a native run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import pyarrow as pa

from .. import sources
from ..clock import utc_time
from ..report import charts, stats
from ..report.history import LossHistory, from_table
from ..report.render import record_or_stand_in
from ..report.shown import listed
from ..runformat import WALL_TIME, RunRecord
from ..sources.base import quiet_status
from ..sources.series import SeriesFilter
from . import embed

ZOOM = {"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "bind": "scales"}


@dataclass(frozen=True)
class RunView:
    """What `lossreport.open` gives: a run's record, status, summary and data as read now
    (open it again to see newer data). Displayed in a notebook, its report's summary and
    charts."""

    run_dir: Path
    record: RunRecord
    source: str  # what wrote the run, as the report names it: "DVCLive", ...
    status: str
    status_rule: str | None
    summary: dict[str, Any]  # the report's summary statistics (summary JSON's)
    anomalies: list[str]
    problems: list[str]  # what could not be read, as the report lists it
    table: pa.Table  # every logged row: `step`, `wall_time`, one column per series

    @property
    def losses(self) -> list[str]:
        """The series summarised and drawn (the report's losses), in the run's order."""
        return list(self.summary["losses"])

    @property
    def history(self) -> pd.DataFrame:
        """Every logged series: a `step` column, then one column per series (NaN where a
        series was not logged at a step)."""
        frame: pd.DataFrame = self.table.drop_columns([WALL_TIME]).to_pandas()
        return frame

    @cached_property
    def _loss_history(self) -> LossHistory:
        return from_table(self.table)  # once: a chart per loss reads it

    def chart(self, loss: str) -> alt.LayerChart:
        """The report's chart of `loss` as an Altair chart, zoomable on steps. Raises KeyError
        naming the run's losses when it has no loss `loss`."""
        return alt.LayerChart.from_dict(self._loss_spec(loss), validate=False)

    def specs(self) -> list[dict[str, Any]]:
        """The Vega-Lite specs the display draws: every loss together, then each loss."""
        history = self._loss_history.select(self.losses)
        title = charts.title_lines("all losses", self.record.model, self.record.hook)
        together = [charts.combined_chart(history.series(), title)] if self.losses else []
        return together + [self._loss_spec(name) for name in self.losses]

    def _loss_spec(self, loss: str) -> dict[str, Any]:
        if loss not in self.summary["losses"]:
            raise KeyError(f"{self.run_dir}: no loss {loss!r}; its losses: {listed(self.losses)}")
        (series,) = self._loss_history.select([loss]).series()
        title = charts.title_lines(loss, self.record.model, self.record.hook)
        spec = charts.loss_chart(series, self.summary["losses"][loss], title)
        raw = spec["layer"][0]
        raw["name"] = "raw"  # the view whose scales the zoom binds
        spec["params"] = [{**ZOOM, "views": ["raw"]}]
        return spec

    def _repr_html_(self) -> str:
        return embed.view_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}

    def __repr__(self) -> str:
        head = f"{self.record.run_id} ({self.source}, {self.status}) at {self.run_dir}"
        return f"{head}\n{stats.console_summary(self.summary)}"


def read_view(run_dir: Path, source: sources.Source) -> RunView:
    """The run at `run_dir`, read by `source`; its status as `lossreport render` decides it
    (a writer that records no end: running until silent for 10 minutes)."""
    problems: list[str] = []
    inputs = source.inputs(run_dir)
    record = record_or_stand_in(source, run_dir, problems)
    data = source.read_losses(run_dir)  # no cache: nothing is written into the run
    problems += data.skipped
    history = from_table(data.table)
    drawn = SeriesFilter().drawn(history.loss_names)
    summary = stats.summary_stats(history.select(drawn.losses), record.model, record.hook)
    status = inputs.status or record.status
    if inputs.silence_finishes:
        status = quiet_status(inputs, utc_time())
    return RunView(
        run_dir=run_dir,
        record=record,
        source=source.label,
        status=status,
        status_rule=inputs.status_rule,
        summary=summary,
        anomalies=stats.anomalies(summary),
        problems=problems,
        table=data.table,
    )
