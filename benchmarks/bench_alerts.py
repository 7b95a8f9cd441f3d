"""Alerts: whether the default rules are right on a labelled corpus, what one check of a
training run costs when a new shard has landed, how long an alert takes to leave, and what a
daemon following 200 running runs costs between shards.

    python benchmarks/bench_alerts.py [--repeats 7] [--idle-runs 200] [--idle-seconds 60]
                                      [--only corpus|checks|latency|idle]

0. Precision, recall and latency on the labelled corpus (tests/support/alert_corpus.py, which
tests/daemon/test_alerts.py asserts on): its healthy and failing SAE curves written shard by
shard, as trainers do, into one runs directory that a real `lossreport watch` (default rules,
--alert-webhook to a receiver on loopback) follows. Per kind: precision (alerts that were right
over alerts raised), recall (failures caught over failures played), false alerts, the latency
from the shard that holds the alert's step landing to the post arriving (a stall: from the
heartbeat going stale), median and worst, and the steps from the failure's onset to that step.

1. Cost per check.

Builds, in a temporary directory and with `runformat.write_shard` directly, a 10,000-step and
a 1,000,000-step run (four losses, 1000-row shards, a slightly noisy falling curve) and feeds a
`RunChecker` every shard already there (not timed). Then, --repeats times, writes one more
1000-row shard and times `checker.check(run_dir)`. Prints the median milliseconds per check
for both runs and their ratio: about 1 when a check costs what its new shard costs, not what
the run holds. Beside them, the median time `runformat.iter_shards` takes to list the run's
shards, which every check does and which grows with the number of shards. The checker runs the
default rules plus one threshold and one plateau rule.

2. Latency: a real `lossreport watch` (inotify) with `--alert-webhook` to an HTTP receiver on
loopback; a trainer in this process logs clean steps, then a NaN, and flushes: from the flush
(the shard landing) to the webhook post arriving. Target: under 2 s.

3. Idle CPU: --idle-runs runs open in this process (each flusher rewriting run.json's heartbeat
every 30 s, as a trainer with nothing to write does, but no new shards), a daemon following
them all, with alerts and with --no-alerts; its CPU (and its workers') over --idle-seconds, as
a share of one core. Target: under 1%.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import lossreport
from lossreport import runformat
from lossreport.alerts import AlertRules, Plateau, RunChecker, Threshold

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's corpus
from daemon_process import Daemon  # a benchmark helper beside this file

from tests.support import alert_corpus

LOSSES = ("mse_loss", "l1_loss", "auxiliary_reconstruction_loss", "overall_loss")
SHARD_ROWS = 1000
RULES = AlertRules(
    user=(
        Threshold("mse high", "mse_loss", above=10.0, after_step=1000),
        Plateau("overall stuck", "overall_loss", steps=50_000, min_delta=1e-6),
    )
)


def shard_table(first_step: int, rng: np.random.Generator) -> pa.Table:
    """1000 rows of four losses falling as 1/sqrt(step), with 2% noise."""
    steps = np.arange(first_step, first_step + SHARD_ROWS, dtype=np.int64)
    base = 1.0 / np.sqrt(steps + 1.0)
    columns: dict[str, object] = {"step": steps, "wall_time": steps * 0.01 + 1.7e9}
    for scale, name in enumerate(LOSSES, start=1):
        columns[name] = scale * base * (1 + 0.02 * rng.standard_normal(SHARD_ROWS))
    return pa.table(columns)


def build_run(run_dir: Path, steps: int, rng: np.random.Generator) -> int:
    """Write a run of `steps` steps; returns the number of its last shard."""
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    shards = steps // SHARD_ROWS
    for seq in range(1, shards + 1):
        runformat.write_shard(run_dir, seq, shard_table((seq - 1) * SHARD_ROWS, rng), writer="b")
    return shards


def time_new_shard_checks(run_dir: Path, steps: int, repeats: int) -> tuple[list[float], float]:
    """Seconds of `check` after each of `repeats` new shards, on a run of `steps` steps whose
    earlier shards the checker has already read; and the median seconds of the check's listing
    alone (scanning `losses/` and passing over the names read already, timed apart): the part
    that still grows with the run."""
    rng = np.random.default_rng(0)
    last = build_run(run_dir, steps, rng)
    checker = RunChecker(RULES)
    assert checker.check(run_dir) == [], "the curve must be clean"
    times, listings = [], []
    for seq in range(last + 1, last + 1 + repeats):
        runformat.write_shard(run_dir, seq, shard_table((seq - 1) * SHARD_ROWS, rng), writer="b")
        start = time.perf_counter()
        alerts = checker.check(run_dir)
        times.append(time.perf_counter() - start)
        assert alerts == [], alerts
        read = {path.name for _, _, path in runformat.iter_shards(run_dir)}
        start = time.perf_counter()
        list(runformat.iter_shards(run_dir, skip=read))  # what a check lists: names only
        listings.append(time.perf_counter() - start)
    return times, statistics.median(listings)


def corpus_section() -> None:
    curves = alert_corpus.corpus()
    healthy = sum(curve.failure is None for curve in curves)
    print(
        f"labelled corpus: {healthy} healthy and {len(curves) - healthy} failing runs of "
        f"{alert_corpus.STEPS:,} steps, {alert_corpus.SHARD_ROWS}-row shards, one daemon"
    )
    with tempfile.TemporaryDirectory() as tmp:
        played, _log = alert_corpus.run_corpus(Path(tmp), curves)
    scores = alert_corpus.scores(played, alert_corpus.STALE_AFTER)
    print(alert_corpus.SCORE_HEADER)
    for score in scores:
        print(score.line())
    true = sum(score.true_alerts for score in scores)
    false = sum(score.false_alerts for score in scores)
    caught = sum(score.caught for score in scores)
    failures = sum(score.failures for score in scores)
    print(
        f"all: precision {true / max(true + false, 1):.2f} ({false} false alerts), "
        f"recall {caught / max(failures, 1):.2f} ({caught} of {failures} failures caught)\n"
    )


def new_shard_section(repeats: int) -> None:
    print(f"check after one new {SHARD_ROWS}-row shard, {len(LOSSES)} losses: ms per check")
    print(f"{'run':>13} {'shards':>7} {'median':>8} {'min':>8} {'max':>8} {'of it, listing':>15}")
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (10_000, 1_000_000):
            times, listing = time_new_shard_checks(Path(tmp) / f"run-{steps}", steps, repeats)
            medians[steps] = statistics.median(times)
            ms = [t * 1e3 for t in times]
            print(
                f"{steps:>10,} st {steps // SHARD_ROWS + repeats:>7,} {medians[steps] * 1e3:8.3f} "
                f"{min(ms):8.3f} {max(ms):8.3f} {listing * 1e3:15.3f}"
            )
    print(f"ratio 1M / 10k: {medians[1_000_000] / medians[10_000]:.2f} (target: about 1)")


class Receiver:
    """Webhook posts on loopback, with the time each arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.arrivals.setdefault(body["run"], time.time())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {predicate}")
        time.sleep(0.005)


def latency_section(repeats: int) -> None:
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        daemon = Daemon(runs, "--alert-webhook", receiver.url)
        try:
            _until(lambda: runformat.live_daemon(runs) is not None)
            latencies = [_one_alert(runs, f"latency-{i}", receiver) for i in range(repeats)]
        finally:
            daemon.stop()
    ms = sorted(latency * 1e3 for latency in latencies)
    print(f"\nalert latency, a NaN's shard landing -> its webhook post (inotify), {repeats}x")
    print(f"  median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms (target: under 2000 ms)")


def _one_alert(runs: Path, run_id: str, receiver: Receiver) -> float:
    run = lossreport.start_run(
        runs, model="bench", hook="h", run_id=run_id, flush_every=10**9, flush_secs=3600,
        report_on_close=False,
    )  # fmt: skip
    for step in range(100):
        run.log(step, mse_loss=1.0 / (step + 1))
    run.flush()
    time.sleep(1.0)  # the daemon now follows the running run
    run.log(100, mse_loss=math.nan)
    landed = time.time()
    run.flush()
    _until(lambda: run_id in receiver.arrivals)
    run.close()
    return receiver.arrivals[run_id] - landed


def idle_section(count: int, seconds: float) -> None:
    print(f"\nidle daemon, {count} running runs (no new shards; run.json beats every 30 s)")
    for label, args in (("alerts on (default)", ()), ("--no-alerts", ("--no-alerts",))):
        used = _idle_cpu(count, seconds, args)
        print(f"  {label:<20} CPU over {seconds:.0f} s: {used:.2%} of one core (target: under 1%)")


def _idle_cpu(count: int, seconds: float, daemon_args: tuple[str, ...]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        open_runs = []
        for i in range(count):
            run = lossreport.start_run(
                runs, model="bench", hook="h", run_id=f"idle-{i:03d}", report_on_close=False
            )
            for step in range(100):
                run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.1)
            run.flush()
            open_runs.append(run)
        daemon = Daemon(runs, *daemon_args)
        try:
            _until(lambda: runformat.live_daemon(runs) is not None, timeout=300)
            time.sleep(5.0)  # the first look at every run, its first renders' workers settle
            before, started = daemon.cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            used = (daemon.cpu_seconds() - before) / (time.monotonic() - started)
        finally:
            daemon.stop()
            for run in open_runs:
                run.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--idle-runs", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["corpus", "checks", "latency", "idle"])
    args = parser.parse_args()
    if args.only in (None, "corpus"):
        corpus_section()
    if args.only in (None, "checks"):
        new_shard_section(args.repeats)
    if args.only in (None, "latency"):
        latency_section(args.repeats)
    if args.only in (None, "idle"):
        idle_section(args.idle_runs, args.idle_seconds)


if __name__ == "__main__":
    main()
