"""The feature document's Python API: LossGraphGenerator."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import lossreport
from lossreport import LossGraphGenerator
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
        LossGraphGenerator(blocker / "graphs").generate_loss_graphs(HISTORY)
