from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from lossreport.errors import LossReportError
from lossreport.report.history import from_user


def test_the_feature_documents_dict_of_lists_is_accepted() -> None:
    history = from_user({"steps": [0, 1, 2], "mse_loss": [3.0, 2.0, 1.0]})
    assert history.loss_names == ["mse_loss"]
    (series,) = history.series()
    assert series.steps.tolist() == [0, 1, 2]
    assert series.values.tolist() == [3.0, 2.0, 1.0]


def test_a_dataframe_from_get_loss_history_is_accepted() -> None:
    frame = pd.DataFrame({"step": [5, 6], "mse_loss": [1.0, 0.5], "l1_loss": [0.1, 0.2]})
    assert from_user(frame).loss_names == ["mse_loss", "l1_loss"]


def test_leading_nans_mean_not_logged_yet_and_later_nans_are_values() -> None:
    history = from_user({"steps": [0, 1, 2, 3], "aux": [math.nan, math.nan, 1.0, math.nan]})
    (series,) = history.series()
    assert series.steps.tolist() == [2, 3]
    assert series.values[0] == 1.0 and math.isnan(series.values[1])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"steps": [0], "mse_loss": ["high"]}, "'mse_loss'.*numbers"),
        ({"steps": ["a"], "mse_loss": [1.0]}, "integers"),
        ([1, 2, 3], "DataFrame or a dict"),
    ],
)
def test_bad_histories_are_refused_with_what_is_wrong(bad: object, message: str) -> None:
    with pytest.raises(LossReportError, match=message):
        from_user(bad)


@pytest.mark.parametrize("empty", [{}, {"mse_loss": [1.0]}, pd.DataFrame()])
def test_a_history_without_steps_is_empty_with_a_warning(
    empty: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lossreport.report.history"):
        history = from_user(empty)
    assert history.table.column_names == ["step"] and history.total_steps == 0
    assert [record.getMessage() for record in caplog.records] == [
        "loss_history has no 'steps' (or 'step') entry: no losses to report"
    ]


def test_a_dataframe_with_a_steps_column_is_accepted() -> None:
    frame = pd.DataFrame({"steps": [0, 1], "mse_loss": [1.0, 0.5]})
    assert from_user(frame).table.column_names == ["step", "mse_loss"]


def test_empty_and_misfit_losses_are_skipped_with_a_warning_naming_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="lossreport.report.history"):
        history = from_user(
            {"steps": [0, 1], "mse_loss": [1.0, 0.5], "l1_loss": [], "aux": [1.0, 2.0, 3.0]}
        )
    assert history.loss_names == ["mse_loss"] and history.total_steps == 2
    assert [record.getMessage() for record in caplog.records] == [
        "loss_history['l1_loss'] has no values: skipped",
        "loss_history['aux'] has 3 values for 2 steps: skipped",
    ]


def test_numbers_are_checked_before_a_loss_is_skipped() -> None:
    with pytest.raises(LossReportError, match=r"'aux'.*numbers"):
        from_user({"steps": [0, 1], "aux": ["high"]})


def test_numpy_arrays_work_as_columns() -> None:
    history = from_user({"steps": np.arange(3), "mse_loss": np.ones(3, dtype=np.float32)})
    assert history.total_steps == 3
