"""The `lossreport` command: parses arguments, sets up logging, calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, rundir
from .errors import LossReportError


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
    return parser


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
