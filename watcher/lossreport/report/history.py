"""One shape for a loss history, whatever it came from: a run directory's Arrow table, the
DataFrame `Run.get_loss_history()` returns, or the feature document's dict of lists.

A loss that was not logged at a step is *missing* (dropped from that loss's series); a NaN or
inf that was logged is a *value* and stays, so it can be counted and shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .. import runformat
from ..errors import InvalidInputError

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class LossSeries:
    """The steps at which one loss was logged and its values there (NaN and inf included)."""

    name: str
    steps: IntArray
    values: FloatArray


@dataclass(frozen=True)
class LossHistory:
    """Every logged row: `table` has `step` first, then one float64 column per loss."""

    table: pa.Table

    @property
    def loss_names(self) -> list[str]:
        return [name for name in self.table.column_names if name != runformat.STEP]

    @property
    def total_steps(self) -> int:
        return int(self.table.num_rows)

    def series(self) -> list[LossSeries]:
        steps = self.table.column(runformat.STEP).to_numpy()
        result = []
        for name in self.loss_names:
            column = self.table.column(name)
            values = column.to_numpy().astype(np.float64, copy=False)  # null -> NaN here
            if column.null_count:
                logged = column.is_valid().to_numpy(zero_copy_only=False)
                result.append(LossSeries(name, steps[logged], values[logged]))
            else:
                result.append(LossSeries(name, steps, values))
        return result


def from_table(table: pa.Table) -> LossHistory:
    """A run directory's table (runformat.read_losses) without its wall_time column."""
    keep = [name for name in table.column_names if name != runformat.WALL_TIME]
    return LossHistory(table.select(keep).combine_chunks())


def from_user(loss_history: Any) -> LossHistory:
    """Accept a DataFrame (`step` or `steps` column) or a dict of lists with a `steps` key.

    Here NaN cannot be told from missing, so NaNs before a loss's first real value are taken
    as "not logged yet" (a loss that starts late) and later ones as logged NaNs.
    """
    columns = _columns_of(loss_history)
    step_key = next((key for key in ("step", "steps") if key in columns), None)
    if step_key is None:
        raise InvalidInputError("loss_history needs a 'steps' (or 'step') entry")
    try:
        steps = np.asarray(columns[step_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"loss_history['{step_key}'] must hold integers ({exc})") from exc
    arrays: dict[str, pa.Array] = {runformat.STEP: pa.array(steps)}
    for name, raw in columns.items():
        if name in (step_key, runformat.WALL_TIME):
            continue
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"loss_history[{name!r}] must hold numbers ({exc})") from exc
        if values.shape != steps.shape:
            raise InvalidInputError(
                f"loss_history[{name!r}] has {values.size} values for {steps.size} steps"
            )
        started = np.flatnonzero(~np.isnan(values))
        first = int(started[0]) if started.size else values.size
        missing = np.arange(values.size) < first
        arrays[str(name)] = pa.array(values, mask=missing)
    return LossHistory(pa.table(arrays))


def _columns_of(loss_history: Any) -> Mapping[str, Sequence[Any]]:
    if isinstance(loss_history, LossHistory):
        return {
            name: loss_history.table.column(name).to_numpy()
            for name in loss_history.table.column_names
        }
    if isinstance(loss_history, Mapping):
        return loss_history
    if hasattr(loss_history, "columns") and hasattr(loss_history, "__getitem__"):  # DataFrame
        return {str(name): loss_history[name].to_numpy() for name in loss_history.columns}
    raise InvalidInputError(
        f"loss_history must be a DataFrame or a dict of lists, got {type(loss_history).__name__}"
    )
