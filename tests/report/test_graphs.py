"""The feature document's Python API: LossGraphGenerator."""

from __future__ import annotations

import html
import logging
import math
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

import lossreport
from lossreport import LossGraphGenerator, runformat
from lossreport.report.outputs import MAX_FILE_NAME, loss_parts
from lossreport.report.render import render_run
from tests.support.png import png_size_and_dpi

HISTORY = {
    "steps": list(range(50)),
    "mse_loss": [1.0 / (step + 1) for step in range(50)],
    "l1_loss": [0.05 + 0.001 * step for step in range(50)],
    "overall_loss": [1.0 / (step + 1) + 0.05 + 0.001 * step for step in range(50)],
}


def test_generate_loss_graphs_saves_one_png_per_loss_and_the_combined_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generator = LossGraphGenerator(output_dir=tmp_path / "custom_graphs")
    with caplog.at_level(logging.INFO, logger="lossreport"):
        saved = generator.generate_loss_graphs(
            HISTORY,
            model_name="tiny-stories-1L-21M",
            hook_name="blocks.0.hook_mlp_out",
            timestamp="20241201_143022",
        )
    assert [Path(path).name for path in saved] == [
        "loss_curves_mse_loss_tiny-stories-1L-21M_blocks.0.hook_mlp_out_20241201_143022.png",
        "loss_curves_l1_loss_tiny-stories-1L-21M_blocks.0.hook_mlp_out_20241201_143022.png",
        "loss_curves_overall_loss_tiny-stories-1L-21M_blocks.0.hook_mlp_out_20241201_143022.png",
        "loss_curves_combined_tiny-stories-1L-21M_blocks.0.hook_mlp_out_20241201_143022.png",
    ]
    assert all(png_size_and_dpi(Path(path))[2] == pytest.approx(300, abs=0.1) for path in saved)
    assert "Generated 4 loss graph files:" in caplog.text


def test_summary_stats_are_shaped_as_the_feature_document_reads_them(tmp_path: Path) -> None:
    stats = LossGraphGenerator(tmp_path).generate_summary_stats(
        HISTORY, model_name="m", hook_name="h"
    )
    assert stats["losses"]["mse_loss"]["final"] == 1.0 / 50
    assert f"{stats['losses']['l1_loss']['percent_change']:.2f}%" == "98.00%"


def test_the_history_from_a_run_feeds_the_generator(tmp_path: Path) -> None:
    with lossreport.start_run(tmp_path / "runs", model="m", hook="h") as run:
        for step in range(30):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.1)
    generator = LossGraphGenerator(tmp_path / "graphs")
    saved = generator.generate_loss_graphs(run.get_loss_history(), model_name="m", hook_name="h")
    assert len(saved) == 3
    csv_path = Path(
        generator.save_loss_history_csv(
            run.get_loss_history(), model_name="m", hook_name="h", timestamp="20240101_000000"
        )
    )
    assert csv_path.name == "loss_history_m_h_20240101_000000.csv"
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "step,mse_loss,l1_loss" and len(lines) == 31
    assert lines[2] == "1,0.5,0.1"


def test_an_output_dir_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(lossreport.RunDirectoryError, match="file/graphs"):
        LossGraphGenerator(blocker / "graphs")


def test_every_loss_gets_its_own_chart_in_a_render_and_the_combined_chart_stays(
    runs_dir: Path,
) -> None:
    """`combined` is the combined chart's name; `a/b` and `a_b` clean alike, as do two
    non-Latin names (both `unnamed`)."""
    names = ["mse_loss", "combined", "a/b", "a_b", "損失", "误差"]
    run_dir = runs_dir / "clashing"
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    runformat.write_run_file(run_dir, runformat.RunRecord("clashing", "m", "h", status="completed"))
    columns = {"step": pa.array(range(40), pa.int64())}
    for index, name in enumerate(names):
        columns[name] = pa.array([(index + 1) / (step + 1) for step in range(40)])
    runformat.write_shard(run_dir, 1, pa.table(columns))
    result = render_run(run_dir)
    stamp = runformat.parse_time(runformat.read_run_file(run_dir).started_at).strftime(
        "%Y%m%d_%H%M%S"
    )
    files = {path.name for path in result.charts}
    assert len(files) == len(names) + 1 == len(result.charts)
    assert {f"loss_curves_{clean}_m_h_{stamp}.png" for clean in ("mse_loss", "a_b")} <= files
    assert all(path.is_file() for path in result.charts)
    assert len({path.read_bytes() for path in result.charts}) == len(names) + 1
    combined = run_dir / "loss_graphs" / f"loss_curves_combined_m_h_{stamp}.png"
    per_loss = [path for path in result.charts if path != combined]
    assert png_size_and_dpi(combined)[:2] != png_size_and_dpi(per_loss[0])[:2]  # two panels
    captions = dict(
        re.findall(
            r"<figcaption>(.*?) · 300 DPI PNG: <a [^>]*>([^<]*)</a>",
            html.unescape(result.report.read_text()),
        )
    )
    assert captions["All losses — m · h"] == combined.name
    assert captions["combined — m · h"] != combined.name
    assert len(set(captions.values())) == len(names) + 1


def test_chart_file_names_are_stable_and_differ_only_where_names_clash() -> None:
    parts = loss_parts(["mse_loss", "combined", "a/b", "a_b", "Aux", "aux", "損失"])
    assert parts["mse_loss"] == "mse_loss" and parts["a_b"] == "a_b"
    assert re.fullmatch(r"combined-[0-9a-f]{8}", parts["combined"])
    assert re.fullmatch(r"a_b-[0-9a-f]{8}", parts["a/b"])
    assert re.fullmatch(r"unnamed-[0-9a-f]{8}", parts["損失"])
    assert parts["Aux"] != parts["aux"] and parts["Aux"].lower() != parts["aux"].lower()
    assert loss_parts(["a/b"]) == {"a/b": parts["a/b"]}  # whatever other losses the run has
    assert len(set(parts.values())) == len(parts)


def test_names_too_long_for_a_file_name_are_shortened_and_stay_distinct(tmp_path: Path) -> None:
    long = "z" * 300
    history = {"steps": [0, 1], f"{long}1": [1.0, 0.5], f"{long}2": [2.0, 1.0]}
    saved = LossGraphGenerator(tmp_path).generate_loss_graphs(
        history, model_name="m" * 300, hook_name="h" * 300, timestamp="20241201_143022"
    )
    names = [Path(path).name for path in saved]
    assert len(set(names)) == 3 and all(len(name) <= MAX_FILE_NAME for name in names)
    assert all(Path(path).is_file() for path in saved)
    assert names[2].startswith("loss_curves_combined_mmmm")


def test_the_default_timestamp_is_utc_like_a_renders_whatever_the_local_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving: never UTC
    time.tzset()
    try:
        before = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        path = LossGraphGenerator(tmp_path).save_loss_history_csv(HISTORY, "m", "h")
        after = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = Path(path).stem.removeprefix("loss_history_m_h_")
    assert before <= stamp <= after


TRAINER_HISTORY = {  # as the original trainer leaves it for a TopK, Standard or JumpReLU SAE
    "steps": list(range(100)),
    "mse_loss": [1.0 / (step + 1) for step in range(100)],
    "l1_loss": [],
    "auxiliary_reconstruction_loss": [],
    "overall_loss": [1.0 / (step + 1) + 0.01 for step in range(100)],
}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_original_trainers_empty_losses_are_skipped_with_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generator = LossGraphGenerator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        saved = generator.generate_loss_graphs(TRAINER_HISTORY, "m", "h", "20241201_143022")
    assert [Path(path).name for path in saved] == [
        "loss_curves_mse_loss_m_h_20241201_143022.png",
        "loss_curves_overall_loss_m_h_20241201_143022.png",
        "loss_curves_combined_m_h_20241201_143022.png",
    ]
    assert all(Path(path).is_file() for path in saved)
    assert _warnings(caplog) == [
        "loss_history['l1_loss'] has no values: skipped",
        "loss_history['auxiliary_reconstruction_loss'] has no values: skipped",
    ]


def test_the_original_trainers_history_gives_stats_and_csv_of_its_real_losses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generator = LossGraphGenerator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        stats = generator.generate_summary_stats(TRAINER_HISTORY)
        csv_path = Path(generator.save_loss_history_csv(TRAINER_HISTORY))
    assert list(stats["losses"]) == ["mse_loss", "overall_loss"]
    assert stats["total_steps"] == 100 and stats["losses"]["mse_loss"]["final"] == 0.01
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "step,mse_loss,overall_loss" and len(lines) == 101
    assert len(_warnings(caplog)) == 4  # two skipped losses, for each of the two calls


def test_a_loss_whose_length_differs_from_the_steps_is_skipped_naming_both_lengths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = {"steps": [0, 1, 2], "mse_loss": [3.0, 2.0, 1.0], "l1_loss": [0.1, 0.2]}
    generator = LossGraphGenerator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        saved = generator.generate_loss_graphs(history, timestamp="20241201_143022")
        stats = generator.generate_summary_stats(history)
    assert [Path(path).name for path in saved] == [
        "loss_curves_mse_loss_unknown_unknown_20241201_143022.png",
        "loss_curves_combined_unknown_unknown_20241201_143022.png",
    ]
    assert list(stats["losses"]) == ["mse_loss"]
    assert _warnings(caplog) == ["loss_history['l1_loss'] has 2 values for 3 steps: skipped"] * 2


@pytest.mark.parametrize("history", [{}, {"mse_loss": [1.0, 0.5]}])
def test_a_history_without_steps_gives_no_graphs_empty_stats_and_a_header_only_csv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, history: dict[str, list[float]]
) -> None:
    generator = LossGraphGenerator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        saved = generator.generate_loss_graphs(history, "m", "h")
        stats = generator.generate_summary_stats(history, "m", "h")
        csv_path = Path(generator.save_loss_history_csv(history, "m", "h"))
    assert saved == [] and list(tmp_path.glob("*.png")) == []
    assert stats == {"model_name": "m", "hook_name": "h", "total_steps": 0, "losses": {}}
    assert csv_path.read_text() == "step\n"
    no_steps = "loss_history has no 'steps' (or 'step') entry: no losses to report"
    assert _warnings(caplog) == [
        no_steps,
        "loss_history has no loss values to draw: no graph files saved",
        no_steps,
        no_steps,
    ]


def test_steps_with_every_loss_skipped_give_no_graphs_and_no_loss_stats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = {"steps": [0, 1], "l1_loss": []}
    generator = LossGraphGenerator(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lossreport"):
        assert generator.generate_loss_graphs(history) == []
    assert _warnings(caplog) == [
        "loss_history['l1_loss'] has no values: skipped",
        "loss_history has no loss values to draw: no graph files saved",
    ]
    stats = generator.generate_summary_stats(history)
    assert stats["total_steps"] == 2 and stats["losses"] == {}


def test_values_that_are_not_numbers_are_still_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(lossreport.InvalidInputError, match=r"'l1_loss'.*numbers"):
        LossGraphGenerator(tmp_path).generate_summary_stats({"steps": [0], "l1_loss": ["x"]})


def test_statistics_without_a_finite_value_are_nan_floats_the_document_can_format(
    tmp_path: Path,
) -> None:
    history = {"steps": [0, 1, 2], "mse_loss": [3.0, 2.0, 1.0], "l1_loss": [math.nan] * 3}
    stats = LossGraphGenerator(tmp_path).generate_summary_stats(history)
    l1 = stats["losses"]["l1_loss"]
    value_stats = ("mean", "std", "min", "max", "final", "initial", "change", "percent_change")
    assert all(isinstance(l1[key], float) and math.isnan(l1[key]) for key in value_stats)
    assert f"{l1['percent_change']:.2f}%" == "nan%" and f"{l1['final']}" == "nan"
    assert l1["first_step"] is None and l1["count"] == 0
    assert stats["losses"]["mse_loss"]["first_step"] == 0


def test_defaults_are_unknown_and_the_output_dir_is_made_at_once(tmp_path: Path) -> None:
    output_dir = tmp_path / "a" / "b"
    generator = LossGraphGenerator(output_dir)
    assert output_dir.is_dir()
    stats = generator.generate_summary_stats(HISTORY)
    assert (stats["model_name"], stats["hook_name"]) == ("unknown", "unknown")
    csv_name = Path(generator.save_loss_history_csv(HISTORY, timestamp="20240101_000000")).name
    assert csv_name == "loss_history_unknown_unknown_20240101_000000.csv"


def test_an_output_dir_deleted_after_construction_is_made_again(tmp_path: Path) -> None:
    generator = LossGraphGenerator(tmp_path / "graphs")
    (tmp_path / "graphs").rmdir()
    assert Path(generator.save_loss_history_csv(HISTORY)).is_file()
