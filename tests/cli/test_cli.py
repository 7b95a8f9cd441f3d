"""The `lossreport` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lossreport
from lossreport import sources
from lossreport.cli.main import main
from tests.support.links import dead_links
from tests.support.procs import PYTHONPATH, ROOT, run_cli
from tests.support.server import request, serving

TO = "ml-team@example.com"
INJECTION = "a@example.com\r\nBcc: victim@example.com"
# `lossreport ARGS` with render_run failing, as a bug would, for runs named broken*: the batch
# loop and the error reporting under test are the real ones.
BROKEN_RENDER = """
import sys
import lossreport.report.render as render
real = render.render_run
def render_run(run_dir, **kwargs):
    if run_dir.name.startswith("broken"):
        raise ValueError(f"no sense in {run_dir.name}")
    return real(run_dir, **kwargs)
render.render_run = render_run
from lossreport.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _run(runs_dir: Path, run_id: str, steps: int = 30, shard_every: int | None = None) -> Path:
    with lossreport.start_run(
        runs_dir, model="tiny-stories-1L-21M", hook="blocks.0.hook_mlp_out", run_id=run_id
    ) as run:
        for step in range(steps):
            run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.05)
            if shard_every is not None and (step + 1) % shard_every == 0:
                run.flush()
    return run.path


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The error line of arguments refused at parse time (exit 2, before anything runs)."""
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    assert caught.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def _with_broken_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BROKEN_RENDER, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )


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
    assert sorted(os.listdir(runs_dir)) == ["a", "b", "c", "not-a-run"]  # no lock left here


def test_a_path_with_no_runs_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("render", str(tmp_path))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"lossreport: {tmp_path}: not a run directory "
        f"({sources.WHAT_IS_A_RUN})"
    )


def test_show_prints_a_runs_status(runs_dir: Path) -> None:
    result = run_cli("show", str(_run(runs_dir, "shown")))
    assert result.returncode == 0
    assert "run:    shown (completed)" in result.stdout
    assert "rows:   30   losses: mse_loss, l1_loss" in result.stdout


def test_the_demo_trains_three_saes_and_the_daemon_renders_their_reports(
    runs_dir: Path, tmp_path: Path
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
    # Every link of both indexes answers, through `lossreport serve`
    static = (runs_dir / "index.html").read_text()
    with serving(runs_dir, tmp_path / "serve.log") as (_, port):
        status, _, body = request(port, "/")
        assert status == 200
        served = body.decode()
        assert dead_links(port, "/", served) == {}
        assert dead_links(port, "/", static) == {}
    for path in reports:  # the reports are among the links checked
        link = f'href="{path.parent.parent.name}/loss_graphs/{path.name}"'
        assert link in static and link in served


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--stale-after", "nan"], "argument --stale-after: 'nan' is not a finite duration"),
        (["--rescan-every", "inf"], "argument --rescan-every: 'inf' is not a finite duration"),
        (["--live-every", "1e400"], "argument --live-every: '1e400' is not a finite duration"),
        (["--idle-restart=-inf"], "argument --idle-restart: '-inf' is not a finite duration"),
        (["--poll-interval", "0"], "argument --poll-interval: '0' is too short: at least 0.1s"),
        (["--poll-interval", "0.01s"], "argument --poll-interval: '0.01s' is too short"),
        (["--email-retry", "0"], "argument --email-retry: '0' is too short: at least 0.1s"),
        (["--workers", "0"], "argument --workers: '0' is out of range: from 1 to 64"),
        (["--workers=-3"], "argument --workers: '-3' is out of range: from 1 to 64"),
        (["--workers", "100000"], "argument --workers: '100000' is out of range: from 1 to 64"),
        (["--smtp-port", "70000"], "argument --smtp-port: '70000' is out of range: from 1 to"),
        (
            ["--email-to", INJECTION],
            f"argument --email-to: expected one email address, but {INJECTION!r} has a control",
        ),
        (
            ["--email-to", TO, "--email-from", "Ops <ops@example.com>\nBcc: v@example.com"],
            "argument --email-from: expected one email address, but 'Ops <ops@example.com>\\n",
        ),
        (["--email-to", "lossreport"], "argument --email-to: expected one email address, but"),
    ],
)
def test_watch_refuses_values_that_would_spin_hang_or_inject_headers(
    runs_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    # --once, so that code which accepted the value would return instead of watching forever.
    line = _usage_error(capsys, "watch", str(runs_dir), "--once", *argv)
    assert line.startswith("lossreport watch: error: ") and error in line


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--to", INJECTION], f"argument --to: expected one email address, but {INJECTION!r}"),
        (["--to", f"{TO}, other@example.com"], "holds 2 addresses, expected one"),
        (["--to", TO, "--smtp-port", "0"], "argument --smtp-port: '0' is out of range: from 1"),
        (["--to", TO, "--smtp-port=-25"], "argument --smtp-port: '-25' is out of range"),
    ],
)
def test_email_refuses_bad_addresses_and_ports_naming_the_flag(
    runs_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    line = _usage_error(capsys, "email", str(_run(runs_dir, "mailed", steps=3)), *argv)
    assert line.startswith("lossreport email: error: ") and error in line


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_serve_refuses_a_port_out_of_range(
    runs_dir: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    line = _usage_error(capsys, "serve", str(runs_dir), f"--port={port}")
    assert (
        line
        == f"lossreport serve: error: argument --port: '{port}' is out of range: from 0 to 65535"
    )


@pytest.mark.parametrize("steps", ["-5", "0", "ten"])
def test_demo_steps_must_be_a_positive_integer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str
) -> None:
    line = _usage_error(capsys, "demo", str(tmp_path / "runs"), f"--steps={steps}")
    assert line.startswith(f"lossreport demo: error: argument --steps: {steps!r} is ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        (
            "[watch]\nworkers = 100000\n",
            "[watch] workers = 100000: expected an integer from 1 to 64",
        ),
        ("[watch]\nworkers = -3\n", "[watch] workers = -3: expected an integer from 1 to 64"),
        ("[watch]\nstale_after = nan\n", "[watch] stale_after = nan: expected a duration"),
        (
            '[email]\nto = "a@example.com\\r\\nBcc: victim@example.com"\n',
            f"[email] to = {INJECTION!r}: expected one email address each, but {INJECTION!r}",
        ),
    ],
)
def test_a_bad_config_value_is_a_one_line_error_naming_the_file_and_key(
    runs_dir: Path, tmp_path: Path, setting: str, error: str
) -> None:
    path = tmp_path / "lossreport.toml"
    path.write_text(setting)
    result = run_cli("watch", str(runs_dir), "--once", "--config", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"lossreport: {path}: {error}")


def test_render_of_a_runs_directory_renders_the_rest_and_names_what_failed(
    runs_dir: Path,
) -> None:
    for run_id in ("a", "c"):
        _run(runs_dir, run_id, steps=5)
    blocked = _run(runs_dir, "b", steps=5)
    (blocked / "loss_graphs").write_text("a file where the report folder goes\n")
    result = run_cli("render", str(runs_dir))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-3:-1] == ["Rendered 2 of 3 runs.", "Not rendered (1):"]
    # Which run, and the error: a sentence naming the file in the way.
    in_the_way = f"{blocked / 'loss_graphs'}: is a regular file, not a folder"
    assert lines[-1].startswith(f"  - {blocked}: {in_the_way}")
    assert f"{blocked}: not rendered: {in_the_way}" in result.stderr
    assert "Traceback" not in result.stderr
    assert (runs_dir / "a" / "loss_graphs").is_dir() and (runs_dir / "c" / "loss_graphs").is_dir()


def test_an_unexpected_error_in_one_run_does_not_stop_the_batch(runs_dir: Path) -> None:
    for run_id in ("a-good", "broken-1", "c-good", "broken-2", "e-good"):
        _run(runs_dir, run_id, steps=5)
    result = _with_broken_render("render", str(runs_dir))
    assert result.returncode == 1, result.stderr
    summary = result.stdout[result.stdout.index("Rendered 3 of 5 runs.") :].splitlines()
    assert summary == [
        "Rendered 3 of 5 runs.",
        "Not rendered (2):",
        f"  - {runs_dir / 'broken-1'}: ValueError: no sense in broken-1",
        f"  - {runs_dir / 'broken-2'}: ValueError: no sense in broken-2",
    ]
    logged = [line for line in result.stderr.splitlines() if "not rendered" in line]
    assert [line.split(" ERROR ", 1)[1] for line in logged] == [
        f"{runs_dir / 'broken-1'}: not rendered: ValueError: no sense in broken-1",
        f"{runs_dir / 'broken-2'}: not rendered: ValueError: no sense in broken-2",
    ]
    assert "Traceback" not in result.stderr  # only at debug level
    for run_id in ("a-good", "c-good", "e-good"):
        assert list((runs_dir / run_id / "loss_graphs").glob("loss_report_*.html"))
    verbose = _with_broken_render(
        "-v", "render", str(runs_dir / "broken-1"), str(runs_dir / "a-good")
    )
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "ValueError: no sense in broken-1" in verbose.stderr


def test_an_unexpected_error_of_one_run_is_one_line_not_a_traceback(runs_dir: Path) -> None:
    result = _with_broken_render("render", str(_run(runs_dir, "broken", steps=5)))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "lossreport: ValueError: no sense in broken (-v shows the traceback)"
    ]


def test_show_lists_the_shards_and_names_a_bad_run_json(runs_dir: Path) -> None:
    run_dir = _run(runs_dir, "bad-run-json")
    (run_dir / "run.json").write_text('{"format": "lossreport.run/1", "run_id": ')
    result = run_cli("show", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "run:    bad-run-json (run.json unreadable)"
    assert lines[1].startswith(f"problem: {run_dir / 'run.json'}: ")
    assert "rows:   30   losses: mse_loss, l1_loss" in lines


def test_show_names_every_unreadable_shard_even_when_run_json_is_a_folder(runs_dir: Path) -> None:
    run_dir = _run(runs_dir, "all-bad", steps=30, shard_every=10)
    shards = sorted((run_dir / "losses").glob("part-*.parquet"))
    assert len(shards) == 3
    for shard in shards:
        shard.write_bytes(b"not parquet at all")
    (run_dir / "run.json").unlink()
    (run_dir / "run.json").mkdir()
    result = run_cli("show", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith(f"problem: {run_dir / 'run.json'}: ")
    assert "rows:   0   losses: (none)" in lines
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert [line.removeprefix("skipped: ").split(":")[0] for line in skipped] == [
        str(shard) for shard in shards
    ]


def test_email_of_a_folder_that_is_no_run_refuses_and_writes_nothing_there(
    tmp_path: Path,
) -> None:
    # How `.lossreport-render.lock` and a loss_graphs/ of "unknown-model" came to be committed
    # at the repository root: `email .` rendered the checkout itself before failing to send.
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a run\n")
    result = run_cli(
        "email", str(folder), "--to", TO, "--smtp-host", "127.0.0.1", "--smtp-port", "9"
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"lossreport: {folder}: not a run directory ({sources.WHAT_IS_A_RUN})"
    )
    assert os.listdir(folder) == ["notes.txt"]


def test_show_and_render_take_a_silent_tensorboard_run_as_finished(tmp_path: Path) -> None:
    from tests.support.foreign import tensorboard_run

    run_dir = tmp_path / "tb"
    tensorboard_run(run_dir, range(3))
    assert "run:    tb (running)" in run_cli("show", str(run_dir)).stdout
    then = time.time() - 3600  # silent for an hour: over the default --stale-after
    for event_file in run_dir.iterdir():
        os.utime(event_file, (then, then))
    shown = run_cli("show", str(run_dir)).stdout
    assert "run:    tb (completed)" in shown and "no new data" in shown
    assert run_cli("render", str(run_dir)).returncode == 0
    (summary,) = (run_dir / "loss_graphs").glob("loss_summary_*.json")
    run = json.loads(summary.read_text())["run"]
    assert (run["status"], run["source"]) == ("completed", "tensorboard")


def test_render_output_of_several_runs_gives_each_its_folder_and_refuses_a_shared_one(
    tmp_path: Path,
) -> None:
    """Two runs named on one command line both went to DIR/loss_graphs/: the second report
    replaced the first, and the command said "Rendered 2 of 2 runs"."""
    first = _run(tmp_path / "sweep-a", "lr-1e-4")
    second = _run(tmp_path / "sweep-a", "lr-3e-4")
    output = tmp_path / "reports"
    result = run_cli("render", str(first), str(second), "--output", str(output))
    assert result.returncode == 0, result.stderr
    for run_dir in (first, second):
        assert list((output / run_dir.name / "loss_graphs").glob("loss_report_*.html"))
    same_name = _run(tmp_path / "sweep-b", "lr-1e-4")
    refused = run_cli("render", str(first), str(same_name), "--output", str(tmp_path / "new"))
    assert refused.returncode == 1
    assert f"{first} and {same_name} would both go there (--output)" in refused.stderr
    assert not (tmp_path / "new").exists()  # refused before anything is written


def test_names_that_would_drive_the_terminal_are_printed_escaped(runs_dir: Path) -> None:
    """A run's names reach `show` and the console summary from run.json and the shards, which
    anyone sharing the tree can write: an escape sequence there retitled or cleared the
    terminal of whoever looked at the run."""
    with lossreport.start_run(
        runs_dir, model="m\x1b]0;pwned\x07", hook="\x1b[31mred", run_id="esc"
    ) as run:
        run.log(0, mse_loss=1.0)
    for command in ("show", "render"):
        result = run_cli(command, str(run.path))
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "\\x1b[31mred" in result.stdout and "\\x1b]0;pwned\\x07" in result.stdout


SLACK_SECRET = "b7Qx2mK9pL4vN8rT3wY6zA1c"  # the shape of a Slack webhook's secret part


@pytest.mark.parametrize(
    "url",
    [
        f"https://hooks.slack.com/services/T04A2B3C4/B05D6E7F8/{SLACK_SECRET}",
        f"https://chat.example.org/hooks/{SLACK_SECRET.lower()}",  # Mattermost's shape
        f"https://flows.example.org/invoke?api-version=1&sig={SLACK_SECRET}",
    ],
)
def test_a_webhook_url_holding_a_secret_is_refused_on_the_command_line_but_not_in_the_env(
    runs_dir: Path, url: str
) -> None:
    """`ps` and shell history show a command line: the webhook's secret was taken from it."""
    refused = run_cli("watch", str(runs_dir), "--once", "--alert-webhook", url)
    assert refused.returncode == 2
    assert "--alert-webhook: the URL holds what looks like a secret" in refused.stderr
    assert "$LOSSREPORT_ALERT_WEBHOOK_URL" in refused.stderr
    assert SLACK_SECRET not in refused.stderr and SLACK_SECRET.lower() not in refused.stderr
    taken = run_cli("watch", str(runs_dir), "--once", env={"LOSSREPORT_ALERT_WEBHOOK_URL": url})
    assert taken.returncode == 0, taken.stderr
    plain = run_cli("watch", str(runs_dir), "--once", "--alert-webhook", "http://127.0.0.1:9/hook")
    assert plain.returncode == 0, plain.stderr
