"""Checks that what a run directory holds is exactly what the scripted trainer logged."""

from __future__ import annotations

import math

import pyarrow as pa

from .trainer import expected_losses


def assert_rows_are_exactly_the_logged_values(table: pa.Table, first_step: int = 0) -> None:
    """Steps first_step..N-1 with no gap, each value bit-for-bit what was logged."""
    steps = table.column("step").to_pylist()
    assert steps == list(range(first_step, first_step + len(steps)))
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for index, step in enumerate(steps):
        expected = expected_losses(step)
        for name, values in columns.items():
            if name in ("step", "wall_time"):
                continue
            got = values[index]
            want = expected.get(name)
            if want is not None and math.isnan(want):
                assert got is not None and math.isnan(got), (step, name, got)
            else:
                assert got == want, (step, name, got, want)
