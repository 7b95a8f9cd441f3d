"""What one render shows, draws and writes is bounded, however long a run's names are and
however many series it logs: names are shortened where they are shown (report/shown.py) and
kept whole in the data files; at most --max-charts losses are drawn, the rest named; learning
rates and the like are not charted as losses; the CSV cannot run as a spreadsheet's formula."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser

import lossreport
from lossreport import runformat
from lossreport.cli import config
from lossreport.delivery.message import build_message, subject
from lossreport.errors import ConfigError
from lossreport.report.render import render_run
from lossreport.report.shown import MAX_FULL_CHARS, MAX_SHOWN_CHARS, shortened
from lossreport.sources.series import MAX_CHARTS, SeriesFilter, is_loss_name
from tests.support.browser import watched_page
from tests.support.daemon import run_once
from tests.support.png import png_size_and_dpi
from tests.support.procs import run_cli

# A chart is 560 px wide plus its axis and legend: at 300 DPI under 4,500 px. A title drawn
# whole made a 1,000-character model name's chart 37,000 px wide.
MAX_PNG_WIDTH = 4_500
MODEL = "EleutherAI/pythia-70m-deduped/" + "step143000-" * 88  # 998 characters
HOOK = "blocks.5.hook_resid_post." * 40
# Another writer's series name (the trainer's own are short identifiers): a TensorBoard tag.
LONG_LOSS = "train/" + "per_feature_reconstruction_" * 37


def _run_with_foreign_shard(
    runs_dir: Path, run_id: str, columns: dict[str, np.ndarray], **start: object
) -> Path:
    """A run started by the trainer, with one shard another writer added (any names)."""
    with lossreport.start_run(runs_dir, run_id=run_id, **start) as run:  # type: ignore[arg-type]
        for step in range(100):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.3 - step / 1000)
    steps = np.arange(100, 200)
    table = pa.table(
        {"step": steps, "wall_time": 1.7e9 + steps.astype(float), **columns},
    )
    pq.write_table(table, run.path / runformat.LOSSES_DIR / runformat.shard_name(99))
    return run.path


def _long_names_run(runs_dir: Path) -> Path:
    values = np.linspace(0.5, 0.1, 100)
    values[10] = np.nan  # so the mail subject names the loss
    return _run_with_foreign_shard(
        runs_dir, "long-names", {LONG_LOSS: values}, model=MODEL, hook=HOOK
    )


def test_long_names_are_shortened_where_shown_and_kept_whole_in_the_data(runs_dir: Path) -> None:
    run_dir = _long_names_run(runs_dir)

    result = render_run(run_dir)

    for chart in result.charts:
        width, _, _ = png_size_and_dpi(chart)
        assert width <= MAX_PNG_WIDTH, (chart.name, width)
        assert len(chart.name) <= 255
    page = result.report.read_text()
    (title,) = re.findall(r"<title>(.*?)</title>", page)
    assert len(html.unescape(title)) <= 3 * MAX_SHOWN_CHARS
    assert shortened(MODEL) in html.unescape(title)
    # the whole name is a tooltip away, and the Run table's cell holds it
    assert f'title="{html.escape(MODEL)}"' in page
    for caption in re.findall(r"<figcaption>(.*?) · 300 DPI", page):
        assert len(html.unescape(caption)) <= 3 * MAX_SHOWN_CHARS + 10
    mail_subject = subject(result)
    assert len(mail_subject) <= 5 * MAX_SHOWN_CHARS
    assert shortened(LONG_LOSS) in mail_subject  # NaN/inf in ...
    # the data keep every name whole
    summary = json.loads(result.summary.read_text())
    assert (summary["model_name"], summary["hook_name"]) == (MODEL, HOOK)
    assert LONG_LOSS in summary["losses"]
    with result.csv.open(newline="") as handle:
        assert LONG_LOSS in next(csv.reader(handle))
    assert runformat.read_run_file(run_dir).model == MODEL


def test_a_mail_shows_a_100_000_character_name_within_the_page_budget(runs_dir: Path) -> None:
    model = "gpt2-small/" + "é" * 100_000
    result = render_run(_run_with_foreign_shard(runs_dir, "huge-model", {}, model=model, hook=""))

    message = build_message(
        result, recipients=["a@example.com"], sender="b@example.com", run_name="r"
    )

    plain = message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    assert shortened(model, MAX_FULL_CHARS) in text and len(text) < 20 * MAX_FULL_CHARS
    assert "·" not in str(message["Subject"]).split(":", 1)[1]  # no hook: no dangling separator


def test_a_report_with_long_names_reads_in_a_browser(runs_dir: Path, browser: Browser) -> None:
    run_dir = _long_names_run(runs_dir)
    result = render_run(run_dir)

    watched = watched_page(browser, viewport={"width": 1100, "height": 900})
    watched.page.goto(result.report.as_uri())

    heading = watched.page.locator("h1").bounding_box()
    assert heading is not None and heading["height"] < 200  # five lines; whole, they took 30
    overflow = watched.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    assert watched.page.locator("h1 span[title]").first.get_attribute("title") == MODEL
    assert watched.errors == []


def _per_feature_run(runs_dir: Path, features: int = 20) -> Path:
    """An SAE run that logs a value per feature beside its losses (features logged first)."""
    with lossreport.start_run(runs_dir, model="gelu-1l", hook="blocks.0.hook_mlp_out") as run:
        for step in range(50):
            values = {
                f"feature_{index}_act": 0.01 * index + 1 / (step + 1) for index in range(features)
            }
            values |= {
                "overall_loss": 2 / (step + 1),
                "auxiliary_reconstruction_loss": 0.1 / (step + 1),
                "l1_loss": 0.5,
                "mse_loss": 1 / (step + 1),
            }
            run.log(step, **values)
    return run.path


def test_at_most_max_charts_losses_are_drawn_those_that_matter_first(runs_dir: Path) -> None:
    run_dir = _per_feature_run(runs_dir)

    result = render_run(run_dir, series=SeriesFilter(max_charts=6))

    drawn = ["overall_loss", "mse_loss", "l1_loss", "auxiliary_reconstruction_loss"]
    drawn += ["feature_0_act", "feature_1_act"]
    assert sorted(result.stats["losses"]) == sorted(drawn)
    assert len(result.charts) == 6 + 1  # and the combined chart
    not_drawn = [f"feature_{index}_act" for index in range(2, 20)]
    summary = json.loads(result.summary.read_text())
    assert summary["not_drawn"] == {"losses": not_drawn, "other_series": []}
    page = html.unescape(result.report.read_text())
    assert "18 more losses, not drawn" in page
    assert ", ".join(not_drawn) in page
    with result.csv.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert len(header) == 1 + 24  # every series is in the CSV


def test_by_default_twelve_losses_are_drawn_and_the_rest_in_name_order() -> None:
    names = [f"feature_{index}" for index in range(300)] + ["aux_loss", "loss"]

    drawn = SeriesFilter().drawn(names)

    assert MAX_CHARTS == 12
    # the losses first, then features by number (feature_2 before feature_10), in run order
    assert drawn.losses == [*(f"feature_{index}" for index in range(10)), "aux_loss", "loss"]
    assert drawn.not_drawn == [f"feature_{index}" for index in range(10, 300)]


def test_max_charts_is_a_flag_of_render(runs_dir: Path) -> None:
    run_dir = _per_feature_run(runs_dir, features=3)

    drawn = run_cli("render", "--max-charts", "1", str(run_dir))
    refused = run_cli("render", "--max-charts", "0", str(run_dir))

    assert drawn.returncode == 0, drawn.stderr
    assert len(list((run_dir / "loss_graphs").glob("loss_curves_*.png"))) == 1 + 1
    assert refused.returncode == 2 and "--max-charts" in refused.stderr


def test_the_daemon_draws_at_most_max_charts_losses_from_its_config(
    runs_dir: Path, tmp_path: Path
) -> None:
    run_dir = _per_feature_run(runs_dir, features=3)
    settings = tmp_path / "lossreport.toml"
    settings.write_text("[watch]\nmax_charts = 2\n")

    result = run_once(runs_dir, "--config", str(settings))

    assert result.returncode == 0, result.stderr
    assert len(list((run_dir / "loss_graphs").glob("loss_curves_*.png"))) == 2 + 1
    settings.write_text("[watch]\nmax_charts = 0\n")
    with pytest.raises(ConfigError, match=r"max_charts = 0: expected an integer from 1"):
        config.load(settings)


def test_learning_rates_and_the_like_are_in_the_csv_not_in_the_loss_charts(
    runs_dir: Path,
) -> None:
    others = ["learning_rate", "grad_norm", "train_samples_per_second"]
    with lossreport.start_run(runs_dir, model="gelu-1l", hook="blocks.0.hook_mlp_out") as run:
        for step in range(50):
            run.log(
                step,
                mse_loss=1 / (step + 1),
                epoch_loss=2 / (step + 1),  # a loss, though it says epoch
                learning_rate=3e-4 * min(1, step / 10),  # warm-up: "diverged" as a loss
                grad_norm=5.0,
                train_samples_per_second=812.5,
            )

    result = render_run(run.path)

    assert list(result.stats["losses"]) == ["mse_loss", "epoch_loss"]
    assert result.anomalies == []
    assert len(result.charts) == 2 + 1
    summary = json.loads(result.summary.read_text())
    assert summary["not_drawn"]["other_series"] == others
    page = result.report.read_text()
    assert "Other series, not drawn" in page and "learning_rate, grad_norm" in page
    with result.csv.open(newline="") as handle:
        assert next(csv.reader(handle))[1:] == ["mse_loss", "epoch_loss", *others]
    # --series says what the losses are: every series it matches is drawn
    everything = render_run(run.path, series=SeriesFilter(include=("*",)))
    assert list(everything.stats["losses"]) == ["mse_loss", "epoch_loss", *others]


@pytest.mark.parametrize(
    ("name", "loss"),
    [
        ("loss", True),  # Hugging Face Trainer
        ("eval_loss", True),
        ("learning_rate", False),
        ("grad_norm", False),
        ("train_runtime", False),
        ("train_samples_per_second", False),
        ("train_steps_per_second", False),
        ("total_flos", False),
        ("lr-Adam", False),  # Lightning's LearningRateMonitor
        ("lr-AdamW/pg1", False),
        ("train/lr", False),  # TensorBoard tags
        ("optimizer/momentum", False),
        ("epoch", False),
        ("epoch_loss", True),  # Keras
        ("epoch_accuracy", True),  # a metric, drawn as before
        ("train/l0", True),  # SAE sparsity
        ("explained_variance", True),
        ("num_input_tokens_seen", False),
        ("_runtime", False),  # W&B
        ("system/gpu.0.temp", False),  # W&B's system metrics, if logged as history
        ("system/loss", True),
        ("details/current_learning_rate", False),  # SAELens
    ],
)
def test_what_is_not_a_loss_is_told_by_its_name(name: str, loss: bool) -> None:
    assert is_loss_name(name) is loss


def test_the_csv_cannot_run_as_a_spreadsheet_formula_and_numbers_stay_numbers(
    runs_dir: Path,
) -> None:
    hostile = ['=HYPERLINK("http://example.com/x","y")', "+cmd", "-2+3", "@SUM(1,2)", "\tpad"]
    values = -np.linspace(0.5, 0.1, 100)  # negative numbers, which start with "-" too
    run_dir = _run_with_foreign_shard(
        runs_dir, "formulas", {name: values for name in hostile}, model="m", hook="h"
    )

    result = render_run(run_dir)

    with result.csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header == ["step", "mse_loss", "l1_loss", *(f"'{name}" for name in hostile)]
    assert rows[-1] == ["199", "", "", *["-0.1"] * len(hostile)]  # numbers, not quoted


def test_a_page_tooltip_holds_at_most_the_full_budget() -> None:
    from lossreport.report.pages import shown

    text = "x" * (3 * MAX_FULL_CHARS)
    markup = str(shown(text))
    (tooltip,) = re.findall(r'title="([^"]*)"', markup)
    assert len(tooltip) == MAX_FULL_CHARS
    assert len(re.sub(r"<[^>]+>", "", markup)) == MAX_SHOWN_CHARS


def test_served_pages_show_long_names_within_the_budgets(runs_dir: Path) -> None:
    from tests.support.serve_thread import server_thread
    from tests.support.server import request

    keys = []
    for lr in (1e-4, 3e-4):
        with lossreport.start_run(runs_dir, model=MODEL, hook=HOOK, config={"lr": lr}) as run:
            for step in range(50):
                run.log(step, mse_loss=1.0 / (step + 1) + lr)
        render_run(run.path)
        keys.append(run.path.name)
    with server_thread(runs_dir) as port:
        status, _, index = request(port, "/")
        status_run, _, run_page = request(port, f"/.run/{keys[0]}")
    assert status == status_run == 200
    for page in (index.decode(), run_page.decode()):
        cells = re.findall(r"<td>(.*?)</td>", page) + re.findall(
            r"<option[^>]*>(.*?)</option>", page
        )
        names = [re.sub(r"<div.*?</div>|<[^>]+>", "", cell) for cell in cells]  # not the links
        shown_texts = [html.unescape(name) for name in names]
        assert [text for text in shown_texts if len(text) > MAX_SHOWN_CHARS] == []
    assert shortened(MODEL) in html.unescape(index.decode())
