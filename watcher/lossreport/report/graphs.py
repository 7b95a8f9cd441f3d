"""`LossGraphGenerator`: the feature document's Python API over the same charts and files.

    generator = LossGraphGenerator(output_dir="loss_graphs")
    saved = generator.generate_loss_graphs(run.get_loss_history(), model_name=..., hook_name=...)
    stats = generator.generate_summary_stats(loss_history, model_name=..., hook_name=...)
    generator.save_loss_history_csv(loss_history, model_name=..., hook_name=...)

`loss_history` is a DataFrame (`step` or `steps` column, one column per loss) or a dict of
lists with a `"steps"` key. As in the original, a history without steps and a loss with no
values (or a length other than the steps') are passed over with a warning, not refused; see
`history.from_user`. Files are named as `lossreport render` names them; `timestamp` defaults
to now, in UTC as a render's start time is.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from ..clock import utc_time
from ..errors import RunDirectoryError
from ..runformat import GRAPHS_DIR
from . import stats
from .history import from_user
from .outputs import TIMESTAMP_FORMAT, OutputNames, write_charts, write_csv

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the original's default model and hook name
VALUE_STATS = frozenset(
    {"mean", "std", "min", "max", "final", "initial", "change", "percent_change"}
)


class LossGraphGenerator:
    def __init__(self, output_dir: str | os.PathLike[str] = GRAPHS_DIR) -> None:
        """Makes `output_dir` now, as the original did, so a bad one fails here."""
        self.output_dir = Path(output_dir)
        self._folder()

    def generate_loss_graphs(
        self,
        loss_history: Any,
        model_name: str = UNKNOWN,
        hook_name: str = UNKNOWN,
        timestamp: str | None = None,
    ) -> list[str]:
        """Save one PNG per loss and the combined PNG; returns their paths ([] when there is
        nothing to draw)."""
        history = from_user(loss_history)
        names = self._names(model_name, hook_name, timestamp)
        summary = stats.summary_stats(history, model_name, hook_name)
        charts = write_charts(self._folder(), history, summary, names)
        paths = [str(chart.path) for chart in charts]
        if not paths:
            logger.warning("loss_history has no loss values to draw: no graph files saved")
            return paths
        logger.info(
            "Generated %d loss graph files:\n%s",
            len(paths),
            "\n".join(f"  - {path}" for path in paths),
        )
        return paths

    def generate_summary_stats(
        self, loss_history: Any, model_name: str = UNKNOWN, hook_name: str = UNKNOWN
    ) -> dict[str, Any]:
        """`{"model_name", "hook_name", "total_steps", "losses": {name: {mean, std, min, max,
        final, initial, change, percent_change, nan_count, inf_count, ...}}}`; value statistics
        are floats (NaN where there is none), counts and `*_step` fields ints or None."""
        summary = stats.summary_stats(from_user(loss_history), model_name, hook_name)
        logger.info("%s", stats.console_summary(summary))
        return _with_nan_for_null(summary)

    def save_loss_history_csv(
        self,
        loss_history: Any,
        model_name: str = UNKNOWN,
        hook_name: str = UNKNOWN,
        timestamp: str | None = None,
    ) -> str:
        """Save every row (`step`, then one column per loss) as CSV; returns its path. A history
        without steps gives the `step` header alone."""
        names = self._names(model_name, hook_name, timestamp)
        path = write_csv(self._folder() / names.csv, from_user(loss_history))
        logger.info("Saved loss history CSV to: %s", path)
        return str(path)

    def _names(self, model_name: str, hook_name: str, timestamp: str | None) -> OutputNames:
        return OutputNames(
            model_name, hook_name, timestamp or utc_time().strftime(TIMESTAMP_FORMAT)
        )

    def _folder(self) -> Path:
        """`output_dir`, made again if it was deleted since the generator was made."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirectoryError(self.output_dir, f"cannot be created ({exc})") from exc
        return self.output_dir


def _with_nan_for_null(summary: dict[str, Any]) -> dict[str, Any]:
    """Null value statistics (no finite value, or an overflow) as NaN: callers format them as
    floats (`f"{percent_change:.2f}%"` in the feature document), which None would break. The
    run's JSON summary keeps null, as strict JSON has no NaN."""
    losses = {
        name: {
            key: math.nan if key in VALUE_STATS and value is None else value
            for key, value in loss.items()
        }
        for name, loss in summary["losses"].items()
    }
    return {**summary, "losses": losses}
