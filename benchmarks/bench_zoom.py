"""The zoomable charts' data (`/.api/series`): what one answer costs for a million-step run,
cold and warm, in process and through a real `lossreport serve` on loopback.

    python benchmarks/bench_zoom.py [--repeats 20] [--cold-repeats 3] [--steps 1000000]
        [--width 1000]

Writes one run (run.json and ten Parquet shards of --steps/10 rows, 4 losses, in the
documented format) into a temporary folder, then times the answer for three ranges: the whole
run, a 10% zoom and a 100-step zoom (every point, exact):

1. In process (`run_view.series`, the function `serve` calls): cold, the first answer of a
   fresh cache (the run read and converted; median of --cold-repeats), and warm, the same
   request again (median of --repeats; the target is under 100 ms).
2. Its peer: no cache, the run read again for each request (`read_losses` plus the same
   reduction), which is what the cache saves; printed as a ratio.
3. Through HTTP against a `lossreport serve` subprocess on 127.0.0.1: cold (the first request
   to a fresh server, which is started --cold-repeats times) and warm (median of --repeats).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa

from lossreport import runformat, sources
from lossreport.browse import run_view
from lossreport.browse.series import SeriesCache, window
from lossreport.runformat import COMPLETED, RunRecord

LOSSES = ("mse_loss", "l1_loss", "auxiliary_reconstruction_loss", "overall_loss")
TARGET_MS = 100.0
RUN = "bench-zoom"


def write_run(runs_dir: Path, steps: int) -> Path:
    """A completed run of `steps` steps of 4 noisy, falling losses, in ten shards."""
    run_dir = runs_dir / RUN
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    record = RunRecord(run_id=RUN, model="gpt2-small", hook="blocks.8.hook_resid_pre")
    record.status = COMPLETED
    record.finished_at = record.started_at
    runformat.write_run_file(run_dir, record)
    rng = np.random.default_rng(0)
    rows = max(1, steps // 10)
    for seq, first in enumerate(range(0, steps, rows)):
        step = np.arange(first, min(first + rows, steps), dtype=np.int64)
        base = 1.0 / np.sqrt(step + 1.0)
        columns = {
            name: scale * base * (1 + 0.02 * rng.standard_normal(step.size))
            for scale, name in enumerate(LOSSES, start=1)
        }
        table = pa.table(
            {runformat.STEP: step, runformat.WALL_TIME: np.full(step.size, 1.7e9), **columns}
        )
        runformat.write_shard(run_dir, seq, table)
    return run_dir


def ranges(steps: int) -> dict[str, dict[str, str]]:
    """The query parameters (besides run, loss, width) of each range timed."""
    middle = int(steps * 0.734)
    tenth = max(steps // 10, 1)
    return {
        "whole run": {},
        "10% zoom": {"start": str(middle - tenth // 2), "end": str(middle + tenth // 2)},
        "100-step zoom": {"start": str(middle), "end": str(middle + 99)},
    }


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_ms(action: Callable[[], object], repeats: int) -> float:
    return statistics.median(timed(action) for _ in range(repeats)) * 1e3


def uncached(run_dir: Path, params: dict[str, str], width: int) -> dict[str, object]:
    """The peer: the run read again, then the same reduction."""
    source = sources.find(run_dir)
    assert source is not None
    table = source.read_losses(run_dir).table
    steps = table.column(runformat.STEP).to_numpy()
    values = table.column(LOSSES[0]).to_numpy(zero_copy_only=False).astype(np.float64)
    start = float(params.get("start", steps[0]))
    end = float(params.get("end", steps[-1]))
    return window(steps, values, start, end, width)


def in_process(runs_dir: Path, steps: int, width: int, repeats: int, cold_repeats: int) -> None:
    print(f"in process (run_view.series), {steps:,} steps, width {width}:")
    print(
        f"  {'range':<15}{'points':>8}{'cold ms':>10}{'warm ms':>10}{'no cache ms':>13}{'ratio':>8}"
    )
    for label, extra in ranges(steps).items():
        _in_process_range(runs_dir, label, extra, width, repeats, cold_repeats)


def _in_process_range(
    runs_dir: Path, label: str, extra: dict[str, str], width: int, repeats: int, cold_repeats: int
) -> None:
    params = {"run": [RUN], "loss": [LOSSES[0]], "width": [str(width)]}
    params |= {name: [value] for name, value in extra.items()}

    def answer(cache: SeriesCache) -> bytes:
        reply = run_view.series(runs_dir, cache, params)
        assert reply.status == 200, reply.body
        return reply.body

    cold = statistics.median(timed(lambda: answer(SeriesCache())) for _ in range(cold_repeats))
    cache = SeriesCache()
    body = answer(cache)
    warm = median_ms(lambda: answer(cache), repeats)
    run_dir = runs_dir / RUN
    peer = statistics.median(
        timed(lambda: uncached(run_dir, extra, width)) for _ in range(cold_repeats)
    )
    points = len(json.loads(body)["points"])
    target = "" if warm < TARGET_MS else f"  (over the {TARGET_MS:.0f} ms target)"
    print(
        f"  {label:<15}{points:>8,}{cold * 1e3:>10.1f}{warm:>10.2f}{peer * 1e3:>13.1f}"
        f"{peer * 1e3 / warm:>7.0f}x{target}"
    )


@contextmanager
def serving(runs_dir: Path, log: Path) -> Iterator[int]:
    """A `lossreport serve` subprocess on a free loopback port; yields the port."""
    command = [sys.executable, "-m", "lossreport", "--log-format", "json", "serve"]
    with log.open("w") as handle:
        process = subprocess.Popen(
            [*command, str(runs_dir), "--port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while (port := _bound_port(log)) is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"lossreport serve did not start:\n{log.read_text()}")
                time.sleep(0.02)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


def _bound_port(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "serving":
            return int(event["port"])
    return None


def fetch(connection: http.client.HTTPConnection, path: str) -> bytes:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body!r}")
    return body


def over_http(runs_dir: Path, steps: int, width: int, repeats: int, cold_repeats: int) -> None:
    print(f"through HTTP (lossreport serve on 127.0.0.1), width {width}:")
    print(f"  {'range':<15}{'bytes':>9}{'cold ms':>10}{'warm ms':>10}")
    for label, extra in ranges(steps).items():
        path = "/.api/series?" + urlencode({"run": RUN, "loss": LOSSES[0], "width": width, **extra})
        colds = [_first_answer(runs_dir, path) for _ in range(cold_repeats)]
        with serving(runs_dir, runs_dir.parent / "serve.log") as port:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            body = fetch(connection, path)
            warm = median_ms(partial(fetch, connection, path), repeats)
            connection.close()
        print(f"  {label:<15}{len(body):>9,}{statistics.median(colds) * 1e3:>10.1f}{warm:>10.2f}")


def _first_answer(runs_dir: Path, path: str) -> float:
    """Seconds for the first request to a fresh server: the run not yet read."""
    with serving(runs_dir, runs_dir.parent / "serve.log") as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            return timed(partial(fetch, connection, path))
        finally:
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="warm requests timed")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold loads timed")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=1000, help="pixel columns asked for")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        runs_dir = Path(temporary) / "runs"
        runs_dir.mkdir()
        started = time.perf_counter()
        write_run(runs_dir, args.steps)
        print(
            f"wrote {args.steps:,} steps x {len(LOSSES)} losses in "
            f"{time.perf_counter() - started:.1f} s"
        )
        in_process(runs_dir, args.steps, args.width, args.repeats, args.cold_repeats)
        over_http(runs_dir, args.steps, args.width, args.repeats, args.cold_repeats)


if __name__ == "__main__":
    main()
