"""`lossreport serve`: read-only, nothing outside the runs directory reachable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lossreport
from tests.support.daemon import run_once
from tests.support.server import request, serving


@pytest.fixture
def rendered_runs(runs_dir: Path) -> Path:
    for run_id in ("alpha", "beta"):
        with lossreport.start_run(runs_dir, model="m", hook="h", run_id=run_id) as run:
            for step in range(200):
                run.log(step, mse_loss=1.0 / (step + 1))
    assert run_once(runs_dir).returncode == 0
    return runs_dir


def test_it_binds_loopback_and_serves_the_index_and_reports(
    rendered_runs: Path, tmp_path: Path
) -> None:
    with serving(rendered_runs, tmp_path / "serve.log") as (host, port):
        assert host == "127.0.0.1"
        status, headers, body = request(port, "/")
        assert status == 200 and b"alpha" in body and b"beta" in body
        assert "script-src 'sha256-" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, headers, _ = request(port, "/alpha/")
        assert status == 302 and headers["Location"].startswith("/alpha/loss_graphs/loss_report_")
        status, headers, body = request(port, headers["Location"])
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert body.rstrip().endswith(b"</html>")
        csv = next((rendered_runs / "alpha" / "loss_graphs").glob("*.csv"))
        status, headers, body = request(port, f"/alpha/loss_graphs/{csv.name}")
        assert status == 200 and body == csv.read_bytes()
        assert request(port, f"/alpha/loss_graphs/{csv.name}", "HEAD")[2] == b""


def test_nothing_outside_the_reports_is_reachable(rendered_runs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    graphs = rendered_runs / "alpha" / "loss_graphs"
    os.symlink(secret, graphs / "escape.txt")
    os.symlink(tmp_path, rendered_runs / "linked-out")
    (rendered_runs / "notes.txt").write_text("not a run")
    forbidden = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/alpha/loss_graphs/../../../secret.txt",
        "/alpha/loss_graphs/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/alpha/loss_graphs/..%2f..%2f..%2fsecret.txt",
        "/alpha/loss_graphs/escape.txt",
        "/linked-out/secret.txt",
        "/alpha/run.json",
        "/alpha/losses/part-000001.parquet",
        "/alpha/loss_graphs/.lossreport-rendered.json",
        "/alpha/loss_graphs/",
        "/alpha/losses/",
        "/.lossreport/",
        "/notes.txt",
        "//etc/passwd",
        "/alpha/loss_graphs/%00",
        "/alpha/loss_graphs//etc/passwd",
    ]
    with serving(rendered_runs, tmp_path / "serve.log") as (_, port):
        for path in forbidden:
            status, _, body = request(port, path)
            assert status in (403, 404), path
            assert b"private" not in body and b"root:" not in body, path
        for method in ("POST", "PUT", "DELETE"):
            assert request(port, "/", method)[0] in (405, 501)
    assert secret.read_text() == "private"


def test_host_can_be_chosen(rendered_runs: Path, tmp_path: Path) -> None:
    with serving(rendered_runs, tmp_path / "serve.log", "--host", "127.0.0.2") as (host, _):
        assert host == "127.0.0.2"
