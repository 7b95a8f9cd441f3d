"""Finding runs at any depth of a tree, choosing which series are losses, and where a run's
report goes (its home): the parts of reading foreign logs that are not one tool's format."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

import lossreport
from lossreport import runformat, sources
from lossreport.errors import UnsafePathError
from lossreport.runformat import Homes
from lossreport.runformat.homes import make_dirs
from lossreport.sources import SeriesFilter
from lossreport.sources.longform import long_table, to_wide, wide_data
from tests.support.procs import run_cli


def _native_run(parent: Path, run_id: str) -> Path:
    with lossreport.start_run(parent, model="m", hook="h", run_id=run_id) as run:
        run.log(0, mse_loss=1.0)
    return run.path


def test_runs_are_found_at_any_depth_but_not_in_reports_hidden_folders_or_links(
    runs_dir: Path, tmp_path: Path
) -> None:
    top = _native_run(runs_dir, "top")
    deep = _native_run(runs_dir / "team" / "exp1" / "sweep", "deep")
    # Not walked: our own folders, reports, a run's own folders, links.
    _native_run(runs_dir / ".lossreport", "hidden")
    _native_run(top / runformat.GRAPHS_DIR, "in-a-report")
    _native_run(deep, "inside-a-run")
    dummy = tmp_path / "dummy"
    _native_run(dummy, "behind-a-link")
    (runs_dir / "linked").symlink_to(dummy, target_is_directory=True)
    (runs_dir / "linked-file").symlink_to(dummy / "behind-a-link" / runformat.RUN_FILE)
    assert sources.list_runs(runs_dir) == [deep, top]
    # The daemon's faster listing finds the same runs, as keys.
    assert sources.list_run_keys(runs_dir) == ["team/exp1/sweep/deep", "top"]


def test_the_walk_stops_at_the_depth_limit(runs_dir: Path) -> None:
    at_limit = runs_dir.joinpath(*["d"] * (runformat.MAX_RUN_DEPTH - 1))
    below_limit = at_limit / "d"
    reachable = _native_run(at_limit, "ok")
    _native_run(below_limit, "too-deep")
    assert sources.list_runs(runs_dir) == [reachable]
    assert sources.list_run_keys(runs_dir) == [reachable.relative_to(runs_dir).as_posix()]


def test_run_keys_are_paths_of_plain_names() -> None:
    assert runformat.is_run_name("exp1/lightning_logs/version_3")
    for bad in ("", "a//b", "../a", "a/../b", ".lossreport/x", "a/loss_graphs/b", "a/.b", "/a"):
        assert not runformat.is_run_name(bad), bad
    assert not runformat.is_run_name("/".join(["d"] * (runformat.MAX_RUN_DEPTH + 1)))


def test_a_series_filter_keeps_included_series_and_drops_excluded_ones() -> None:
    table = pa.table(
        {
            "step": [1],
            "wall_time": [0.0],
            "train/mse": [1.0],
            "train/lr": [0.1],
            "eval/mse": [2.0],
        }
    )
    kept, dropped = SeriesFilter(("train/*",), ("*lr",)).apply(table)
    assert kept.column_names == ["step", "wall_time", "train/mse"]
    assert dropped == ["train/lr", "eval/mse"]
    assert SeriesFilter().apply(table) == (table, [])
    assert not SeriesFilter() and SeriesFilter(exclude=("x",))


def test_to_wide_keeps_the_later_write_of_a_series_at_a_step() -> None:
    nan = float("nan")
    long = long_table(
        ["b", "a", "b", "a", "b", "c"],
        [2, 1, 1, 1, 2, 3],
        [nan, 5.0, 1.0, 4.0, nan, 7.0],
        [1.0, 2.0, 3.0, 4.0, 5.0, float("inf")],
    )
    wide = to_wide(long).to_pydict()
    assert wide["step"] == [1, 2, 3]
    assert wide["b"] == [3.0, 5.0, None]  # equal (no) wall times: the one read later
    assert wide["a"] == [2.0, None, None]  # wall time 5.0 beats 4.0, though read first
    assert wide["c"] == [None, None, float("inf")]  # logged inf is a value, not missing
    assert wide["wall_time"] == [5.0, None, 7.0]
    assert list(wide) == ["step", "wall_time", "b", "a", "c"]  # series in order of appearance


def test_a_home_is_the_run_folder_unless_mirrored(runs_dir: Path, tmp_path: Path) -> None:
    run = _native_run(runs_dir / "exp", "r")
    assert Homes(runs_dir).home_of("exp/r") == run
    output = tmp_path / "out"
    output.mkdir()
    homes = Homes(runs_dir, output)
    writable = os.access(run, os.W_OK)  # root writes anywhere: then only a mirror moves it
    assert homes.home_of("exp/r") == (run if writable else output / "exp" / "r")
    (output / "exp" / "r").mkdir(parents=True)  # mirrored once: it stays there
    assert homes.home_of("exp/r") == output / "exp" / "r"
    assert homes.make_home("exp/r") == output / "exp" / "r"
    with pytest.raises(lossreport.RunDirectoryError):
        homes.home_of("../escape")


def test_a_link_planted_in_the_mirror_is_refused(runs_dir: Path, tmp_path: Path) -> None:
    _native_run(runs_dir / "exp", "r")
    output, dummy = tmp_path / "out", tmp_path / "dummy"
    output.mkdir()
    dummy.mkdir()
    (output / "exp").symlink_to(dummy, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        make_dirs(output, ["exp", "r"])  # what make_home does for a mirrored run
    assert list(dummy.iterdir()) == []


def test_series_named_like_the_tables_own_columns_are_named_not_read() -> None:
    long = long_table(["step", "loss", "wall_time"], [100, 100, 100], [1.0] * 3, [7.0, 0.5, 9.0])
    data = wide_data(long, ["earlier note"])
    assert data.table.to_pydict() == {"step": [100], "wall_time": [1.0], "loss": [0.5]}
    assert data.skipped[0] == "earlier note"
    assert [note.split(":")[0] for note in data.skipped[1:]] == [
        "series 'step'",
        "series 'wall_time'",
    ]


def test_a_folder_whose_only_inputs_are_a_fifo_or_a_link_says_why_it_is_no_run(
    runs_dir: Path, tmp_path: Path
) -> None:
    fifo = runs_dir / "exp" / "tb-fifo" / "events.out.tfevents.1700000000.host.1.0"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    dummy = tmp_path / "dummy"
    dummy.write_bytes(b"")
    link = runs_dir / "exp" / "csv-link" / "metrics.csv"
    link.parent.mkdir()
    link.symlink_to(dummy)
    fifo_reason = f"{fifo}: not a regular file (a FIFO), skipped"
    link_reason = f"{link}: not a regular file (a symbolic link), skipped"
    done = run_cli("render", str(runs_dir))
    assert done.returncode == 1
    assert done.stderr == (
        f"lossreport: {runs_dir}: not a run directory ({sources.WHAT_IS_A_RUN}; "
        f"{link_reason}; {fifo_reason})\n"
    )
    assert sources.passed_over(runs_dir) == [link_reason, fifo_reason]
    with pytest.raises(lossreport.RunDirectoryError, match=re.escape(fifo_reason)):
        lossreport.render_run(fifo.parent)
