"""What a new user meets in the first hour: one error for a folder that is no run, errors as
sentences, `--output` made when missing, an install line instead of an empty report, and help
for every flag."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import lossreport
from lossreport import runformat, sources
from lossreport.alerts import rules
from lossreport.cli import config
from lossreport.cli.main import _parser
from tests.support.foreign import tensorboard_run
from tests.support.procs import ROOT, run_cli

TO = "ml-team@example.com"
DOCS = ROOT / "docs" / "configuration.md"


def _run(runs_dir: Path, run_id: str) -> Path:
    with lossreport.start_run(
        runs_dir, model="tiny-stories-1L-21M", hook="blocks.0.hook_mlp_out", run_id=run_id
    ) as run:
        for step in range(20):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.05)
    return run.path


def test_every_command_refuses_a_folder_that_is_no_run_with_one_error(tmp_path: Path) -> None:
    folder = tmp_path / "notes über runs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a run\n")
    error = f"lossreport: {folder}: not a run directory ({sources.WHAT_IS_A_RUN})"
    mail = ["--to", TO, "--smtp-host", "127.0.0.1", "--smtp-port", "9"]
    for command in (["show"], ["render"], ["email", *mail]):
        result = run_cli(command[0], str(folder), *command[1:])
        assert (result.returncode, result.stderr.strip()) == (1, error), command
    assert os.listdir(folder) == ["notes.txt"]  # no report, no lock


def test_errors_are_sentences_without_class_names(tmp_path: Path) -> None:
    a_file = tmp_path / "run.json"
    a_file.write_text("{}\n")
    missing = tmp_path / "no-such-run"
    expected = {
        ("show", str(a_file)): f"lossreport: {a_file}: not a directory",
        ("render", str(missing)): f"lossreport: {missing}: no such directory",
        ("serve", str(a_file)): f"lossreport: {a_file}: not a directory",
        ("watch", str(missing), "--once"): f"lossreport: {missing}: no such directory",
    }
    for argv, line in expected.items():
        result = run_cli(*argv)
        assert (result.returncode, result.stderr.strip()) == (1, line), argv


def test_output_is_made_when_missing_and_never_through_a_link(
    runs_dir: Path, tmp_path: Path
) -> None:
    run_dir = _run(runs_dir, "sae-1")
    output = tmp_path / "reports" / "2026" / "sae"
    result = run_cli("render", str(run_dir), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert f"created {output} for the reports (--output)" in result.stderr
    assert len(list((output / runformat.GRAPHS_DIR).glob("*.html"))) == 1
    # A dangling link named as DIR is refused: nothing is made where it points.
    elsewhere = tmp_path / "dummy"
    elsewhere.mkdir()
    link = tmp_path / "reports-link"
    link.symlink_to(elsewhere / "made-through-the-link")
    refused = run_cli("render", str(run_dir), "--output", str(link))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"lossreport: {link}: not a directory (--output)"
    assert os.listdir(elsewhere) == []


def test_a_tensorboard_run_without_the_extra_is_an_error_with_the_install_line(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "tb"
    tensorboard_run(run_dir, range(5))
    before = sorted(os.listdir(run_dir))
    shim = tmp_path / "shim" / "tensorboard"  # as if the extra were not installed
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = {"PYTHONPATH": f"{shim.parent}{os.pathsep}{ROOT}"}
    result = run_cli("render", str(run_dir), env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"lossreport: {run_dir}: reading TensorBoard logs needs the tensorboard extra: "
        "pip install 'lossreport[tensorboard]'"
    )
    assert sorted(os.listdir(run_dir)) == before  # no empty report, no lock, no cache


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser({})
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_every_argument_of_every_command_has_help() -> None:
    for name, command in _subcommands().items():
        for action in command._actions:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest}"


def test_help_says_what_each_flag_does_for_its_command() -> None:
    helps = {name: command.format_help() for name, command in _subcommands().items()}
    assert re.search(r"0 picks a free port\s+\(default 8000\)", helps["serve"])
    email = " ".join(helps["email"].split())
    assert "mail the run's summary to ADDR" in email and "each finished run" not in email
    for name in ("watch", "serve", "email"):
        text = " ".join(helps[name].split())
        assert "docs/configuration.md" in text and "lossreport.cli.config" not in text, name


def test_the_configuration_page_lists_every_key() -> None:
    page = DOCS.read_text()
    sections = dict(re.findall(r"^## `\[(\w+)\]`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    assert sorted(sections) == sorted(config.KEYS)
    for section, keys in config.KEYS.items():
        for key in keys:
            assert f"| `{key}` |" in sections[section], (section, key)
    for key in rules._ALERT_KEYS:
        assert f"| `{key}` |" in sections["alerts"], key
    for key in (*rules._DIVERGENCE_KEYS, *rules._RULE_KEYS):
        assert f"`{key}`" in sections["alerts"], key


def test_show_leaves_out_an_architecture_the_run_does_not_name(runs_dir: Path) -> None:
    result = run_cli("show", str(_run(runs_dir, "no-architecture")))
    assert result.returncode == 0, result.stderr
    assert "None" not in result.stdout
    assert "model:  tiny-stories-1L-21M   hook: blocks.0.hook_mlp_out\n" in result.stdout


def test_show_prints_an_architecture_the_run_names(runs_dir: Path) -> None:
    with lossreport.start_run(
        runs_dir, model="m", hook="h", architecture="gated", run_id="named"
    ) as run:
        run.log(0, mse_loss=1.0)
    assert "model:  m   hook: h   architecture: gated\n" in run_cli("show", str(run.path)).stdout
