"""The daemon: completion-to-report latency, throughput, start-up over many runs, idle CPU.

    python benchmarks/bench_watch.py [--latency-runs 10] [--burst 200] [--rendered 10000]

Runs the real `lossreport watch` as a subprocess (2 workers) in temporary directories and
prints, in one run:
  - completion to report on disk (run.json turning `completed` until the report's marker
    records it), median and max over --latency-runs runs, natively and in polling mode, beside
    the render time of the same run in a warm process;
  - throughput with --burst small runs completing at once;
  - start-up time (to "watching") and resident memory of the daemon and its workers over
    --rendered runs that are already rendered (nothing must be re-rendered);
  - CPU used while idle, over 10 seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from daemon_process import Daemon

import lossreport
from lossreport import runformat, storage
from lossreport.daemon.runstate import read_state
from lossreport.report.render import render_run
from lossreport.runformat import RenderedMarker, read_marker, write_marker


def log_run(runs_dir: Path, run_id: str, steps: int) -> lossreport.Run:
    run = lossreport.start_run(
        runs_dir,
        model="bench",
        hook="blocks.0",
        run_id=run_id,
        flush_every=10**9,
        flush_secs=3600,
        report_on_close=False,
    )
    for step in range(steps):
        run.log(step, mse_loss=1.0 / (step + 1), l1_loss=0.1, overall_loss=1.1)
    run.flush()
    return run


def wait_rendered(run_dir: Path, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while True:
        marker = read_marker(run_dir)
        if (
            marker is not None
            and marker.status == "completed"
            and marker.fingerprint == read_state(run_dir).fingerprint
        ):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_dir} was not rendered")
        time.sleep(0.005)


def latency(tmp: Path, runs: int, steps: int, *flags: str) -> list[float]:
    runs_dir = tmp / f"latency{'-'.join(flags)}"
    runs_dir.mkdir()
    daemon = Daemon(runs_dir, *flags)
    daemon.wait_for("watching")
    warm = log_run(runs_dir, "warm-up", steps)  # the first render also starts a worker
    warm.close()
    wait_rendered(warm.path)
    delays = []
    for index in range(runs):
        run = log_run(runs_dir, f"run-{index}", steps)
        run.close()
        completed = time.monotonic()
        delays.append(wait_rendered(run.path) - completed)
    daemon.stop()
    return delays


def burst(tmp: Path, count: int) -> float:
    runs_dir = tmp / "burst"
    runs_dir.mkdir()
    daemon = Daemon(runs_dir)
    daemon.wait_for("watching")
    runs = [log_run(runs_dir, f"run-{index}", 200) for index in range(count)]
    started = time.monotonic()
    for run in runs:
        run.close()
    for run in runs:
        wait_rendered(run.path)
    elapsed = time.monotonic() - started
    daemon.stop()
    return elapsed


def already_rendered(tmp: Path, count: int) -> Path:
    """`count` finished runs whose markers match their inputs, as after a full render."""
    runs_dir = tmp / "rendered"
    template = log_run(tmp / "template", "template", 100)
    template.close()
    result = render_run(template.path)
    entry = {
        "run_id": "x",
        "status": "completed",
        "model": "bench",
        "hook": "blocks.0",
        "architecture": None,
        "steps": 100,
        "final": {"mse_loss": 0.01},
        "problems": 0,
        "report": str(result.report.relative_to(template.path.parent)),
        "rendered_at": "",
    }
    shard = next((template.path / runformat.LOSSES_DIR).iterdir()).read_bytes()
    record = runformat.read_run_file(template.path)
    for index in range(count):
        run_dir = runs_dir / f"run-{index:05d}"
        (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
        (run_dir / runformat.GRAPHS_DIR).mkdir()
        record.run_id = run_dir.name
        (run_dir / runformat.RUN_FILE).write_text(record.to_json())
        (run_dir / runformat.LOSSES_DIR / "part-000001.parquet").write_bytes(shard)
        fingerprint = read_state(run_dir).fingerprint
        with storage.opened_dir(run_dir) as run_fd:
            marker = RenderedMarker(fingerprint, "completed", {**entry, "run_id": run_dir.name})
            write_marker(run_dir, run_fd, marker)
    return runs_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rendered", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        probe = log_run(tmp / "probe", "probe", args.steps)
        probe.close()
        render_run(probe.path)
        renders = []
        for _ in range(3):
            started = time.monotonic()
            render_run(probe.path)
            renders.append(time.monotonic() - started)
        render_s = statistics.median(renders)
        native = latency(tmp, args.latency_runs, args.steps)
        polled = latency(tmp, args.latency_runs, args.steps, "--poll", "--poll-interval", "1")
        print(f"render of one {args.steps:,}-step run in a warm process: {render_s:.2f}s (median)")
        for label, delays in (("native", native), ("polling 1s", polled)):
            print(
                f"completion -> report, {label:10}: median {statistics.median(delays):.2f}s, "
                f"max {max(delays):.2f}s over {len(delays)} runs "
                f"(median minus render: {statistics.median(delays) - render_s:+.2f}s)"
            )
        elapsed = burst(tmp, args.burst)
        print(
            f"{args.burst} runs completing at once: all reports in {elapsed:.1f}s "
            f"({args.burst / elapsed:.1f} runs/s, 2 workers)"
        )

        runs_dir = already_rendered(tmp, args.rendered)
        started = time.monotonic()
        daemon = Daemon(runs_dir, "--idle-restart", "5s")
        ready = daemon.wait_for("watching")
        scan = daemon.events("scan")[0]["message"]
        print(
            f"start-up over {args.rendered:,} rendered runs: {ready - started:.2f}s to watching "
            f"({scan})"
        )
        extra = log_run(runs_dir, "one-more", 1000)  # starts the workers
        extra.close()
        wait_rendered(extra.path)
        peak = daemon.rss_mb()
        daemon.wait_for("workers_refreshed")
        time.sleep(2)
        before, clock = daemon.cpu_seconds(), time.monotonic()
        time.sleep(10)
        idle = (daemon.cpu_seconds() - before) / (time.monotonic() - clock) * 100
        print(f"idle CPU over 10s: {idle:.2f}% of one core")
        print(
            f"resident memory, daemon and workers: {daemon.rss_mb():.0f} MB when idle "
            "(after --idle-restart) "
            f"({len(daemon.family())} processes), {peak:.0f} MB just after a render"
        )
        rerenders = len(daemon.events("rendered")) - 1
        print(f"re-renders of already rendered runs: {rerenders}")
        daemon.stop()


if __name__ == "__main__":
    main()
