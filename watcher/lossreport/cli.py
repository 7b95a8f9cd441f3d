"""The `lossreport` command: parses arguments, sets up logging, calls one library function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, rundir, stats
from .errors import LossReportError
from .progress import Progress

if TYPE_CHECKING:
    from .render import RenderResult


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    return parser


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
