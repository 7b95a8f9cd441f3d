"""The `lossreport` command as a user runs it: a real subprocess."""

from __future__ import annotations

from pathlib import Path

import lossreport
from tests.support.procs import run_cli


def _run(runs_dir: Path, run_id: str, steps: int = 30) -> Path:
    with lossreport.start_run(
        runs_dir, model="tiny-stories-1L-21M", hook="blocks.0.hook_mlp_out", run_id=run_id
    ) as run:
        for step in range(steps):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.05)
    return run.path


def test_render_one_run_prints_the_feature_documents_console_output(runs_dir: Path) -> None:
    run_dir = _run(runs_dir, "one")
    result = run_cli("render", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Generated 3 loss graph files:"
    assert all(line.startswith(f"  - {run_dir}/loss_graphs/loss_curves_") for line in lines[1:4])
    assert lines[4].startswith(f"Saved loss history CSV to: {run_dir}/loss_graphs/loss_history_")
    summary = result.stdout[result.stdout.index("Loss Training Summary:") :].splitlines()
    assert summary[:6] == [
        "Loss Training Summary:",
        "  Model: tiny-stories-1L-21M",
        "  Hook: blocks.0.hook_mlp_out",
        "  Total Steps: 30",
        "  mse_loss:",
        "    Final: 0.033333",
    ]


def test_render_a_runs_directory_prints_plain_progress_lines_when_piped(runs_dir: Path) -> None:
    for run_id in ("a", "b", "c"):
        _run(runs_dir, run_id, steps=5)
    (runs_dir / "not-a-run").mkdir()
    result = run_cli("render", str(runs_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "\r" not in result.stdout
    assert lines[-1] == "Rendered 3 of 3 runs."
    assert all((runs_dir / run_id / "loss_graphs").is_dir() for run_id in ("a", "b", "c"))


def test_a_path_with_no_runs_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("render", str(tmp_path))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"lossreport: LossReportError: {tmp_path}: no runs here "
        "(a run has run.json or losses/)"
    )


def test_show_prints_a_runs_status(runs_dir: Path) -> None:
    result = run_cli("show", str(_run(runs_dir, "shown")))
    assert result.returncode == 0
    assert "run:    shown (completed)" in result.stdout
    assert "rows:   30   losses: mse_loss, l1_loss" in result.stdout


def test_the_demo_trains_three_saes_and_the_daemon_renders_their_reports(
    runs_dir: Path,
) -> None:
    result = run_cli("demo", str(runs_dir), "--steps", "300")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Reports rendered by the daemon:"
    reports = [Path(line.removeprefix("  - ")) for line in lines[1:4]]
    assert {path.parent.parent.name.split("_")[1].split("-")[0] for path in reports} == {
        "sae.standard",
        "sae.gated",
        "sae.topk",
    }
    assert all(path.is_file() for path in reports)
    assert lines[4] == f"Index of all runs: {runs_dir / 'index.html'}"
    assert (runs_dir / "index.html").is_file()
