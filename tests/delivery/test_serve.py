"""`lossreport serve`: read-only, nothing outside the runs directory reachable."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import lossreport
from lossreport.delivery.serve import serve
from lossreport.errors import LossReportError
from lossreport.runformat import MARKER
from tests.support.daemon import run_once
from tests.support.procs import run_cli, wait_for
from tests.support.serve_thread import closed_unanswered, server_thread, status_or_none
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


def test_an_overlong_or_looping_path_component_is_a_plain_404(
    rendered_runs: Path, tmp_path: Path
) -> None:
    graphs = rendered_runs / "alpha" / "loss_graphs"
    os.symlink(graphs / "loop.html", graphs / "loop.html")  # a link to itself: ELOOP
    long = "a" * 300  # over NAME_MAX: ENAMETOOLONG
    paths = [
        f"/{long}",
        f"/{long}/",
        f"/{long}/loss_graphs/report.html",
        f"/alpha/loss_graphs/{long}.html",
        "/alpha/loss_graphs/loop.html",
    ]
    log = tmp_path / "serve.log"
    with serving(rendered_runs, log) as (_, port):
        for path in paths:
            assert request(port, path)[0] == 404, path
    assert "Traceback" not in log.read_text()


def test_only_regular_files_in_a_real_loss_graphs_folder_of_a_real_run_are_served(
    rendered_runs: Path, tmp_path: Path
) -> None:
    alpha = rendered_runs / "alpha"
    graphs = alpha / "loss_graphs"
    report = next(graphs.glob("loss_report_*.html")).name
    os.symlink(alpha / "run.json", graphs / "run.json")
    os.symlink(next((alpha / "losses").glob("*.parquet")), graphs / "shard.parquet")
    os.symlink(graphs / report, graphs / "alias.html")  # even a link to a report
    os.mkfifo(graphs / "pipe.csv")  # opening it to read would block until a writer came
    os.symlink(alpha, rendered_runs / "alias")  # a run directory that is a link
    gamma = rendered_runs / "gamma"  # a real run directory whose loss_graphs is a link
    gamma.mkdir()
    shutil.copy(alpha / "run.json", gamma / "run.json")
    os.symlink(graphs, gamma / "loss_graphs")
    with serving(rendered_runs, tmp_path / "serve.log") as (_, port):
        assert request(port, f"/alpha/loss_graphs/{report}")[0] == 200
        assert request(port, "/alpha/")[0] == 302
        for path in [
            "/alpha/loss_graphs/run.json",
            "/alpha/loss_graphs/shard.parquet",
            "/alpha/loss_graphs/alias.html",
            "/alpha/loss_graphs/pipe.csv",
            "/alias/",
            f"/alias/loss_graphs/{report}",
            "/gamma/",
            f"/gamma/loss_graphs/{report}",
        ]:
            assert request(port, path)[0] == 404, path


def test_the_report_redirect_stays_inside_the_run_asked_for(
    rendered_runs: Path, tmp_path: Path
) -> None:
    """The marker is anyone's to write in a shared tree: it must not redirect off the site."""
    marker_file = rendered_runs / "alpha" / "loss_graphs" / MARKER
    marker = json.loads(marker_file.read_text())
    report = Path(marker["entry"]["report"]).name
    marker["entry"]["report"] = f"/evil.example/{report}"
    marker_file.write_text(json.dumps(marker))
    (rendered_runs / "beta").rename(rendered_runs / "beta-renamed")
    with serving(rendered_runs, tmp_path / "serve.log") as (_, port):
        status, headers, _ = request(port, "/alpha/")
        assert status == 302 and headers["Location"] == f"/alpha/loss_graphs/{report}"
        status, headers, _ = request(port, "/beta-renamed/")
        assert status == 302 and headers["Location"].startswith("/beta-renamed/loss_graphs/")
        assert request(port, headers["Location"])[0] == 200


def test_a_silent_or_trickling_client_is_cut_off_at_the_request_deadline(runs_dir: Path) -> None:
    with server_thread(runs_dir, timeout=1.0) as port:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickling = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickling.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        waiting = {silent, trickling}
        deadline = time.monotonic() + 8  # a header every 0.2 s beats any per-read timeout
        while waiting and time.monotonic() < deadline:
            for sock in select.select(list(waiting), [], [], 0.2)[0]:
                assert closed_unanswered(sock)
                waiting.discard(sock)
            if trickling in waiting:
                with contextlib.suppress(ConnectionError):  # closed just now: select sees it next
                    trickling.sendall(b"X-Slow: 1\r\n")
        assert not waiting, "the server kept a connection open past its request deadline"
        for sock in (silent, trickling):
            sock.close()
        assert request(port, "/")[0] == 200


def test_connections_over_the_limit_are_closed_until_one_ends(runs_dir: Path) -> None:
    with server_thread(runs_dir, max_connections=2) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert closed_unanswered(extra)  # accepted after the two held ones, so over the limit
        extra.close()
        for sock in held:
            sock.close()
        wait_for(lambda: status_or_none(port) == 200, timeout=10)


def test_a_busy_port_is_a_one_line_error(runs_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("serve", str(runs_dir), "--port", str(port))
    _assert_one_line_error(result.returncode, result.stderr)
    assert f"127.0.0.1:{port}: address already in use" in result.stderr


def test_a_host_that_does_not_resolve_is_a_one_line_error(runs_dir: Path) -> None:
    result = run_cli("serve", str(runs_dir), "--host", "no.such.host.invalid", "--port", "0")
    _assert_one_line_error(result.returncode, result.stderr)
    assert "cannot listen on no.such.host.invalid:0: " in result.stderr


@pytest.mark.parametrize(
    ("host", "port", "named"),
    [
        ("127.0.0.1", 70000, "127.0.0.1:70000"),  # the CLI checks its flag; a config value or
        ("127.0.0.1", -1, "127.0.0.1:-1"),  # a library caller may not
        ("bad\nhost", 0, "'bad\\nhost':0"),  # quoted, so that the message stays one line
    ],
)
def test_serve_names_an_address_it_cannot_listen_on_in_one_line(
    runs_dir: Path, host: str, port: int, named: str
) -> None:
    with pytest.raises(LossReportError) as raised:
        serve(runs_dir, host, port, threading.Event())
    assert str(raised.value).startswith(f"cannot listen on {named}: ")
    assert "\n" not in str(raised.value)


def _assert_one_line_error(returncode: int, stderr: str) -> None:
    assert returncode != 0
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
