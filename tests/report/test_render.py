"""render_run on real run directories, written by the real trainer side."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lossreport
from lossreport import runformat
from lossreport.errors import RunBusy
from lossreport.report import theme
from lossreport.report.pages import breakable
from lossreport.report.render import render_held, render_lock, render_run
from lossreport.report.vega import ChartRenderer
from lossreport.runformat import read_marker
from tests.support.png import png_size_and_dpi
from tests.support.trainer import expected_losses

XSS = "<img src=x onerror=alert(1)>"


def _logged_run(runs_dir: Path, steps: int = 400, **start: object) -> Path:
    options = {
        "model": "tiny-stories-1L-21M",
        "hook": "blocks.0.hook_mlp_out",
        "architecture": "gated",
        "run_id": "run",
        **start,
    }
    with lossreport.start_run(runs_dir, flush_every=97, **options) as run:  # type: ignore[arg-type]
        for step in range(steps):
            run.log(step, **expected_losses(step))
    return run.path


def _stamp(run_dir: Path) -> str:
    started = runformat.parse_time(runformat.read_run_file(run_dir).started_at)
    return started.strftime("%Y%m%d_%H%M%S")


def test_a_render_writes_the_feature_documents_files(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir)
    result = render_run(run_dir)
    suffix = f"tiny-stories-1L-21M_blocks.0.hook_mlp_out_{_stamp(run_dir)}"
    expected = {
        *(
            f"loss_curves_{loss}_{suffix}.png"
            for loss in (
                "mse_loss",
                "l1_loss",
                "overall_loss",
                "auxiliary_reconstruction_loss",
                "combined",
            )
        ),
        f"loss_history_{suffix}.csv",
        f"loss_summary_{suffix}.json",
        f"loss_report_{suffix}.html",
    }
    graphs = run_dir / "loss_graphs"
    # and the marker recording what was rendered, so a daemon does not render it again
    assert {path.name for path in graphs.iterdir()} == {*expected, runformat.MARKER}
    assert {path.name for path in result.files} == expected
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".loss_graphs")] == []


def test_pngs_are_300_dpi_and_publication_sized(runs_dir: Path) -> None:
    result = render_run(_logged_run(runs_dir))
    for chart in result.charts:
        width, height, dpi = png_size_and_dpi(chart)
        assert dpi == pytest.approx(300, abs=0.1), chart.name
        assert 1800 <= width <= 4000 and 1000 <= height <= 3000, (chart.name, width, height)


def test_the_csv_holds_every_logged_value_exactly(runs_dir: Path) -> None:
    result = render_run(_logged_run(runs_dir, steps=400))
    with result.csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "step",
        "mse_loss",
        "l1_loss",
        "overall_loss",
        "auxiliary_reconstruction_loss",
    ]
    assert len(rows) == 400
    for row in rows:
        step = int(row["step"])
        expected = expected_losses(step)
        for name in ("mse_loss", "l1_loss", "overall_loss", "auxiliary_reconstruction_loss"):
            if name not in expected:
                assert row[name] == ""  # not logged yet: empty, not NaN
            elif math.isnan(expected[name]):
                assert row[name] == "nan"
            else:
                assert float(row[name]) == expected[name], (step, name)  # bit for bit


def test_the_summary_has_the_documented_statistics_and_counts_non_finite(
    runs_dir: Path,
) -> None:
    result = render_run(_logged_run(runs_dir))
    summary = json.loads(result.summary.read_text())
    assert (summary["model_name"], summary["hook_name"], summary["total_steps"]) == (
        "tiny-stories-1L-21M",
        "blocks.0.hook_mlp_out",
        400,
    )
    mse = summary["losses"]["mse_loss"]
    assert set(mse) >= {
        "mean",
        "std",
        "min",
        "max",
        "final",
        "initial",
        "change",
        "percent_change",
        "nan_count",
        "inf_count",
    }
    assert mse["nan_count"] == 1 and summary["losses"]["overall_loss"]["inf_count"] == 1
    assert mse["final"] == expected_losses(399)["mse_loss"]
    assert mse["initial"] == 1.0
    assert summary["run"]["status"] == "completed"
    assert summary["anomalies"] == ["mse_loss: 1 NaN, 0 inf", "overall_loss: 0 NaN, 1 inf"]
    assert summary["losses"]["auxiliary_reconstruction_loss"]["count"] == 250


def test_user_strings_are_escaped_in_the_report_and_cleaned_in_file_names(
    runs_dir: Path,
) -> None:
    run_dir = _logged_run(
        runs_dir,
        steps=20,
        model=XSS,
        hook="../../etc/passwd",
        config={"note": "<script>alert(2)</script>"},
    )
    result = render_run(run_dir)
    assert all(path.parent == run_dir / "loss_graphs" for path in result.files)
    assert result.report.name.startswith("loss_report_img_src_x_onerror_alert_1_etc_passwd_")
    page = result.report.read_text()
    assert XSS not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" not in page  # the report runs no script at all


def test_long_loss_names_wrap_at_underscores_and_stay_escaped(runs_dir: Path) -> None:
    page = render_run(_logged_run(runs_dir, steps=200)).report.read_text()
    assert "<td>auxiliary_<wbr>reconstruction_<wbr>loss</td>" in page
    assert breakable("<b>a_b</b>.c") == "&lt;b&gt;a_<wbr>b&lt;/b&gt;.<wbr>c"


def test_the_report_names_the_nan_marker_by_its_colour(runs_dir: Path) -> None:
    page = render_run(_logged_run(runs_dir, steps=20)).report.read_text()
    said = re.search(r"marked in <span[^>]*color: (#[0-9A-Fa-f]{6})[^>]*>(\w+)</span>", page)
    assert said is not None, "the anomalies note names no colour"
    assert (said[1], said[2]) == (theme.NAN_COLOUR, theme.NAN_COLOUR_NAME)


def test_a_corrupt_shard_and_a_malformed_run_file_are_reported_not_fatal(
    runs_dir: Path,
) -> None:
    run_dir = _logged_run(runs_dir, steps=300)
    bad_shard = run_dir / "losses" / "part-000099.parquet"
    bad_shard.write_bytes(b"PAR1 this is not parquet")
    (run_dir / "run.json").write_text('{"format": "lossreport.run/1", "status": ')
    result = render_run(run_dir)
    assert len(result.problems) == 2
    assert str(bad_shard) in result.problems[1]
    assert "run.json" in result.problems[0] and "not valid JSON" in result.problems[0]
    page = result.report.read_text()
    assert "Some inputs were skipped" in page and "part-000099.parquet" in page
    summary = json.loads(result.summary.read_text())
    assert summary["total_steps"] == 300 and len(summary["skipped"]) == 2
    assert summary["run"]["status"] == "unknown"


def test_a_run_with_no_rows_gets_a_report_that_says_so(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="m", hook="h", run_id="empty")
    run.close()
    result = render_run(run.path)
    assert result.charts == []
    assert "no logged losses yet" in result.report.read_text()
    assert result.csv.read_text() == "step\n"


def test_a_rerender_replaces_the_report_and_keeps_other_peoples_files(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir)
    first = render_run(run_dir)
    note = run_dir / "loss_graphs" / "my_notes.txt"
    note.write_text("keep me")
    second = render_run(run_dir)
    assert {p.name for p in first.files} == {p.name for p in second.files}
    assert note.read_text() == "keep me"
    kept = {p.name for p in (run_dir / "loss_graphs").iterdir()}
    assert kept == {p.name for p in second.files} | {"my_notes.txt", runformat.MARKER}


def test_a_loss_graphs_file_in_the_way_is_never_deleted(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir, steps=10)
    blocker = run_dir / "loss_graphs"
    blocker.write_text("a user's file")
    with pytest.raises(lossreport.RunDirectoryError, match="loss_graphs"):
        render_run(run_dir)
    assert blocker.read_text() == "a user's file"
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".loss_graphs")] == []


def test_a_stalled_status_is_shown_when_the_caller_says_so(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir, steps=10)
    result = render_run(run_dir, status="stalled")
    assert json.loads(result.summary.read_text())["run"]["status"] == "stalled"
    assert "status-stalled" in result.report.read_text()


def test_shards_from_other_writers_with_different_schemas_render(runs_dir: Path) -> None:
    run_dir = runs_dir / "foreign"
    (run_dir / "losses").mkdir(parents=True)
    runformat.write_run_file(run_dir, runformat.RunRecord("foreign", "m", "h", status="completed"))
    runformat.write_shard(
        run_dir, 1, pa.table({"step": pa.array([0, 1], pa.int32()), "mse_loss": [2.0, 1.0]})
    )
    runformat.write_shard(
        run_dir,
        2,
        pa.table({"step": [1, 2], "mse_loss": [9.0, 0.5], "aux": pa.array([1, 2], pa.int16())}),
    )
    result = render_run(run_dir)
    with result.csv.open() as handle:
        assert handle.read().splitlines() == ["step,mse_loss,aux", "0,2,", "1,9,1", "2,0.5,2"]


def test_abandoned_staging_folders_from_a_killed_render_are_cleaned(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir, steps=10)
    leftover = run_dir / ".loss_graphs.new-abc123"
    leftover.mkdir()
    (leftover / "half.png").write_bytes(b"\x89PNG")
    render_run(run_dir)
    assert not leftover.exists()


def test_a_run_being_rendered_elsewhere_is_reported_busy_or_waited_for(runs_dir: Path) -> None:
    run_dir = _logged_run(runs_dir, steps=10)
    with render_lock(run_dir, wait=math.inf), pytest.raises(RunBusy):
        render_run(run_dir, wait=False)
    assert render_run(run_dir, wait=False).report.exists()


def test_control_characters_in_names_are_drawn_not_fatal(runs_dir: Path) -> None:
    """vl-convert aborts its whole process on a control character in chart text."""
    with lossreport.start_run(runs_dir, model="two\nlines", hook="h\x1e", run_id="odd") as run:
        run.log(0, mse_loss=1.0)
    table = pa.table({"step": [1, 2], "wall_time": [0.0, 0.0], "odd\x04loss": [0.5, 0.25]})
    runformat.write_shard(run.path, 99, table)
    result = render_run(run.path)
    assert len(result.charts) == 3  # mse_loss, the odd loss, combined
    assert "odd\x04loss" in result.csv.read_text()  # the data keep the name as it was


class _NoCharts(ChartRenderer):
    """A renderer that fails if asked to draw: the quick report must never ask."""

    def render_all(self, specs: Iterable[dict[str, Any]]) -> list[tuple[str, bytes]]:
        raise AssertionError("the quick report drew a chart")


def test_the_quick_report_is_everything_but_the_charts_and_no_render_of_record(
    runs_dir: Path,
) -> None:
    model = "Qwen/Qwen2.5-7B-中文-<b>instruct</b>"
    run_dir = _logged_run(runs_dir, model=model)
    with render_lock(run_dir, wait=0) as run_fd:
        result = render_held(run_dir, run_fd, renderer=_NoCharts(), draw=False)
    graphs = run_dir / runformat.GRAPHS_DIR
    names = sorted(path.name for path in graphs.iterdir() if path.name != runformat.LOCK_FILE)
    assert [name.split("_")[1] for name in names] == ["history", "report", "summary"], names
    assert result.charts == [] and result.combined_svg is None
    assert read_marker(run_dir) is None  # the full render records the report, not this one
    assert json.loads(result.summary.read_text())["losses"]["mse_loss"]["final"] is not None
    page = result.report.read_text()
    assert "The charts are being drawn." in page
    assert '<meta http-equiv="refresh"' in page
    assert "<img" not in page
    assert "中文-&lt;b&gt;instruct&lt;/b&gt;" in page and "<b>instruct" not in page
    full = render_run(run_dir)  # the full report replaces it whole
    page = full.report.read_text()
    assert "being drawn" not in page and "refresh" not in page
    assert len(full.charts) == 5 and all(chart.exists() for chart in full.charts)
