"""One shape for a loss history, whatever it came from: a run directory's Arrow table, the
DataFrame `Run.get_loss_history()` returns, or the feature document's dict of lists.

A loss that was not logged at a step is *missing* (dropped from that loss's series); a NaN or
inf that was logged is a *value* and stays, so it can be counted and shown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .. import runformat
from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

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

    def select(self, names: list[str]) -> LossHistory:
        """The history of the losses `names` alone, in that order (the rows stay)."""
        return LossHistory(self.table.select([runformat.STEP, *names]))

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

    Lenient where the feature document's trainer was: it always has `l1_loss` and
    `auxiliary_reconstruction_loss`, left empty by most SAEs. So a history without steps
    (`{}`, an empty DataFrame) comes back empty (a `step` column and no rows), and a loss with
    no values or a length other than the steps' is left out; each with a warning. Steps that
    are not integers and values that are not numbers are still refused.
    """
    columns = _columns_of(loss_history)
    step_key = next((key for key in ("step", "steps") if key in columns), None)
    if step_key is None:
        logger.warning("loss_history has no 'steps' (or 'step') entry: no losses to report")
        return LossHistory(pa.table({runformat.STEP: pa.array([], pa.int64())}))
    steps = _steps(step_key, columns[step_key])
    arrays: dict[str, pa.Array] = {runformat.STEP: pa.array(steps)}
    for name, raw in columns.items():
        if name in (step_key, runformat.WALL_TIME):
            continue
        values = _values(name, raw)
        if _fits_steps(name, values, steps):
            arrays[str(name)] = _logged_from_first_value(values)
    return LossHistory(pa.table(arrays))


def _steps(key: str, raw: Any) -> IntArray:
    try:
        return np.asarray(raw, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"loss_history['{key}'] must hold integers ({exc})") from exc


def _values(name: str, raw: Any) -> FloatArray:
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"loss_history[{name!r}] must hold numbers ({exc})") from exc


def _fits_steps(name: str, values: FloatArray, steps: IntArray) -> bool:
    """False, with a warning, for a loss to leave out: one never logged (an empty list, as the
    original trainer leaves losses its SAE does not have) or one that does not line up."""
    if values.size == 0:
        logger.warning("loss_history[%r] has no values: skipped", name)
        return False
    if values.shape != steps.shape:
        logger.warning(
            "loss_history[%r] has %d values for %d steps: skipped", name, values.size, steps.size
        )
        return False
    return True


def _logged_from_first_value(values: FloatArray) -> pa.Array:
    """NaNs before the first non-NaN value become missing (see `from_user`)."""
    started = np.flatnonzero(~np.isnan(values))
    first = int(started[0]) if started.size else values.size
    return pa.array(values, mask=np.arange(values.size) < first)


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
