"""The daemon's start-up over a large tree of runs that are all rendered already.

    python benchmarks/bench_startup.py [--runs 100000] [--fixture DIR] [--repeats 3]
                                       [--syscalls 1000] [--restarts-only] [--cold]

The fixture (tests.support.rendered) is shaped as a real cluster's: run ids
made by the id function `start_run` uses by default (about 65 characters, a random part), in
one flat runs directory as `start_run` lays them out; long and non-ASCII model names; six
config keys; statuses as a sweep ends (completed, failed; stalled runs with an old heartbeat and
their stall alert; running ones with a fresh heartbeat, never rendered, about 200: those of
the newest 4,000 runs); each run a run.json, one small shard and the render marker a
daemon's render leaves (its fingerprint of the inputs, its index row with three 60-point
overview curves). Written through the project's own runformat helpers (no fsync), not
rendered: a start never opens the charts. Kept under --fixture (made once, reused while its
heartbeats are fresh enough), so repeated runs do not build it again.

The real `lossreport watch` (2 workers) then starts over it, timed to its "watching" log line:
the first start (no catalog: every run is listed in a new one), then restarts with the
catalog there (median of --repeats). For each: re-renders (must be 0), the peak resident
memory (VmHWM) of the daemon and its workers, and its own start-up summary. Then the system
calls of a restart, and of a first start, over --syscalls runs (`strace -f -c`), per run:
on NFS each is a round trip. With --restarts-only, the catalog a run before left is kept
(restarts only). With --cold (root only), the kernel's page, inode and directory caches are
dropped before the first start, as after a reboot or on a tree nobody read lately: each of its
files is then a disk read (on NFS, a round trip). Each figure is printed beside the one before
(for 10,000 runs: before the first start's fill without query indexes and the four-lstat
stamps; for 100,000: before the render marker carried its packed row; else before issue 27)
and the target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's generators

from daemon_process import Daemon

from lossreport import runformat
from tests.support.rendered import rendered_runs

MAX_RUNNING = 200  # runs training now: the newest runs' "running" statuses, about 1 in 20
STALE_AFTER_DAYS = 30  # --stale-after: "running" runs stay running while the fixture is reused
# Before, by fixture size (docs/benchmarks.md, this 2-core machine): at 10,000 runs, before
# the first start's fill without query indexes and the four-lstat stamps (load average 3-7);
# at 100,000, before the marker carried its packed row (7827995, warm cache, idle VM); other
# sizes: the notes of the browsing work at 100,000 runs, before issue 27.
BEFORE = {
    10_000: {"first": "17.3 s", "restart": "2.3 s", "rss": "192 MB", "rerenders": "0"},
    100_000: {"first": "60.0 s", "restart": "3.2 s", "rss": "219 MB", "rerenders": "0"},
}
BEFORE_ISSUE = {"first": "91 s", "restart": "42 s", "rss": "-", "rerenders": "0"}
# With --cold at 100,000 runs, before the prefetcher (daemon/prefetch.py), on an idle VM.
BEFORE_COLD = {"first": "205.0 s", "restart": "33.1 s", "rss": "258 MB", "rerenders": "0"}
# System calls a run over the 1,000-run fixture (1 run in 5 trains there, read in full).
BEFORE_SYSCALLS = {"first": "100.7", "restart": "41.9"}
TARGET = {"first": "30 s", "restart": "5 s", "rss": "300 MB", "rerenders": "0"}
FORMAT_VERSION = 5  # of the fixture: a fixture of another version is made again


def fixture(root: Path, count: int) -> Path:
    """The runs directory of `count` rendered runs under `root`, made unless kept there."""
    runs_dir = root / f"runs-{count}"
    stamp = root / f"runs-{count}.json"
    if stamp.exists():
        made = json.loads(stamp.read_text())
        fresh = time.time() - made["at"] < (STALE_AFTER_DAYS - 1) * 86400
        if made["version"] == FORMAT_VERSION and fresh:
            return runs_dir
    shutil.rmtree(runs_dir, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rendered_runs(runs_dir, count, running_from=count - MAX_RUNNING * 20)
    stamp.write_text(json.dumps({"version": FORMAT_VERSION, "at": time.time()}))
    print(f"made {count:,} rendered runs in {time.perf_counter() - started:.0f} s", flush=True)
    return runs_dir


def drop_state(runs_dir: Path) -> None:
    """What a daemon keeps in the runs directory (catalog, index): a first start has none."""
    shutil.rmtree(runs_dir / runformat.CATALOG_DIR, ignore_errors=True)
    (runs_dir / runformat.INDEX_FILE).unlink(missing_ok=True)


def start(runs_dir: Path, log_dir: Path, traced: bool = False) -> dict[str, Any]:
    """One start of the daemon up to "watching": its time, re-renders, peak memory, summary."""
    started = time.monotonic()
    daemon = Daemon(runs_dir, "--stale-after", f"{STALE_AFTER_DAYS * 24}h", log_dir=log_dir)
    try:
        ready = daemon.wait_for("watching", timeout=1800)
        peak = daemon.main_peak_mb() + sum(daemon.peaks_mb().values())
        watches = inotify_watches(daemon.process.pid)
        scan = daemon.events("scan")
        figures = {
            "seconds": ready - started,
            "rerenders": len(daemon.events("render_started")),
            "rss": peak,
            "summary": scan[0]["message"] if scan else "?",
            "events_lost": len(daemon.events("events_lost")),
            "watches": watches,
        }
    finally:
        if traced:  # SIGTERM to the daemon under strace, which then writes its counts
            os.kill(daemon.family()[1], signal.SIGTERM)
            daemon.process.wait(timeout=120)
        else:
            daemon.stop()
    return figures


def inotify_watches(pid: int) -> int:
    """The inotify watches process `pid` holds (the `inotify wd:` lines of its fdinfo)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:inotify":
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                count += sum(line.startswith("inotify wd:") for line in info.splitlines())
        except OSError:
            continue
    return count


def syscalls(runs_dir: Path, log_dir: Path, count: int) -> tuple[float, float]:
    """System calls per run of a first start and of a restart over `count` runs."""
    strace = shutil.which("strace")
    if strace is None:
        return float("nan"), float("nan")
    counts = []
    for first in (True, False):
        if first:
            drop_state(runs_dir)
        out = log_dir / f"strace-{'first' if first else 'again'}.txt"
        wrapper = log_dir / "strace-python"
        wrapper.write_text(f'#!/bin/sh\nexec {strace} -f -c -o {out} {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        original = sys.executable
        sys.executable = str(wrapper)  # Daemon starts `sys.executable -m lossreport`
        try:
            start(runs_dir, log_dir, traced=True)
        finally:
            sys.executable = original
        total = re.search(r"^\S+\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total$", out.read_text(), re.M)
        counts.append(int(total.group(1)) / count if total else float("nan"))
    return counts[0], counts[1]


def row(label: str, now: str, before: str, target: str) -> None:
    print(f"  {label:44} {now:>10} {before:>10} {target:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--fixture", type=Path, help="where the fixture is kept (default: tmp)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--syscalls", type=int, default=1000, help="runs; 0: not counted")
    parser.add_argument(
        "--restarts-only",
        action="store_true",
        help="keep the catalog an earlier run left in the fixture: no first start",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the kernel's caches before the first start (root only)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        root = args.fixture or Path(name)
        runs_dir = fixture(root, args.runs)
        logs = Path(name)
        if not args.restarts_only:
            drop_state(runs_dir)
        if args.cold:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        first = start(runs_dir, logs)  # with --restarts-only, one more restart
        again = [start(runs_dir, logs) for _ in range(args.repeats)]
        before = BEFORE.get(args.runs, BEFORE_ISSUE)
        print(f"\ndaemon start-up over {args.runs:,} rendered runs (to 'watching', 2 workers)")
        row("", "now", "before", "target")
        first_label = "one more restart" if args.restarts_only else "first start (no catalog)"
        first_label += ", cold cache" if args.cold else ""
        kind = "restart" if args.restarts_only else "first"
        cold_before = BEFORE_COLD if args.cold and args.runs == 100_000 else None
        first_before = (cold_before or before)[kind]
        row(first_label, f"{first['seconds']:.1f} s", first_before, TARGET[kind])
        restart = statistics.median(figures["seconds"] for figures in again)
        row(f"restart, median of {len(again)}", f"{restart:.1f} s", before["restart"],
            TARGET["restart"])  # fmt: skip
        rerenders = first["rerenders"] + sum(figures["rerenders"] for figures in again)
        row("re-renders, all starts", str(rerenders), before["rerenders"], TARGET["rerenders"])
        rss = max([first["rss"], *(figures["rss"] for figures in again)])
        row("peak RSS, daemon + workers, worst start", f"{rss:.0f} MB", before["rss"],
            TARGET["rss"])  # fmt: skip
        print(f"  first start:  {first['summary']}")
        print(f"  restart:      {again[-1]['summary'] if again else '-'}")
        lost = first["events_lost"] + sum(figures["events_lost"] for figures in again)
        print(f"  inotify overflows logged: {lost}")
        watches = max([first["watches"], *(figures["watches"] for figures in again)])
        print(f"  inotify watches held at 'watching', most: {watches:,}")
        if args.syscalls:
            small = fixture(root, args.syscalls)
            per_first, per_again = syscalls(small, logs, args.syscalls)
            print(f"\nsystem calls per run over {args.syscalls:,} runs (strace -f -c)")
            known = args.syscalls == 1000  # the fixture the figures before were taken on
            row("first start", f"{per_first:.1f}", BEFORE_SYSCALLS["first"] if known else "-", "-")
            row("restart", f"{per_again:.1f}", BEFORE_SYSCALLS["restart"] if known else "-", "-")


if __name__ == "__main__":
    main()
