"""The zoomable charts' data: each pixel column's lowest and highest value, every step once
the range is narrow, and a run read once and again when it changes."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import lossreport
from lossreport.browse.run_view import read_run
from lossreport.browse.series import SeriesCache, window
from tests.support.long_run import SPIKE_STEP, value_at, write_long_run
from tests.support.serve_thread import server_thread
from tests.support.server import request
from tests.support.trainer_state import write_trainer_output


def _brute_force(
    steps: np.ndarray, values: np.ndarray, start: float, end: float, width: int
) -> dict[int, tuple[float, float]]:
    """Each column's (min, max) over the finite values, computed the slow, obvious way."""
    columns: dict[int, list[float]] = {}
    for step, value in zip(steps.tolist(), values.tolist(), strict=True):
        if start <= step <= end and np.isfinite(value):
            column = min(int((step - start) / (end - start) * width), width - 1)
            columns.setdefault(column, []).append(value)
    return {column: (min(found), max(found)) for column, found in columns.items()}


@pytest.mark.parametrize(
    ("start", "end", "width"), [(0, 99_999, 100), (1234, 56789, 333), (10, 20_000, 7)]
)
def test_each_column_keeps_its_lowest_and_highest(start: int, end: int, width: int) -> None:
    rng = np.random.default_rng(7)
    steps = np.sort(rng.choice(200_000, size=100_000, replace=False)).astype(np.int64)
    values = rng.normal(size=steps.size)
    values[rng.choice(steps.size, 500)] = np.nan
    values[rng.choice(steps.size, 50)] = np.inf
    answer = window(steps, values, start, end, width)
    assert not answer["exact"]
    in_range = (steps >= start) & (steps <= end)
    assert answer["steps_in_range"] == int(in_range.sum())
    assert answer["nonfinite"] == int((in_range & ~np.isfinite(values)).sum())
    got: dict[int, list[float]] = {}
    for step, value in answer["points"]:
        column = min(int((step - start) / (end - start) * width), width - 1)
        got.setdefault(column, []).append(value)
        assert value == values[np.searchsorted(steps, step)]  # a real point, not a made one
    expected = _brute_force(steps, values, start, end, width)
    assert {column: (min(v), max(v)) for column, v in got.items()} == expected
    assert [point[0] for point in answer["points"]] == sorted(p[0] for p in answer["points"])


def test_a_narrow_range_comes_back_whole_with_each_step_as_logged() -> None:
    steps = np.arange(1_000_000, dtype=np.int64)
    values = value_at(steps)
    answer = window(steps, values, SPIKE_STEP - 50, SPIKE_STEP + 50, 1000)
    assert answer["exact"] and answer["steps_in_range"] == 101
    assert answer["points"] == [
        [int(s), float(value_at(s))] for s in range(SPIKE_STEP - 50, SPIKE_STEP + 51)
    ]
    assert all(isinstance(point[0], int) for point in answer["points"])
    overview = window(steps, values, 0, 999_999, 1000)
    assert max(value for _, value in overview["points"]) == 5.0  # the one-step spike stays


def test_a_run_is_read_once_and_again_when_it_grows(runs_dir: Path) -> None:
    cache = SeriesCache()
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="growing") as run:
        for step in range(100):
            run.log(step, mse_loss=float(step))
        run.flush()
        first = cache.columns(run.path)
        assert first is not None and first.steps.size == 100
        assert cache.columns(run.path) is first  # within the recheck time: not looked at
        for step in range(100, 150):
            run.log(step, mse_loss=float(step))
        run.flush()
        first.checked -= 60  # as if the recheck time had passed
        grown = cache.columns(run.path)
        assert grown is not None and grown.steps.size == 150
        assert grown.losses["mse_loss"].values[-1] == 149.0


def test_nan_and_inf_are_counted_and_a_late_loss_is_not(runs_dir: Path) -> None:
    """A logged NaN or infinity is counted and left out of the points; a loss added later is
    absent before it starts, not NaN."""
    with lossreport.start_run(runs_dir, model="m", hook="h", run_id="odd") as run:
        for step in range(10):
            run.log(step, mse_loss={3: float("nan"), 4: float("inf")}.get(step, float(step)))
        run.flush()
        for step in range(10, 20):
            run.log(step, mse_loss=float(step), aux_loss=-float(step))
        run.flush()
        columns = SeriesCache().columns(run.path)
    assert columns is not None and columns.steps.size == 20
    mse, aux = columns.losses["mse_loss"], columns.losses["aux_loss"]
    answer = window(mse.steps, mse.values, 0, 19, 1000)
    assert answer["nonfinite"] == 2 and answer["steps_in_range"] == 20 and answer["exact"]
    assert [step for step, _ in answer["points"]] == [s for s in range(20) if s not in (3, 4)]
    overview = window(mse.steps, mse.values, 0, 19, 3)  # min/max with the NaN in a column
    assert not overview["exact"] and overview["nonfinite"] == 2
    assert [overview["points"][0][1], overview["points"][-1][1]] == [0.0, 19.0]
    late = window(aux.steps, aux.values, 0, 19, 1000)
    assert late["nonfinite"] == 0 and late["steps_in_range"] == 10
    assert late["points"] == [[step, -float(step)] for step in range(10, 20)]


def test_the_cache_holds_at_most_its_bytes(runs_dir: Path) -> None:
    run_dirs = [write_long_run(runs_dir, f"run-{i}", steps=100_000) for i in range(3)]
    one = SeriesCache().columns(run_dirs[0])
    assert one is not None
    cache = SeriesCache(max_bytes=int(one.nbytes * 2.5))
    for run_dir in run_dirs:
        assert cache.columns(run_dir) is not None
    assert cache.nbytes <= cache.max_bytes
    assert run_dirs[0] not in cache and run_dirs[2] in cache  # the least recently used went


def test_concurrent_requests_for_a_run_not_read_yet_share_one_read(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run's JSON log read for the charts can take many times its size in memory: the
    requests that come while it is read wait for that read instead of each making their own."""
    write_trainer_output(runs_dir / "hf-run", steps=60_000)  # a 10 MB trainer_state.json
    requests = 4
    together = threading.Barrier(requests)
    answers: list[tuple[int, bytes]] = []

    def ask(port: int) -> None:
        together.wait(timeout=30)
        status, _, body = request(port, "/.api/series?run=hf-run&loss=loss&width=200")
        answers.append((status, body))

    series_log = caplog.at_level(logging.DEBUG, logger="lossreport.browse.series")
    with series_log, server_thread(runs_dir) as port:
        threads = [threading.Thread(target=ask, args=(port,)) for _ in range(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(answers) == requests and {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert json.loads(answers[0][1])["steps_in_range"] == 60_000
    reads = [record for record in caplog.records if record.getMessage().startswith("read ")]
    assert len(reads) == 1, [record.getMessage() for record in reads]


def test_a_folder_that_is_no_run_reads_as_none(runs_dir: Path, tmp_path: Path) -> None:
    (runs_dir / "empty").mkdir()
    assert SeriesCache().columns(runs_dir / "empty") is None


def test_a_run_behind_a_link_is_no_run(runs_dir: Path, tmp_path: Path) -> None:
    """The views reach a run through read_run: a link anywhere on the way is refused."""
    real = write_long_run(tmp_path / "elsewhere", "real", steps=10)
    (runs_dir / "group").mkdir()
    os.symlink(real, runs_dir / "group" / "linked")
    os.symlink(tmp_path / "elsewhere", runs_dir / "above")
    cache = SeriesCache()
    for key in ("group/linked", "above/real", "group/../group/plain", "group/missing"):
        assert read_run(runs_dir, cache, key) is None, key
    write_long_run(runs_dir / "group", "plain", steps=10)
    found = read_run(runs_dir, cache, "group/plain")
    assert found is not None and found[0].steps.size == 10
    assert found[1]["model"] == "gpt2-small"
