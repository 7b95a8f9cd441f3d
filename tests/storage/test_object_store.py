"""Runs on an object store, end to end, against a real S3-protocol server on loopback (moto's
server mode) behind a proxy that fails as stores fail: trainers and daemons are subprocesses
that know the store only from the standard AWS environment variables."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import lossreport
from lossreport import runformat
from lossreport.errors import InvalidInputError
from lossreport.storage import s3
from lossreport.storage.lease import Leases
from lossreport.storage.mirror import NAMED_FAILURES, Mirror
from lossreport.storage.mirrorstate import STATE_FILE
from tests.support.checks import assert_rows_are_exactly_the_logged_values
from tests.support.daemon import Daemon, run_once
from tests.support.procs import PYTHONPATH, ROOT, wait_for
from tests.support.s3 import FaultProxy, MotoServer, boto, client_env, keys
from tests.support.server import request, serving


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, FaultProxy]]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    proxy = FaultProxy(server.port)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.fixture
def bucket(store: tuple[MotoServer, FaultProxy], request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("_", "-")[:50].strip("-").lower()
    boto(store[0].url).create_bucket(Bucket=name)
    store[1].set_mode("pass")
    return name


@pytest.fixture
def in_process(store: tuple[MotoServer, FaultProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's own clients (pyarrow, boto3) pointed at the server, not through faults."""
    for name, value in client_env(store[0].url).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    s3.filesystem.cache_clear()


def trainer(url: str, run_id: str, endpoint: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """The scripted trainer (tests/support/trainer.py) logging to `url` through `endpoint`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.trainer", url, run_id, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(endpoint, PYTHONPATH=PYTHONPATH, LOSSREPORT_REPORT_ON_CLOSE="0", **env),
    )


def store_daemon(
    url: str, tmp_path: Path, endpoint: str, *args: str, name: str = "daemon", **env: str
) -> Daemon:
    """`lossreport watch URL` polling every 0.3 s, its mirror and log under `tmp_path`."""
    return Daemon(
        url,
        *("--mirror", str(tmp_path / f"{name}-mirror"), "--poll-interval", "0.3", *args),
        log=tmp_path / f"{name}.log",
        env=client_env(endpoint, **env),
    )


def shard_table(client: Any, bucket: str, run: str) -> Any:
    """Every row the run's shards on the store hold, read as the renderer reads them (none
    before its first shard: a trainer writes run.json first)."""
    import pyarrow as pa

    tables = []
    for key in sorted(keys(client, bucket, f"runs/{run}/losses/")):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    if not tables:
        return pa.table({"step": pa.array([], pa.int64())})
    return pa.concat_tables(tables, promote_options="permissive").sort_by("step")


def markers(client: Any, bucket: str) -> list[str]:
    return [key for key in keys(client, bucket, "runs/") if key.endswith(runformat.MARKER)]


def marker_statuses(client: Any, bucket: str) -> dict[str, str]:
    """Each run's status as its render marker on the store says."""
    found = {}
    for key in markers(client, bucket):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        found[key.split("/")[1]] = json.loads(body)["status"]
    return found


def test_trainers_write_and_a_daemon_renders_each_finished_run_once(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    server, proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    daemon = store_daemon(url, tmp_path, proxy.url, "--no-alerts")
    try:
        trainers = [
            trainer(url, run, proxy.url, "--steps", "300", "--flush-every", "40")
            for run in ("alpha", "beta")
        ]
        for process in trainers:
            assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
        wait_for(lambda: len(markers(client, bucket)) == 2, timeout=90)
        rendered = [event["run"] for event in daemon.events("rendered")]
        assert sorted(rendered) == ["alpha", "beta"]
    finally:
        daemon.stop()
    env = client_env(server.url)
    objects = keys(client, bucket, "runs/alpha/")
    # Shards are whole objects under unique names; no temp objects are left.
    shards = [key for key in objects if "/losses/" in key]
    assert shards and all(runformat.parse_shard_name(key.rsplit("/", 1)[1]) for key in shards)
    assert_rows_are_exactly_the_logged_values(shard_table(client, bucket, "alpha"))
    assert shard_table(client, bucket, "alpha").num_rows == 300
    report = next(key for key in objects if key.endswith(".html"))
    assert client.head_object(Bucket=bucket, Key=report)["ContentType"] == "text/html"
    csv = next(key for key in objects if key.endswith(".csv"))
    assert client.get_object(Bucket=bucket, Key=csv)["Body"].read().count(b"\n") == 301
    # `serve` on the bucket shows the runs and the reports the daemon wrote back.
    with serving(url, tmp_path / "serve.log", "--mirror", str(tmp_path / "served"), env=env) as (
        _,
        port,
    ):
        status, _, index = request(port, "/")
        assert status == 200 and b"alpha" in index and b"beta" in index
        status, _, page = request(port, "/" + report.removeprefix("runs/"))
        assert status == 200 and page.rstrip().endswith(b"</html>")
    # Another daemon with an empty mirror finds both reports made: nothing is rendered again.
    again = run_once(url, "--mirror", str(tmp_path / "fresh"), env=env)
    assert again.returncode == 0, again.stderr
    assert "0 to render" in again.stdout + again.stderr


def test_a_trainer_closing_on_a_store_renders_its_report_there_when_asked(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    """report_on_close=True: the feature document's report at the end of training, made by a
    `lossreport render s3://...` child and written back beside the run."""
    server, _proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    process = trainer(
        url,
        "closing",
        server.url,
        *("--steps", "120", "--report-on-close", "true"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    assert "Saved HTML report to:" in out  # the console block, relayed from the child
    assert marker_statuses(client, bucket) == {"closing": "completed"}
    names = keys(client, bucket, "runs/closing/loss_graphs/")
    assert any(name.endswith(".html") for name in names)
    assert (tmp_path / "cache" / "lossreport" / "s3" / bucket / "runs" / "closing").is_dir()


def test_a_killed_trainer_is_rendered_stalled_with_every_row_it_wrote(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    server, proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    process = trainer(url, "finished", proxy.url, "--steps", "200", "--flush-every", "50")
    killed = trainer(
        url, "victim", proxy.url, *("--steps", "200", "--flush-every", "50", "--then", "wait")
    )
    assert process.wait(timeout=60) == 0
    wait_for(lambda: "runs/victim/run.json" in keys(client, bucket, "runs/victim/"), timeout=60)
    wait_for(lambda: shard_table(client, bucket, "victim").num_rows == 200, timeout=60)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    daemon = store_daemon(url, tmp_path, proxy.url, "--stale-after", "2s")
    want = {"finished": "completed", "victim": "stalled"}
    try:
        wait_for(lambda: marker_statuses(client, bucket) == want, timeout=90)
    finally:
        daemon.stop()
    # Each status once: the victim is first shown running, then stalled once it is silent.
    renders = [(event["run"], event["status"]) for event in daemon.events("rendered")]
    assert sorted(set(renders)) == sorted(renders)
    assert_rows_are_exactly_the_logged_values(shard_table(client, bucket, "victim"))


def test_a_failing_store_loses_no_value_and_stops_neither_trainer_nor_daemon(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    """503s, a store that stops listening (a restart, to its clients) and one that accepts
    and never answers, each for longer than a flush, while a trainer trains and a daemon
    polls: training goes on, rows wait in memory and are all written afterwards."""
    server, proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    daemon = store_daemon(url, tmp_path, proxy.url, "--no-alerts", LOSSREPORT_S3_TIMEOUT="1")
    daemon.wait_for_event("scan")  # started: the outages come while it watches
    steps = 1200
    process = trainer(
        url,
        "weathered",
        proxy.url,
        *("--steps", str(steps), "--flush-every", "1000000", "--flush-secs", "0.2"),
        *("--step-delay", "0.01"),
        LOSSREPORT_S3_TIMEOUT="1",
    )
    try:
        wait_for(lambda: keys(client, bucket, "runs/weathered/losses/"), timeout=60)
        for mode in ("slowdown", "down", "hang"):
            proxy.set_mode(mode)
            time.sleep(2.5)  # the outage itself: its length is what is being tested
            proxy.set_mode("pass")
            wait_for(lambda: keys(client, bucket, "runs/weathered/run.json"), timeout=30)
        assert process.poll() is None, "training ended before the outages did"
        assert process.wait(timeout=120) == 0
        wait_for(lambda: markers(client, bucket), timeout=90)
        assert daemon.process.poll() is None
    finally:
        daemon.stop()
    stderr = process.stderr.read() if process.stderr else ""
    assert "keeping them in memory" in stderr
    assert "writing shards again" in stderr
    table = shard_table(client, bucket, "weathered")
    assert table.num_rows == steps
    assert_rows_are_exactly_the_logged_values(table)
    assert [event["run"] for event in daemon.events("rendered")] == ["weathered"]


def test_a_store_down_for_long_holds_bounded_rows_and_counts_the_rest(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    """As a full disk: rows wait in memory up to max_unwritten_rows, older ones are dropped and
    counted, and run.json says how many once the store answers again: every row logged is
    either on the store or counted."""
    server, proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    steps, kept = 400, 100
    process = trainer(
        url,
        "outage",
        proxy.url,
        *("--steps", str(steps), "--flush-every", "50", "--flush-secs", "0.1"),
        *("--step-delay", "0.005", "--max-unwritten-rows", str(kept), "--then", "wait"),
        LOSSREPORT_S3_TIMEOUT="1",
    )
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True).start()
    wait_for(lambda: keys(client, bucket, "runs/outage/losses/"), timeout=60)
    proxy.set_mode("down")
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"logged {steps}"  # trained on, meanwhile
        wait_for(lambda: any("rows dropped" in line for line in errors), timeout=60)
    finally:
        proxy.set_mode("pass")
    process.stdin.close()  # type: ignore[union-attr]  # the trainer closes the run
    assert process.wait(timeout=120) == 0, "".join(errors)
    record = json.loads(client.get_object(Bucket=bucket, Key="runs/outage/run.json")["Body"].read())
    counted = re.search(r"(\d+) logged rows could not be written", record["error"] or "")
    assert counted is not None, record
    table = shard_table(client, bucket, "outage")
    assert table.num_rows + int(counted[1]) == steps
    assert table.column("step").to_pylist()[-kept:] == list(range(steps - kept, steps))


def test_a_trainer_started_while_the_store_is_down_waits_for_it_then_trains(
    store: tuple[MotoServer, FaultProxy], bucket: str
) -> None:
    """A blip at a job's start must not fail the job; bad credentials do, at once (below)."""
    server, proxy = store
    proxy.set_mode("down")
    try:
        process = trainer(f"s3://{bucket}/runs", "patient", proxy.url, "--steps", "50")
        assert process.stderr is not None
        waiting = process.stderr.readline()
        assert "the store cannot be reached, trying again" in waiting, waiting
    finally:
        proxy.set_mode("pass")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert shard_table(boto(server.url), bucket, "patient").num_rows == 50


def test_two_daemons_on_one_bucket_render_each_run_once(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    server, _proxy = store
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    daemons = [
        store_daemon(url, tmp_path, server.url, "--no-alerts", name=f"daemon{n}") for n in range(2)
    ]
    runs = [f"run{n}" for n in range(6)]
    try:
        trainers = [trainer(url, run, server.url, "--steps", "60") for run in runs]
        for process in trainers:
            assert process.wait(timeout=120) == 0
        wait_for(lambda: len(markers(client, bucket)) == len(runs), timeout=120)
        wait_for(lambda: sum(len(d.events("rendered")) for d in daemons) >= len(runs))
    finally:
        for daemon in daemons:
            daemon.stop()
    rendered = [event["run"] for daemon in daemons for event in daemon.events("rendered")]
    assert sorted(rendered) == runs
    leases = [key for key in keys(client, bucket, "runs/") if key.endswith(runformat.LEASE_FILE)]
    assert len(leases) == len(runs)


@pytest.mark.usefixtures("in_process")
def test_a_daemon_with_output_writes_every_report_there_and_nothing_to_the_store(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    """The README: `watch s3://... --output DIR` puts the reports under DIR, not in the hidden
    mirror (writable, so once taken for the runs' own folders) and not on the store."""
    url = f"s3://{bucket}/runs"
    with lossreport.start_run(url, model="gpt2-small", hook="blocks.8.hook_resid_pre") as run:
        for step in range(30):
            run.log(step, mse_loss=1.0 / (step + 1))
    key = str(run.path).rsplit("/", 1)[1]  # the run's id, as start_run made it
    output, mirror = tmp_path / "reports" / "sae", tmp_path / "mirror"  # DIR made, mkdir -p
    result = run_once(
        url, "--mirror", str(mirror), "--output", str(output), env=client_env(store[0].url)
    )
    assert result.returncode == 0, result.stderr
    assert len(list((output / key / runformat.GRAPHS_DIR).glob("*.html"))) == 1
    assert (output / runformat.INDEX_FILE).is_file()
    assert not (mirror / key / runformat.GRAPHS_DIR).exists()
    assert [k for k in keys(boto(store[0].url), bucket, "runs/") if "loss_graphs" in k] == []


@pytest.mark.usefixtures("in_process")
def test_the_store_lets_one_daemon_of_many_take_a_lease(bucket: str) -> None:
    url = s3.StoreUrl(bucket, "runs")
    contenders = [Leases(url, runformat.LEASE_FILE) for _ in range(8)]
    results: list[bool] = []
    start = threading.Barrier(len(contenders))

    def contend(leases: Leases) -> None:
        start.wait()
        results.append(leases.claim("r1"))

    threads = [threading.Thread(target=contend, args=(leases,)) for leases in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert contenders[0].check()  # the server does refuse a conditional write that must fail


@pytest.mark.usefixtures("in_process")
def test_a_lease_is_renewed_by_its_holder_and_taken_over_only_once_expired(bucket: str) -> None:
    url = s3.StoreUrl(bucket, "runs")
    holder, other = Leases(url, runformat.LEASE_FILE), Leases(url, runformat.LEASE_FILE)
    assert holder.claim("r1")
    assert not other.claim("r1")
    assert holder.claim("r1")  # its own: renewed
    restarted = Leases(url, runformat.LEASE_FILE, owner=holder.owner)  # its mirror says who
    assert restarted.claim("r1")  # a restarted daemon takes its leases back at once
    short = Leases(url, runformat.LEASE_FILE, seconds=-1)  # expired as soon as written
    assert short.claim("r2")
    assert other.claim("r2")  # taken over
    assert not short.claim("r2")


@pytest.mark.usefixtures("in_process")
def test_an_object_the_mirror_cannot_fetch_is_named_once_while_it_fails(
    store: tuple[MotoServer, FaultProxy],
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every poll tries a failing object again; the log names it at the first failure only,
    and names a few a poll, counting the rest, so that a daemon's log does not fill."""
    client = boto(store[0].url)
    broken = NAMED_FAILURES + 2
    for run in range(broken):  # a key that needs run.json as a folder: one of the two fails
        client.put_object(Bucket=bucket, Key=f"runs/r{run}/run.json", Body=b"{}")
        client.put_object(Bucket=bucket, Key=f"runs/r{run}/run.json/stray", Body=b"x")
    mirror = Mirror(s3.StoreUrl(bucket, "runs"), tmp_path / "mirror", runformat.MIRROR_RULES)
    caplog.set_level(logging.WARNING, logger="lossreport.storage.mirror")
    assert mirror.sync().failed == broken
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == NAMED_FAILURES + 1
    assert all(": not mirrored: " in line for line in logged[:-1])
    assert logged[-1] == (
        f"s3://{bucket}/runs: 2 more objects not mirrored; each is tried again at every poll"
    )
    caplog.clear()
    assert mirror.sync().failed == broken  # tried again, not named again
    assert caplog.records == []


@pytest.mark.usefixtures("in_process")
def test_the_mirror_fetches_only_what_changed_and_never_leaves_its_folder(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    client = boto(store[0].url)
    objects = {
        "runs/r1/run.json": b"{}",
        "runs/r1/losses/part-000001.parquet": b"x",
        "runs/r1/losses/cleared/t/part-000001.parquet": b"set aside",
        "runs/r1/loss_graphs/loss_report.html": b"<html>",
        "runs/r1/loss_graphs/.lossreport-rendered.json": b"{}",
        "runs/r1/.lossreport-lease.json": b"{}",
        "runs/../escape/run.json": b"{}",
        "runs/r2//run.json": b"{}",
        "runs/r3/./run.json": b"{}",
        f"runs/{'é' * 130}/run.json": b"{}",  # a name of 260 bytes: no file can have it here
        f"runs/{'é' * 127}/run.json": b"{}",  # 254 bytes: it can
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    root = tmp_path / "mirror"
    # A render this mirror's daemon made but never uploaded: the store does not have it.
    unsent = root / "r9" / runformat.GRAPHS_DIR / runformat.MARKER
    unsent.parent.mkdir(parents=True)
    unsent.write_text("{}")
    mirror = Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES)
    first = mirror.sync()
    assert not unsent.exists()  # so the run is rendered, and sent, again
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert found == [
        STATE_FILE,  # what it fetched, for its next start
        "r1/loss_graphs/.lossreport-rendered.json",
        "r1/losses/part-000001.parquet",
        "r1/run.json",
        f"{'é' * 127}/run.json",
    ]
    assert (first.fetched, first.failed) == (4, 0)  # the others passed over, not tried
    assert not (tmp_path / "escape").exists()
    assert mirror.sync().fetched == 0  # unchanged: the listing alone says so
    client.put_object(Bucket=bucket, Key="runs/r1/run.json", Body=b'{"longer": 1}')
    assert mirror.sync().fetched == 1
    assert (root / "r1/run.json").read_bytes() == b'{"longer": 1}'
    client.delete_object(Bucket=bucket, Key="runs/r1/losses/part-000001.parquet")
    assert mirror.sync().removed == 1
    assert not (root / "r1/losses").exists()


@pytest.mark.usefixtures("in_process")
def test_a_restarted_mirror_fetches_only_what_changed_while_it_was_stopped(
    store: tuple[MotoServer, FaultProxy], bucket: str, tmp_path: Path
) -> None:
    server = store[0]
    client = boto(server.url)
    url = f"s3://{bucket}/runs"
    ids = []
    for model in ("Qwen2.5-7B-Instruct", "модель-gpt2-small"):
        with lossreport.start_run(url, model=model, hook="blocks.8.hook_resid_pre") as run:
            for step in range(20):
                run.log(step, mse_loss=1.0 / (step + 1), l1_loss=40.0 - step)
        ids.append(str(run.path).rsplit("/", 1)[1])
    done, other = ids
    root = tmp_path / "mirror"
    mirror = Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES)
    assert mirror.sync().fetched == len(keys(client, bucket, "runs/"))
    # The daemon renders one run and sends its report back, marker last.
    report = root / done / runformat.GRAPHS_DIR
    report.mkdir()
    (report / "loss_report.html").write_text("<html>")
    (report / runformat.MARKER).write_text('{"status": "completed"}')
    assert mirror.rendered(done, report)
    mirror.sync()
    assert (report / "loss_report.html").exists()  # sent, not taken for an object gone
    before = len(server.object_gets(bucket))

    restarted = Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES)
    assert restarted.sync().fetched == 0
    assert server.object_gets(bucket)[before:] == []

    # While it is stopped: a run writes a shard and run.json, a shard is deleted, and a file
    # in the mirror is changed by hand.
    shards = sorted(keys(client, bucket, f"runs/{other}/losses/"))
    new_shard = shards[0].replace("part-000001", "part-000099")
    client.copy_object(Bucket=bucket, Key=new_shard, CopySource=f"{bucket}/{shards[0]}")
    run_json = f"runs/{other}/{runformat.RUN_FILE}"
    body = client.get_object(Bucket=bucket, Key=run_json)["Body"].read()
    client.put_object(Bucket=bucket, Key=run_json, Body=body + b" ")
    gone = sorted(keys(client, bucket, f"runs/{done}/losses/"))[0]
    client.delete_object(Bucket=bucket, Key=gone)
    (root / done / runformat.RUN_FILE).write_text("{}")
    before = len(server.object_gets(bucket))

    again = Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES)
    result = again.sync()
    fetched = sorted(server.object_gets(bucket)[before:])
    assert fetched == sorted([new_shard, run_json, f"runs/{done}/{runformat.RUN_FILE}"])
    assert (result.fetched, result.removed) == (3, 1)
    assert not (root / gone.removeprefix("runs/")).exists()
    assert (root / done / runformat.RUN_FILE).read_bytes() == client.get_object(
        Bucket=bucket, Key=f"runs/{done}/{runformat.RUN_FILE}"
    )["Body"].read()
    # A state file that cannot be read is started afresh: everything fetched once, no error.
    (root / STATE_FILE).write_bytes(b"not a database")
    assert Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES).sync().fetched > 0
    assert Mirror(s3.StoreUrl(bucket, "runs"), root, runformat.MIRROR_RULES).sync().fetched == 0


def test_bad_credentials_are_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    server = MotoServer(tmp_path / "moto.log", auth_after=3)
    try:
        admin = _user_with_s3_access(server.url)
        client = boto(server.url, **admin)
        client.create_bucket(Bucket="guarded")
        url = "s3://guarded/runs"
        wrong = {"AWS_ACCESS_KEY_ID": admin["key"], "AWS_SECRET_ACCESS_KEY": "wrong"}
        process = trainer(url, "r1", server.url, "--steps", "10", **wrong)
        assert process.wait(timeout=60) != 0
        stderr = process.stderr.read() if process.stderr else ""
        assert "RunDirectoryError: s3://guarded/runs/r1" in stderr
        assert "access denied" in stderr
        watch = run_once(
            url, "--mirror", str(tmp_path / "mirror"), env=client_env(server.url, **wrong)
        )
        assert watch.returncode != 0
        assert "s3://guarded/runs" in watch.stderr and "access denied" in watch.stderr
        assert "trying again" not in watch.stderr  # a refusal is final: said at once
        assert keys(client, "guarded") == {}
        right = {"AWS_ACCESS_KEY_ID": admin["key"], "AWS_SECRET_ACCESS_KEY": admin["secret"]}
        process = trainer(url, "r1", server.url, "--steps", "10", **right)
        assert process.wait(timeout=60) == 0  # the same, with the right key, writes
        assert "runs/r1/run.json" in keys(client, "guarded")
    finally:
        server.stop()


def _user_with_s3_access(endpoint: str) -> dict[str, str]:
    """An IAM user allowed s3:*, made with the server's first three requests (after which it
    checks every request's signature)."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="trainer")
    key = iam.create_access_key(UserName="trainer")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(policy))
    return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


@pytest.mark.parametrize(
    ("text", "bucket", "key"),
    [
        ("s3://runs-bucket", "runs-bucket", ""),
        ("s3://runs-bucket/", "runs-bucket", ""),
        ("s3://runs-bucket/team/sae/", "runs-bucket", "team/sae"),
    ],
)
def test_a_store_url_is_a_bucket_and_a_prefix(text: str, bucket: str, key: str) -> None:
    url = s3.StoreUrl.parse(text)
    assert (url.bucket, url.key) == (bucket, key)
    assert str(url.child("r1")) == f"s3://{bucket}/{key + '/' if key else ''}r1"


@pytest.mark.parametrize(
    "text",
    [
        "s3://",
        "s3://UPPER/runs",
        "s3://b/runs",
        "s3://runs-bucket/a//b",
        "s3://runs-bucket/../etc",
        "s3://runs-bucket/a/./b",
        "s3://runs-bucket/a?versionId=1",
        "s3://runs-bucket/a\x00b",
        "file:///tmp/runs",
    ],
)
def test_a_bad_store_url_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(repr(text))):
        s3.StoreUrl.parse(text)


@pytest.mark.parametrize(
    ("key", "mirrored"),
    [
        ("r1/run.json", True),
        ("r1/losses/part-000001-wab12cd34.parquet", True),
        ("exp/lightning_logs/version_0/metrics.csv", True),
        ("r1/loss_graphs/.lossreport-rendered.json", True),
        ("r1/loss_graphs/loss_report_m_h_20260101_000000.html", False),
        ("r1/losses/cleared/20260101T000000Z/part-000001.parquet", False),
        ("r1/.lossreport-lease.json", False),
        ("r1/.lossreport-alerts.json", False),
        ("index.html", False),
    ],
)
def test_the_mirror_copies_inputs_and_markers_only(key: str, mirrored: bool) -> None:
    assert runformat.MIRROR_RULES.wanted(tuple(key.split("/"))) is mirrored
    report = key.endswith(".html") and "loss_graphs" in key
    assert runformat.BROWSE_MIRROR_RULES.wanted(tuple(key.split("/"))) is (mirrored or report)
