"""The `lossreport` command: parses arguments, sets up logging, calls one library function."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, logformat, rundir, stats
from .errors import LossReportError
from .progress import Progress

if TYPE_CHECKING:
    from .render import RenderResult


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logformat.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    try:
        return int(args.handler(args))
    except LossReportError as exc:
        print(f"lossreport: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossreport", description="Record training losses and turn runs into loss reports."
    )
    parser.add_argument("--version", action="version", version=f"lossreport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object a line, for log shippers",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="print a run's status and what its shards hold")
    show.add_argument("run", type=Path, help="a run directory")
    show.set_defaults(handler=_show)

    render = commands.add_parser(
        "render", help="write the report of each run (or of every run in a runs directory)"
    )
    render.add_argument(
        "paths", nargs="+", type=Path, metavar="RUN", help="a run directory, or a directory of runs"
    )
    render.set_defaults(handler=_render)

    watch = commands.add_parser(
        "watch", help="render each run of RUNS_DIR when it completes, fails or stalls"
    )
    watch.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    watch.add_argument(
        "--poll",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="poll instead of inotify (default: only on network filesystems)",
    )
    watch.add_argument("--poll-interval", type=duration, default=5.0, metavar="DURATION")
    watch.add_argument(
        "--rescan-every",
        type=duration,
        default=300.0,
        metavar="DURATION",
        help="full scan to catch missed events (default 5m)",
    )
    watch.add_argument(
        "--stale-after",
        type=duration,
        default=600.0,
        metavar="DURATION",
        help="render a running run as stalled after this long without a heartbeat (default 10m)",
    )
    watch.add_argument(
        "--live-every",
        type=duration,
        default=None,
        metavar="DURATION",
        help="also re-render running runs this often",
    )
    watch.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="render processes (default: the number of cores)",
    )
    watch.add_argument(
        "--idle-restart",
        type=duration,
        default=60.0,
        metavar="DURATION",
        help="replace render workers after this long without renders, giving back the "
        "memory charts took (default 1m)",
    )
    watch.add_argument(
        "--once", action="store_true", help="render whatever is pending, then exit (for cron)"
    )
    watch.set_defaults(handler=_watch)

    demo = commands.add_parser(
        "demo", help="watch RUNS_DIR, train the three example SAEs into it, print their reports"
    )
    demo.add_argument("runs_dir", type=Path, nargs="?", default=Path("runs"), metavar="RUNS_DIR")
    demo.add_argument("--steps", type=int, default=2000, help="training steps per SAE")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    reports = run_demo(args.runs_dir, steps=args.steps)
    print("Reports rendered by the daemon:")
    for path in reports:
        print(f"  - {path}")
    print(f"Index of all runs: {args.runs_dir / 'index.html'}")
    return 0


def duration(text: str) -> float:
    """Seconds from `300`, `30s`, `10m` or `2h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (seconds, or a number with s, m or h)"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    return seconds


def _watch(args: argparse.Namespace) -> int:
    from .watch import Watcher, WatchOptions

    options = WatchOptions(
        poll=args.poll,
        poll_interval=args.poll_interval,
        rescan_every=args.rescan_every,
        stale_after=args.stale_after,
        live_every=args.live_every,
        workers=args.workers,
        idle_restart=args.idle_restart,
        once=args.once,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return Watcher(args.runs_dir, options, stop).run()


def _render(args: argparse.Namespace) -> int:
    from .vega import ChartRenderer

    runs = [run for path in args.paths for run in _runs_under(path)]
    # The helper process starts first, so it warms up while the charting modules import.
    with ChartRenderer(helper=(os.cpu_count() or 1) > 1) as renderer:
        from .render import render_run  # heavy imports that only this command needs

        if len(runs) == 1:
            _print_single(render_run(runs[0], renderer=renderer))
            return 0
        progress = Progress(len(runs), sys.stderr if sys.stderr.isatty() else sys.stdout)
        failed = 0
        for run_dir in runs:
            started = time.monotonic()
            try:
                result = render_run(run_dir, renderer=renderer)
            except (LossReportError, OSError) as exc:
                failed += 1
                progress.advance(f"FAILED {run_dir}: {exc}")
                continue
            note = f" ({len(result.problems)} inputs skipped)" if result.problems else ""
            progress.advance(f"{result.report} in {time.monotonic() - started:.1f}s{note}")
    print(f"Rendered {len(runs) - failed} of {len(runs)} runs.")
    return 1 if failed else 0


def _runs_under(path: Path) -> list[Path]:
    """`path` itself if it is a run directory, else the run directories directly inside it."""
    if rundir.looks_like_run(path):
        return [path]
    if not path.is_dir():
        raise LossReportError(f"{path}: not a directory")
    runs = sorted(child for child in path.iterdir() if rundir.looks_like_run(child))
    if not runs:
        raise LossReportError(f"{path}: no runs here (a run has run.json or losses/)")
    return runs


def _print_single(result: RenderResult) -> None:
    charts = [path for path in result.charts]
    print(f"Generated {len(charts)} loss graph files:")
    for path in charts:
        print(f"  - {path}")
    print(f"Saved loss history CSV to: {result.csv}")
    print(f"Saved summary to: {result.summary}")
    print(f"Saved HTML report to: {result.report}")
    for problem in result.problems:
        print(f"Skipped: {problem}")
    print()
    print(stats.console_summary(result.stats))


def _show(args: argparse.Namespace) -> int:
    run_dir: Path = args.run
    if not run_dir.is_dir():
        raise LossReportError(f"{run_dir}: not a directory")
    record = rundir.read_run_file(run_dir)
    data = rundir.read_losses(run_dir)
    print(f"run:    {record.run_id} ({record.status})")
    print(f"model:  {record.model}   hook: {record.hook}   architecture: {record.architecture}")
    print(f"rows:   {data.table.num_rows}   losses: {', '.join(data.loss_names) or '(none)'}")
    if record.error:
        print(f"error:  {record.error}")
    for problem in data.skipped:
        print(f"skipped: {problem}")
    return 0
