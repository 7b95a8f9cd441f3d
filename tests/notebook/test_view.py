"""`lossreport.open`: a view of a run of every source, its history value for value, its
charts as Altair charts zoomable on steps, its notebook HTML (summary, specs, the inlined
library) with the run's own strings escaped; bad paths named."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import altair as alt
import pytest
from markupsafe import Markup

import lossreport
from lossreport.errors import InvalidInputError
from lossreport.notebook import embed
from lossreport.notebook.opening import live_run_html
from lossreport.sources import WHAT_IS_A_RUN
from tests.support import dvclive_trainer
from tests.support.foreign import Logged, lightning_run, mlflow_run, tensorboard_run
from tests.support.trainer_state import write_trainer_output


def _native(runs: Path) -> tuple[Path, Logged]:
    logged: Logged = {"mse_loss": {}, "l1_loss": {}}
    with lossreport.start_run(runs, model="gelu-1l", hook="blocks.0.hook_mlp_out") as run:
        for step in range(40):
            values = {"mse_loss": 1.0 / (step + 1), "l1_loss": 0.2 + 1.0 / (step + 2)}
            run.log(step, **values)
            for name, value in values.items():
                logged[name][step] = value
    return Path(run.path), logged


def _dvclive(runs: Path) -> tuple[Path, Logged]:
    run_dir = runs / "exp-1" / "dvclive"
    return run_dir, dvclive_trainer.write(run_dir, 9)


def _lightning(runs: Path) -> tuple[Path, Logged]:
    logged = lightning_run(runs, range(10))
    return runs / "lightning_logs" / "version_0", logged


def _mlflow(runs: Path) -> tuple[Path, Logged]:
    logged = mlflow_run(runs / "mlruns", range(8))
    (run_dir,) = [path for path in (runs / "mlruns").glob("*/*") if (path / "metrics").is_dir()]
    return run_dir, logged


def _tensorboard(runs: Path) -> tuple[Path, Logged]:
    run_dir = runs / "tb" / "run-1"
    return run_dir, tensorboard_run(run_dir, range(12))


def _hf_trainer(runs: Path) -> tuple[Path, Logged]:
    run_dir = write_trainer_output(runs / "gpt2-tiny", 30)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    logged: Logged = {}
    for entry in state["log_history"]:
        for key in ("loss", "grad_norm", "learning_rate"):
            logged.setdefault(key, {})[entry["step"]] = entry[key]
    return run_dir, logged


WRITERS: dict[str, Callable[[Path], tuple[Path, Logged]]] = {
    "lossreport": _native,
    "dvclive": _dvclive,
    "lightning": _lightning,
    "mlflow": _mlflow,
    "tensorboard": _tensorboard,
    "hf-trainer": _hf_trainer,
}


def _history_values(view: lossreport.notebook.view.RunView) -> Logged:
    frame = view.history
    return {
        str(name): {
            int(step): float(value)
            for step, value in zip(frame["step"], frame[name], strict=True)
            if not (isinstance(value, float) and math.isnan(value))
        }
        for name in frame.columns
        if name != "step"
    }


@pytest.mark.parametrize("source", list(WRITERS))
def test_open_shows_a_run_of_every_source_with_every_logged_value(
    source: str, runs_dir: Path
) -> None:
    run_dir, logged = WRITERS[source](runs_dir)
    view = lossreport.open(run_dir)
    found = _history_values(view)
    finite = {
        name: {step: value for step, value in by_step.items() if not math.isnan(value)}
        for name, by_step in logged.items()
    }
    assert sorted(found) == sorted(finite)
    for name, by_step in finite.items():  # float32 where the tool stores that
        assert found[name] == pytest.approx(by_step, rel=1e-6), name
    assert view.losses and set(view.losses) <= set(logged)
    assert view.summary["total_steps"] == len(view.history)
    chart = view.chart(view.losses[0])
    assert isinstance(chart, alt.LayerChart)
    spec = chart.to_dict(validate=False)
    (zoom,) = spec["params"]
    assert zoom["bind"] == "scales" and zoom["views"] == ["raw"]  # zoom and pan on steps
    bundle = view._repr_mimebundle_()
    assert view.record.run_id in bundle["text/plain"]
    assert 'class="lossreport-run"' in bundle["text/html"]


def test_the_html_holds_the_summary_the_specs_and_the_library_once(runs_dir: Path) -> None:
    run_dir, logged = _dvclive(runs_dir)
    html = lossreport.open(run_dir)._repr_html_()
    # the summary: each loss's final value as the report writes it
    final = logged["l1_loss"][max(logged["l1_loss"])]
    assert "<td>train/mse_loss</td>" in html and f"<td>{final:.6g}</td>" in html
    specs_text = re.search(r"var specs = (\[.*?\]);\n", html, re.S)
    assert specs_text is not None
    specs = json.loads(specs_text.group(1))
    assert len(specs) == 1 + len(logged)  # all losses together, then each
    drawn = {value["value"] for value in specs[2]["datasets"]["curves"]}
    assert set(logged["l1_loss"].values()) <= drawn
    assert html.count(embed.packed_library()) == 1
    assert 400_000 < len(html) < 600_000  # the library is most of it, gzipped
    assert not re.search(r"""<script[^>]*\bsrc=""", html)  # nothing fetched: no CDN


def test_the_runs_own_strings_are_escaped(tmp_path: Path) -> None:
    """A model name and a metric's name (a file name) as the run's writer chose them."""
    hostile = "<img src=x onerror=alert(1)>"
    run_dir = tmp_path / "exp" / "dvclive"
    (run_dir / "plots" / "metrics").mkdir(parents=True)
    (run_dir / "params.yaml").write_text(f"model_name: '{hostile}</table>'\n")
    (run_dir / "plots" / "metrics" / f"{hostile}.tsv").write_text(f"step\t{hostile}\n0\t1.0\n")
    html = lossreport.open(run_dir)._repr_html_()
    assert "<img" not in html and "</table>'" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "\\u003cimg src=x" in html  # in the specs: JSON with no `<` to end the script


def test_open_names_a_path_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"missing-run: no such directory"):
        lossreport.open(tmp_path / "missing-run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match=r"file: not a directory"):
        lossreport.open(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"empty: not a run directory \(a run is"):
        lossreport.open(tmp_path / "empty")


def test_a_loss_the_run_has_not_is_named_with_those_it_has(runs_dir: Path) -> None:
    run_dir, _ = _native(runs_dir)
    with pytest.raises(KeyError, match=r"no loss 'nope'; its losses: mse_loss, l1_loss"):
        lossreport.open(run_dir).chart("nope")


def test_open_is_no_name_a_star_import_brings() -> None:
    namespace: dict[str, object] = {}
    exec("from lossreport import *", namespace)
    assert "open" not in namespace  # the built-in open stays what it is
    assert callable(lossreport.open)


def test_a_run_with_nothing_logged_yet_shows_its_names_and_no_charts(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="gelu-1l", hook="hook_z") as run:
        view = lossreport.open(run.path)
        html = view._repr_html_()
    assert view.losses == [] and view.history.empty
    assert "No losses logged yet." in html and "<script" not in html
    assert live_run_html(run).count('class="lossreport-run"') == 1  # closed: shown all the same


def test_a_live_run_whose_folder_is_gone_says_so(runs_dir: Path) -> None:
    run = lossreport.start_run(runs_dir, model="gelu-1l", hook="hook_z")
    run.log(0, mse_loss=1.0)
    run.close()
    (Path(run.path) / "run.json").unlink()
    shutil.rmtree(Path(run.path) / "losses")
    said = Markup("<p>{}</p>").format(f"{run.path}: not a run directory ({WHAT_IS_A_RUN})")
    assert live_run_html(run) == str(said)  # escaped: WHAT_IS_A_RUN holds ' and &
