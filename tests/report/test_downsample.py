from __future__ import annotations

import numpy as np

from lossreport.report.downsample import minmax, thin_steps


def test_short_series_are_drawn_as_they_are() -> None:
    steps, values = np.arange(100), np.linspace(1, 0, 100)
    kept_steps, kept_values = minmax(steps, values, buckets=50)
    assert kept_steps is steps and kept_values is values


def test_a_single_spike_in_a_million_points_survives() -> None:
    steps = np.arange(1_000_000)
    values = np.full(steps.size, 0.5)
    values[654_321] = 80.0
    values[123_457] = -3.0
    kept_steps, kept_values = minmax(steps, values, buckets=1000)
    assert kept_steps.size <= 2000
    assert kept_values.max() == 80.0 and kept_steps[kept_values.argmax()] == 654_321
    assert kept_values.min() == -3.0 and kept_steps[kept_values.argmin()] == 123_457
    assert np.all(np.diff(kept_steps) > 0)


def test_uneven_lengths_keep_every_extreme_of_the_last_bucket() -> None:
    steps = np.arange(2_003)
    values = np.sin(steps / 50.0)
    values[-1] = 9.0
    kept_steps, kept_values = minmax(steps, values, buckets=100)
    assert kept_steps[-1] == 2_002 and kept_values[-1] == 9.0
    assert kept_steps.size <= 200


def test_thin_steps_spreads_markers_evenly() -> None:
    assert thin_steps(np.arange(10), budget=20).tolist() == list(range(10))
    thinned = thin_steps(np.arange(10_000), budget=5)
    assert thinned.tolist() == [0, 2499, 4999, 7499, 9999]
