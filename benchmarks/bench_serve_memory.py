"""`lossreport serve`'s peak memory while concurrent requests ask for the charts of a run not
read yet: a Hugging Face Trainer output whose trainer_state.json is about 100 MB.

    python benchmarks/bench_serve_memory.py [--steps 600000] [--requests 3] [--code DIR]

The run is written first; then a fresh process runs the server (delivery/serve.py's
`RunsServer`, on loopback) and `--requests` clients at once, each asking `/.api/series` for
the run, and prints their times, how many times the run was read, and the process's peak
resident memory (VmHWM). `--code`: the `watcher/` folder of the checkout to measure
(default: this one), so the same run can be measured under two versions.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # tests.support, after --code

from tests.support.trainer_state import write_trainer_output  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600_000)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--code", type=Path, default=ROOT / "watcher")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.serve is not None:
        measure(args.serve, args.requests)
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        run = write_trainer_output(runs / "hf-run", args.steps)
        size = (run / "trainer_state.json").stat().st_size
        print(f"trainer_state.json: {size / 2**20:.1f} MiB, {args.steps:,} steps", flush=True)
        command = [sys.executable, __file__, "--serve", str(runs), "--requests", str(args.requests)]
        subprocess.run(
            command, check=True, env={**os.environ, "PYTHONPATH": str(args.code.resolve())}
        )


def measure(runs: Path, requests: int) -> None:
    import lossreport
    from lossreport.delivery.serve import RunsServer, RunsSite

    print(f"code: {Path(lossreport.__file__).parent}")

    reads: list[str] = []

    class Reads(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("read "):
                reads.append(record.getMessage())

    series_log = logging.getLogger("lossreport.browse.series")
    series_log.setLevel(logging.DEBUG)
    series_log.addHandler(Reads())
    before = _peak_mib()
    server = RunsServer(("127.0.0.1", 0), RunsSite(runs))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    # Every connection is accepted (and its thread waiting for the request) before any
    # request is sent, so that all of them ask while the run is not read yet, whatever the
    # scheduling: a read holds the GIL for seconds, and could keep the server from accepting.
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=600) for _ in range(requests)]
    time.sleep(0.5)  # the server's accept loop is idle: each is accepted in microseconds
    request = (
        b"GET /.api/series?run=hf-run&loss=loss&width=1000 HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    times: list[float] = []

    def ask(sock: socket.socket) -> None:
        started = time.monotonic()
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(2**16), b""))
        assert answer.startswith(b"HTTP/1.0 200"), answer[:100]
        times.append(time.monotonic() - started)

    threads = [threading.Thread(target=ask, args=(sock,)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.shutdown()
    peak = _peak_mib()
    print(f"{requests} concurrent requests: " + ", ".join(f"{t:.1f}s" for t in times))
    print(f"reads of the run: {len(reads)}")
    print(f"peak RSS: {peak:.0f} MiB (before serving: {before:.0f} MiB)")


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main()
