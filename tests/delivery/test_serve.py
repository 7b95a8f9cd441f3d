"""`lossreport serve`: read-only, nothing outside the runs directory reachable."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import lossreport
from lossreport.browse.catalog_access import REFRESH_SECONDS
from lossreport.delivery.serve import Limits, serve
from lossreport.errors import LossReportError
from lossreport.runformat import CATALOG_DIR, CATALOG_FILE, MARKER
from tests.support.catalog import DAMAGES, damage_catalog
from tests.support.daemon import run_once
from tests.support.procs import run_cli
from tests.support.serve_thread import closed_unanswered, server_thread
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


def test_only_requests_for_this_server_s_own_names_are_answered(
    rendered_runs: Path, tmp_path: Path
) -> None:
    """A page of another site whose name was made to resolve to 127.0.0.1 (DNS rebinding)
    sends its own name as Host: it must not read the runs."""
    settings = tmp_path / "serve.toml"
    settings.write_text('[serve]\nallow_host = ["from-config.example"]\n')
    args = ("--allow-host", "Reports.Example", "--config", str(settings))
    with serving(rendered_runs, tmp_path / "serve.log", *args) as (_, port):
        for host in [
            f"127.0.0.1:{port}",
            "127.0.0.1",
            "localhost",
            "localhost:9999",  # an SSH tunnel's port
            "LOCALHOST.",
            f"[::1]:{port}",
            "reports.example",
            "REPORTS.EXAMPLE:443",
            "from-config.example",
        ]:
            assert _status_for_host(port, "/", host)[0] == 200, host
        for host in ["attacker.example", f"attacker.example:{port}", "localhost.attacker.example",
                     "127.0.0.1.nip.io", "reports.example.attacker"]:  # fmt: skip
            for path in ["/", "/.api/runs", "/alpha/"]:
                status, body = _status_for_host(port, path, host)
                assert status == 421, (host, path)
                assert b"alpha" not in body and b"--allow-host" in body
        twice = ["localhost", "attacker.example"]
        assert _status_for_host(port, "/", *twice)[0] == 421


def _status_for_host(port: int, path: str, *hosts: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for host in hosts:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


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
    with server_thread(runs_dir, Limits(request_seconds=1.0)) as port:
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


def test_a_burst_of_requests_waits_for_answer_slots_and_none_is_closed_unanswered(
    runs_dir: Path,
) -> None:
    """Far more requests at once than answer slots: each waits for one. A connection whose
    request had come but was not read yet was taken for a silent one and closed (4 to 18 of
    200 requests at once, against 64 slots)."""
    with server_thread(runs_dir, Limits(max_answers=2)) as port, ThreadPoolExecutor(100) as pool:
        for _ in range(3):
            statuses = list(pool.map(lambda _: _status_or_error(port, "/.api/runs"), range(100)))
            assert statuses == [200] * 100


def test_silent_connections_do_not_hold_up_a_request_waiting_for_an_answer_slot(
    runs_dir: Path,
) -> None:
    """Every answer slot held by a client that stalls, then connections that send nothing,
    then a request: it waits for a slot once (then a 503), not once more for each silent
    connection before it (the accept loop waited for a slot for each in turn: 65 s for 20)."""
    big = _big_file(runs_dir)
    limits = Limits(max_answers=2, slot_wait_seconds=1.0, rate_grace_seconds=60)
    with server_thread(runs_dir, limits) as port:
        holders = [_stalled_reader(port, big) for _ in range(2)]
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
        started = time.monotonic()
        status, _, body = request(port, "/")
        assert status == 503 and b"try again" in body
        assert time.monotonic() - started < limits.slot_wait_seconds + 3
        for sock in holders + silent:
            sock.close()


def test_with_every_connection_open_a_silent_one_gives_way_never_a_request(
    runs_dir: Path,
) -> None:
    """A new connection takes the place of the one that has sent nothing for the longest; a
    connection that has sent its request keeps its place, so with none silent the new one is
    closed at once, and the requests waiting for the answer slot are all answered."""
    big = _big_file(runs_dir)
    limits = Limits(max_connections=3, max_answers=1, rate_grace_seconds=60)
    with server_thread(runs_dir, limits) as port:
        holder = _stalled_reader(port, big)  # holds the one answer slot
        queued = _sent(port, "/")  # in, waiting for the slot
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        late = _sent(port, "/")  # every connection open: the silent one gives way
        assert closed_unanswered(silent)
        refused = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed_unanswered(refused)  # none silent: closed at once (or the timeout raises)
        holder.close()
        assert _status_of(queued) == 200 and _status_of(late) == 200
        for sock in (silent, refused, queued, late):
            sock.close()


def _status_or_error(port: int, path: str) -> int | str:
    try:
        return request(port, path)[0]
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"


def _big_file(runs_dir: Path) -> str:
    """The path of a file far larger than what the socket buffers of loopback hold."""
    graphs = runs_dir / "big-run" / "loss_graphs"
    graphs.mkdir(parents=True)
    (graphs / "history.csv").write_bytes(b"step,mse_loss\n" * 600_000)  # 8 MB
    return "/big-run/loss_graphs/history.csv"


def _sent(port: int, path: str) -> socket.socket:
    """A connection on which a whole request for `path` has been sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _stalled_reader(port: int, path: str) -> socket.socket:
    """A connection that asked for `path` and reads nothing, once its answer has begun (so it
    holds an answer slot)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert select.select([sock], [], [], 10)[0], "the answer did not begin"
    return sock


def _status_of(sock: socket.socket) -> int:
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def test_slow_readers_are_dropped_and_a_new_client_still_gets_the_page(runs_dir: Path) -> None:
    """The slots all taken by clients reading a big file slowly (a few KB a second): each is
    dropped once under the minimum rate, and a client that comes meanwhile waits for a slot
    instead of being turned away."""
    big = _big_file(runs_dir)
    limits = Limits(max_answers=4, min_rate=256 * 2**10, rate_grace_seconds=0.5)
    with server_thread(runs_dir, limits) as port:
        readers = [_SlowReader(port, big) for _ in range(4)]
        for reader in readers:
            reader.started.wait(10)  # each is being answered: every slot is taken
        started = time.monotonic()
        status, _, body = request(port, "/")
        assert status == 200 and b"<html" in body
        assert time.monotonic() - started < 10
        for reader in readers:
            reader.join(10)
            assert reader.dropped, "a slow reader kept its slot"
            assert reader.received < 8 * 2**20


def test_an_answer_not_read_is_cut_off_at_its_deadline(runs_dir: Path) -> None:
    graphs = runs_dir / "big-run" / "loss_graphs"
    graphs.mkdir(parents=True)
    (graphs / "history.csv").write_bytes(b"step,mse_loss\n" * 600_000)
    with server_thread(runs_dir, Limits(response_seconds=1.0, min_rate=1)) as port:
        reader = _SlowReader(port, "/big-run/loss_graphs/history.csv")  # over the rate
        reader.join(10)
        assert reader.dropped and reader.seconds < 5


class _SlowReader(threading.Thread):
    """A client with a small receive buffer that asks for `path` and reads about `per_second`
    bytes a second of the answer, until the server closes the connection (or 30 s)."""

    def __init__(self, port: int, path: str, per_second: int = 4096) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.per_second = per_second
        self.started = threading.Event()
        self.received = 0
        self.dropped = False
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.received = len(self.sock.recv(1024))
            self.started.set()
            while time.monotonic() - began < 30:
                chunk = self.sock.recv(self.per_second // 10)
                if not chunk:
                    self.dropped = True
                    break
                self.received += len(chunk)
                time.sleep(0.1)  # the pace of a slow reader, not a wait for the server
        except ConnectionResetError:
            self.dropped = True
        finally:
            self.seconds = time.monotonic() - began
            self.sock.close()


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_catalog_damaged_while_served_is_read_around(
    rendered_runs: Path, tmp_path: Path, damage: str
) -> None:
    """The daemon's catalog damaged under a running `serve`: the index, its JSON and a
    sweep's page come from the runs' markers instead of failing, and that is logged once;
    the file is left where it is (the daemon sets it aside)."""
    catalog = rendered_runs / CATALOG_DIR / CATALOG_FILE
    log = tmp_path / "serve.log"
    with serving(rendered_runs, log) as (_, port):
        assert b"alpha" in request(port, "/")[2]
        damage_catalog(catalog, damage)
        began = time.monotonic()
        while time.monotonic() - began < 2.5 * REFRESH_SECONDS:  # past a look at the file
            for path in ["/", "/.api/runs", "/.sweep?model=m&hook=h", "/.run/alpha"]:
                status, _, body = request(port, path)
                assert status == 200 and b"alpha" in body, (path, body[-300:])
                assert path == "/.run/alpha" or b"beta" in body, path
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    unreadable = [event for event in events if event.get("event") == "catalog_unreadable"]
    assert len(unreadable) == 1 and str(catalog) in unreadable[0]["message"], unreadable
    assert catalog.exists() and "Traceback" not in log.read_text()


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
