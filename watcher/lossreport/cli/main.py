"""The `lossreport` command: parses arguments, sets up logging, calls one library function."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import logformat, runformat, sources
from ..alerts.rules import AlertRules
from ..browse.series import CACHE_BYTES
from ..catalog.places import checked_host, place_of
from ..catalog.urls import CatalogServer, checked_url
from ..clock import utc_time
from ..daemon.options import MAX_WORKERS, ONCE_FINISHED, ONCE_LIVE, WatchOptions
from ..delivery.mailjob import MailJob
from ..delivery.smtp import PASSWORD_ENV, SmtpSettings
from ..delivery.webhook import DEADLINE_SECONDS as WEBHOOK_DEADLINE_SECONDS
from ..delivery.webhook import TOKEN_ENV, URL_ENV, WebhookSettings, check_url, secret_part
from ..errors import ConfigError, InvalidInputError, LossReportError, RunDirectoryError
from ..report import stats
from ..sources.base import quiet_status
from ..sources.series import MAX_CHARTS, MOST_CHARTS, SeriesFilter
from ..storage.budget import budget_bytes
from ..storage.lease import DEFAULT_LEASE_SECONDS
from ..storage.mirror import Mirror
from ..version import __version__
from . import config, paths, stores
from .progress import Progress

if TYPE_CHECKING:
    from ..report.render import RenderResult

logger = logging.getLogger(__name__)
# A render by another process takes seconds; anyone who can read a run's lock file can hold it
# for ever, so a command gives up on that run after this long.
LOCK_WAIT_SECONDS = 30.0
# A stopping daemon on an object store waits this long for its last reports to be uploaded.
UPLOAD_WAIT_SECONDS = 60.0
DEMO_MAX_STEPS = 1_000_000  # the example SAEs learn in a few thousand
CONFIG_DOCS = "docs/configuration.md"
SERVE_PORT = 8000
DURATIONS = "DURATION is 300, 30s, 10m or 2h: seconds, from 0.1s to 365 days."
# Flags default to what the library does unasked, so the two cannot drift apart.
WATCH = WatchOptions()
SMTP = SmtpSettings()


def main(argv: Sequence[str] | None = None) -> int:
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument("--config", type=Path)
    path = config_flag.parse_known_args(argv)[0].config
    try:
        settings = config.load(path) if path is not None else {}
    except ConfigError as exc:
        print(f"lossreport: {exc}", file=sys.stderr)
        return 2
    args = _parser(settings).parse_args(argv)
    logformat.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    try:
        budget_bytes()  # a bad LOSSREPORT_READ_BUDGET stops the command now, not each read
        return int(args.handler(args))
    except LossReportError as exc:  # a sentence naming what is wrong: no class name
        print(f"lossreport: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a one-line error, not a traceback; -v logs the traceback
        logger.debug("the command failed", exc_info=True)
        hint = "" if args.verbose else " (-v shows the traceback)"
        print(f"lossreport: {_one_line(exc)}{hint}", file=sys.stderr)
        return 1


def _parser(settings: dict[str, Any]) -> argparse.ArgumentParser:
    """The command line; `settings` (from --config) are the defaults of the flags they name."""
    parser = argparse.ArgumentParser(
        prog="lossreport",
        description="Record training losses and turn runs into loss reports.",
        allow_abbrev=False,
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
    show.add_argument(
        "run", type=stores.location, help="a run directory, or a run's s3://bucket/prefix"
    )
    show.set_defaults(handler=_show)

    render = commands.add_parser(
        "render", help="write the report of each run (or of every run in a runs directory)"
    )
    render.add_argument(
        "paths",
        nargs="+",
        type=stores.location,
        metavar="RUN",
        help="a run folder (lossreport's, TensorBoard's, Lightning's, a Hugging Face Trainer's "
        "or MLflow's), or a folder with runs in it at any depth; or an s3://bucket/prefix "
        "holding either (the reports are written back beside the runs)",
    )
    render.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="write the reports under DIR instead of into the runs' folders (for runs you "
        "cannot write to): a run's report goes to DIR/<its path under RUN>/loss_graphs/ "
        "(a RUN that is a run itself, given with others: DIR/<its folder name>/loss_graphs/); "
        "DIR is made if missing",
    )
    _add_series_arguments(render, settings)
    render.set_defaults(handler=_render)

    watch = commands.add_parser(
        "watch",
        help="render each run of RUNS_DIR when it completes, fails or stalls",
        epilog=DURATIONS,
    )
    watch.add_argument(
        "runs_dir",
        type=stores.location,
        metavar="RUNS_DIR",
        help="a folder, or an s3://bucket/prefix (polled; credentials and endpoint from the "
        "AWS environment variables and config files)",
    )
    watch.add_argument(
        "--poll",
        action=argparse.BooleanOptionalAction,
        default=settings.get("poll", WATCH.poll),
        help="poll instead of inotify (default: only on network filesystems)",
    )
    watch.add_argument(
        "--poll-interval",
        type=duration,
        default=settings.get("poll_interval"),
        metavar="DURATION",
        help="how often polling looks for changes (default "
        f"{_human(WATCH.poll_interval)}; {_human(stores.POLL_SECONDS)} for an object store)",
    )
    watch.add_argument(
        "--rescan-every",
        type=duration,
        default=settings.get("rescan_every", WATCH.rescan_every),
        metavar="DURATION",
        help=f"full scan to catch missed events (default {_human(WATCH.rescan_every)})",
    )
    watch.add_argument(
        "--stale-after",
        type=duration,
        default=settings.get("stale_after", WATCH.stale_after),
        metavar="DURATION",
        help="render a running run as stalled after this long without a heartbeat "
        f"(default {_human(WATCH.stale_after)})",
    )
    watch.add_argument(
        "--live-every",
        type=duration,
        default=settings.get("live_every", WATCH.live_every),
        metavar="DURATION",
        help="also re-render running runs this often",
    )
    watch.add_argument(
        "--workers",
        type=_int_flag(1, MAX_WORKERS),
        default=settings.get("workers", WATCH.workers),
        metavar="N",
        help=f"render processes, 1 to {MAX_WORKERS} (default: the number of cores)",
    )
    watch.add_argument(
        "--idle-restart",
        type=duration,
        default=settings.get("idle_restart", WATCH.idle_restart),
        metavar="DURATION",
        help="replace render workers after this long without renders, giving back the "
        f"memory charts took (default {_human(WATCH.idle_restart)})",
    )
    watch.add_argument(
        "--stop-wait",
        type=duration,
        default=settings.get("stop_wait", WATCH.stop_wait),
        metavar="DURATION",
        help="on SIGTERM or Ctrl-C, let renders in progress finish for this long, then stop "
        f"their workers (default {_human(WATCH.stop_wait)})",
    )
    watch.add_argument(
        "--once",
        action="store_true",
        help="render (and mail) whatever is pending, then exit (for cron); each run left "
        "unrendered is logged with why",
    )
    watch.add_argument(
        "--once-foreign",
        choices=[ONCE_LIVE, ONCE_FINISHED],
        default=settings.get("once_foreign", WATCH.once_foreign),
        help="with --once, runs of tools that record no end (TensorBoard, Lightning...): "
        f"{ONCE_LIVE} renders each whose files are not being written now, as running until "
        f"--stale-after of silence; {ONCE_FINISHED} waits for --stale-after of silence, as "
        f"the daemon does (default {WATCH.once_foreign})",
    )
    watch.add_argument(
        "--output",
        type=Path,
        default=settings.get("output", WATCH.output),
        metavar="DIR",
        help="for runs whose folders this user cannot write (another user's logs), and every "
        "run of an s3:// RUNS_DIR: write their reports under DIR, mirroring the runs tree; the "
        "runs index and the mail outbox go to DIR too; DIR is made if missing",
    )
    _add_store_arguments(watch, settings)
    _add_catalog_argument(watch, settings, "this daemon writes its runs' rows there")
    watch.add_argument(
        "--lease",
        type=duration,
        default=settings.get("lease", DEFAULT_LEASE_SECONDS),
        metavar="DURATION",
        help="on an object store: how long a daemon's claim on a run it renders lasts, so "
        f"that other daemons leave it alone (default {_human(DEFAULT_LEASE_SECONDS)})",
    )
    _add_series_arguments(watch, settings)
    _add_config_argument(watch)
    _add_mail_arguments(watch, settings, "--email-to", "each finished run's summary")
    _add_alert_arguments(watch, settings)
    watch.set_defaults(handler=_watch)

    email = commands.add_parser(
        "email", help="render a run and mail its summary now", epilog=DURATIONS
    )
    email.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    _add_config_argument(email)
    _add_mail_arguments(email, settings, "--to", "the run's summary")
    email.set_defaults(handler=_email)

    serve = commands.add_parser(
        "serve", help="serve the runs index and every run's report, read-only, over HTTP"
    )
    serve.add_argument(
        "runs_dir", type=stores.location, metavar="RUNS_DIR", help="a folder or s3://bucket/prefix"
    )
    serve.add_argument(
        "--output",
        type=Path,
        default=settings.get("output"),
        metavar="DIR",
        help="the daemon's --output: where the reports of runs it could not write are",
    )
    serve.add_argument(
        "--host",
        default=settings.get("host", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1: reach it through an SSH tunnel)",
    )
    serve.add_argument(
        "--port",
        type=_int_flag(0, config.MAX_PORT),
        default=settings.get("port", SERVE_PORT),
        help=f"0 to 65535; 0 picks a free port (default {SERVE_PORT})",
    )
    serve.add_argument(
        "--allow-host",
        dest="allow_host",
        action="append",
        type=_host_name,
        default=list(settings.get("allow_host", [])),
        metavar="NAME",
        help="answer requests for NAME too (a name this machine is reached by), besides "
        "localhost and the address listened on; repeatable",
    )
    serve.add_argument(
        "--cache-mb",
        type=_int_flag(1, config.MAX_CACHE_MB),
        default=settings.get("cache_mb", CACHE_BYTES // 2**20),
        metavar="MB",
        help="memory for the runs kept for the zoomable charts, least recently used dropped "
        f"first (default {CACHE_BYTES // 2**20})",
    )
    _add_store_arguments(serve, settings)
    _add_catalog_argument(serve, settings, "the index lists the runs there")
    serve.add_argument(
        "--poll-interval",
        type=duration,
        default=settings.get("poll_interval", stores.POLL_SECONDS),
        metavar="DURATION",
        help="on an object store: how often it is listed for changes "
        f"(default {_human(stores.POLL_SECONDS)})",
    )
    _add_config_argument(serve)
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", help="watch RUNS_DIR, train the three example SAEs into it, print their reports"
    )
    demo.add_argument(
        "runs_dir",
        type=Path,
        nargs="?",
        default=Path("runs"),
        metavar="RUNS_DIR",
        help="where the three example runs and their reports go (default ./runs)",
    )
    demo.add_argument(
        "--steps",
        type=_int_flag(1, DEMO_MAX_STEPS),
        default=2000,
        help=f"training steps per SAE, 1 to {DEMO_MAX_STEPS:,} (default 2000)",
    )
    demo.set_defaults(handler=_demo)
    for command in commands.choices.values():
        command.allow_abbrev = False  # else --smtp-password would pass as --smtp-password-file
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    reports = run_demo(args.runs_dir, steps=args.steps)
    print("Reports rendered by the daemon:")
    for path in reports:
        print(f"  - {path}")
    print(f"Index of all runs: {args.runs_dir / runformat.INDEX_FILE}")
    return 0


def _add_store_arguments(parser: argparse.ArgumentParser, settings: dict[str, Any]) -> None:
    parser.add_argument(
        "--mirror",
        type=Path,
        default=settings.get("mirror"),
        metavar="DIR",
        help="for an s3:// RUNS_DIR: where its runs' inputs are copied to be read "
        "(default $XDG_CACHE_HOME/lossreport/s3/BUCKET/PREFIX)",
    )


def _add_catalog_argument(
    parser: argparse.ArgumentParser, settings: dict[str, Any], what: str
) -> None:
    parser.add_argument(
        "--catalog",
        type=_catalog_url,
        default=settings.get("catalog"),
        metavar="URL",
        help=f"a team's runs catalog in PostgreSQL (postgresql://USER@HOST/DATABASE): {what}; "
        "the password from PGPASSWORD, a .pgpass file or the config's catalog_password_file, "
        "never in URL (default: SQLite, in the runs directory)",
    )
    parser.add_argument(
        "--catalog-host",
        type=_catalog_host,
        default=settings.get("catalog_host"),
        metavar="NAME",
        help="the host the catalog names this runs tree's place by (default: this host's "
        "name); daemons on several hosts sharing one tree over NFS give one name",
    )
    parser.set_defaults(catalog_password_file=settings.get("catalog_password_file"))


def _catalog_host(text: str) -> str:
    try:
        return checked_host(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--catalog-host ")) from None


def _catalog_url(text: str) -> str:
    try:
        return checked_url(text)
    except InvalidInputError as exc:  # its message hides the password: argparse shows it as is
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--catalog ")) from None


def _catalog_server(args: argparse.Namespace) -> CatalogServer | None:
    """The --catalog server, with the password from catalog_password_file (its first line),
    and the place of the runs tree (and --output) a daemon writes or a `serve` links."""
    if args.catalog is None:
        return None
    password = None
    if args.catalog_password_file is not None:
        try:
            password = args.catalog_password_file.read_text().splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise InvalidInputError(
                f"{args.catalog_password_file}: cannot read the catalog's password "
                f"({getattr(exc, 'strerror', None) or exc or 'empty'})"
            ) from None
    place = place_of(args.runs_dir, args.output, args.catalog_host)
    return CatalogServer(args.catalog, password, place)


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML file of settings; flags given here win (every key: {CONFIG_DOCS})",
    )


def _add_mail_arguments(
    parser: argparse.ArgumentParser, settings: dict[str, Any], recipients_flag: str, what: str
) -> None:
    group = parser.add_argument_group(
        "email",
        f"the SMTP password comes from ${PASSWORD_ENV} or --smtp-password-file, never a flag",
    )
    group.add_argument(
        recipients_flag,
        dest="email_to",
        action="append",
        type=_address,
        default=list(settings.get("email_to", [])),
        metavar="ADDR",
        help=f"mail {what} to ADDR, one address each (repeat for more)",
    )
    group.add_argument(
        "--email-from",
        type=_address,
        default=settings.get("email_from"),
        metavar="ADDR",
        help="sender (default lossreport@HOST)",
    )
    group.add_argument(
        "--smtp-host",
        default=settings.get("smtp_host", SMTP.host),
        metavar="HOST",
        help=f"the SMTP server (default {SMTP.host})",
    )
    group.add_argument(
        "--smtp-port",
        type=_int_flag(1, config.MAX_PORT),
        default=settings.get("smtp_port"),
        metavar="PORT",
        help="1 to 65535 (default 25, 587 with STARTTLS, 465 with SSL)",
    )
    security = group.add_mutually_exclusive_group()
    security.add_argument(
        "--smtp-starttls",
        dest="smtp_security",
        action="store_const",
        const="starttls",
        default=settings.get("smtp_security", SMTP.security),
        help="upgrade the connection with STARTTLS (default: plain SMTP, for a relay on "
        "this host or network)",
    )
    security.add_argument(
        "--smtp-ssl",
        dest="smtp_security",
        action="store_const",
        const="ssl",
        help="connect over TLS from the start (SMTPS)",
    )
    group.add_argument(
        "--smtp-user",
        default=settings.get("smtp_user"),
        metavar="USER",
        help="log in as USER (default: no login)",
    )
    group.add_argument(
        "--smtp-password-file",
        type=Path,
        default=settings.get("smtp_password_file"),
        metavar="FILE",
        help="file whose first line is the SMTP password",
    )
    group.set_defaults(smtp_password_env=settings.get("smtp_password_env", SMTP.password_env))
    group.add_argument(
        "--email-attach-csv",
        action=argparse.BooleanOptionalAction,
        default=settings.get("email_attach_csv", False),
        help="attach the loss history CSV (gzipped past 10 MB)",
    )
    group.add_argument(
        "--email-report-url",
        default=settings.get("email_report_url"),
        metavar="URL",
        help="where `lossreport serve` is reachable, to link each report from its mail",
    )
    group.add_argument(
        "--email-retry",
        type=duration,
        default=settings.get("email_retry", WATCH.mail_retry),
        metavar="DURATION",
        help="first retry of a failed send; doubles up to 1h, never gives up "
        f"(default {_human(WATCH.mail_retry)})",
    )
    group.add_argument(
        "--email-deadline",
        type=duration,
        default=settings.get("email_deadline", SMTP.deadline),
        metavar="DURATION",
        help="the longest one send may take, however slowly the server answers; then it is "
        f"retried (default {_human(SMTP.deadline)})",
    )


def _add_series_arguments(parser: argparse.ArgumentParser, settings: dict[str, Any]) -> None:
    group = parser.add_argument_group(
        "series",
        "which logged series are reported as losses (default: every scalar series but "
        "learning rates, epochs, gradient norms and throughput, which stay in the CSV)",
    )
    group.add_argument(
        "--series",
        action="append",
        type=_pattern,
        default=settings.get("series", []),
        metavar="PATTERN",
        help="report only series matching PATTERN (shell-style: 'train/*'), each as a loss "
        "('*': every series, learning rates too); repeatable",
    )
    group.add_argument(
        "--exclude-series",
        action="append",
        type=_pattern,
        default=settings.get("exclude_series", []),
        metavar="PATTERN",
        help="leave out series matching PATTERN ('*lr*', 'grad_norm'); repeatable",
    )
    group.add_argument(
        "--max-charts",
        type=_int_flag(1, MOST_CHARTS),
        default=settings.get("max_charts", MAX_CHARTS),
        metavar="N",
        help=f"draw at most N losses, those that matter first (default {MAX_CHARTS}); the rest "
        "are in the CSV and named in the report",
    )


def _pattern(text: str) -> str:
    try:
        return config.parse_pattern(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _series_filter(args: argparse.Namespace) -> SeriesFilter:
    return SeriesFilter(tuple(args.series), tuple(args.exclude_series), args.max_charts)


def _add_alert_arguments(parser: argparse.ArgumentParser, settings: dict[str, Any]) -> None:
    group = parser.add_argument_group(
        "alerts while runs train",
        "NaN/inf, divergence and silent trainers by default; rules in [alerts] of --config. "
        f"A webhook URL that holds a secret comes from ${URL_ENV}, a bearer token from "
        f"${TOKEN_ENV} or --alert-webhook-token-file, never a flag",
    )
    group.add_argument(
        "--alerts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check running runs and raise alerts (default: yes); alerts are logged, mailed "
        "with --email-to and posted with --alert-webhook",
    )
    group.add_argument(
        "--alert-webhook",
        type=_webhook_url,
        action=_WebhookFlag,
        default=settings.get("alert_webhook") or os.environ.get(URL_ENV) or None,
        metavar="URL",
        help="POST each alert as JSON (a `text` field and the details) to URL; one that looks "
        f"like it holds a secret is refused here: give it in ${URL_ENV}",
    )
    group.add_argument(
        "--alert-webhook-token-file",
        type=Path,
        default=settings.get("alert_webhook_token_file"),
        metavar="FILE",
        help="file whose first line is the webhook's bearer token",
    )
    group.add_argument(
        "--alert-webhook-deadline",
        type=duration,
        default=settings.get("alert_webhook_deadline", WEBHOOK_DEADLINE_SECONDS),
        metavar="DURATION",
        help="the longest one post may take, however slowly the webhook answers; then it is "
        f"retried (default {_human(WEBHOOK_DEADLINE_SECONDS)})",
    )
    group.set_defaults(alert_rules=settings.get(config.ALERT_DESTINATION, AlertRules()))


class _WebhookFlag(argparse.Action):
    """--alert-webhook given on the command line: refused where the URL looks like it holds
    a secret (`webhook.secret_part`), which `ps` and shell history would show. The same URL
    from the environment or a --config file (argparse's default) is not checked here."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:  # fmt: skip
        secret = secret_part(values)
        if secret is not None:
            parser.error(
                f"--alert-webhook: the URL holds what looks like a secret ({secret}), which "
                f"others can read in a process listing or shell history; give it in ${URL_ENV} "
                "or as `webhook` under [alerts] in a --config file"
            )
        setattr(namespace, self.dest, values)


def _webhook_url(text: str) -> str:
    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _human(seconds: float) -> str:
    return config.format_duration(seconds)


def _address(text: str) -> str:
    """One address, strictly (see config.parse_address): each becomes a mail header."""
    try:
        return config.parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected one email address, but {exc}") from None


def _host_name(text: str) -> str:
    try:
        return config.parse_host_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_flag(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high` (argparse names the flag)."""

    def check(text: str) -> int:
        try:
            return config.parse_int(text, low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _smtp_settings(args: argparse.Namespace) -> SmtpSettings:
    return SmtpSettings(
        host=args.smtp_host,
        port=args.smtp_port,
        security=args.smtp_security,
        user=args.smtp_user,
        password_file=args.smtp_password_file,
        password_env=args.smtp_password_env,
        deadline=args.email_deadline,
    )


def _webhook_settings(args: argparse.Namespace) -> WebhookSettings | None:
    if args.alert_webhook is None:
        return None
    return WebhookSettings(
        args.alert_webhook,
        token_file=args.alert_webhook_token_file,
        deadline=args.alert_webhook_deadline,
    )


def _mail_job(args: argparse.Namespace) -> MailJob | None:
    if not args.email_to:
        return None
    return MailJob(
        recipients=tuple(dict.fromkeys(args.email_to)),
        sender=args.email_from or f"lossreport@{socket.gethostname()}",
        attach_csv=args.email_attach_csv,
        report_url=args.email_report_url,
    )


def duration(text: str) -> float:
    """Seconds from `300`, `30s`, `10m` or `2h`, 0.1 s to 365 days (config.parse_duration)."""
    try:
        return config.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def poll_interval(args: argparse.Namespace) -> float:
    """--poll-interval, or its default for the kind of RUNS_DIR: a store's listing costs
    requests, a folder's a few stats."""
    if args.poll_interval is not None:
        return float(args.poll_interval)
    return WATCH.poll_interval if isinstance(args.runs_dir, Path) else stores.POLL_SECONDS


def _watch(args: argparse.Namespace) -> int:
    from ..daemon.watch import Watcher

    options = WatchOptions(
        poll=args.poll,
        poll_interval=poll_interval(args),
        rescan_every=args.rescan_every,
        stale_after=args.stale_after,
        live_every=args.live_every,
        workers=args.workers,
        idle_restart=args.idle_restart,
        stop_wait=args.stop_wait,
        once=args.once,
        once_foreign=args.once_foreign,
        mail=_mail_job(args),
        smtp=_smtp_settings(args),
        mail_retry=args.email_retry,
        alerts=args.alerts,
        alert_rules=args.alert_rules,
        webhook=_webhook_settings(args),
        report_url=args.email_report_url,
        output=args.output,
        series=_series_filter(args),
        catalog=_catalog_server(args),
    )
    if isinstance(args.runs_dir, Path):
        paths.folder(args.runs_dir)
    if args.output is not None:
        paths.output_dir(args.output)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if isinstance(args.runs_dir, Path):
        return Watcher(args.runs_dir, options, stop).run()
    mirror = stores.synced_mirror(args.runs_dir, args.mirror, empty_ok=True)
    publish = args.output is None
    remote = stores.store_remote(mirror, args.lease, publish, retry=options.poll_interval)
    stores.Poller(mirror, options.poll_interval, stop).start()
    try:
        # The mirror is a local folder this process writes: inotify sees every change to it.
        return Watcher(mirror.root, replace(options, poll=False), stop, remote).run()
    finally:
        remote.close(timeout=UPLOAD_WAIT_SECONDS)


def _email(args: argparse.Namespace) -> int:
    from ..delivery.smtp import send
    from ..report.render import render_run

    job = _mail_job(args)
    if job is None:
        raise InvalidInputError("no recipient: give --to ADDR (or [email] to in --config)")
    run_dir, source = paths.run_folder(args.run)  # else `.` too got a report and a lock
    paths.check_readable(run_dir, source)
    result = render_run(run_dir, wait=LOCK_WAIT_SECONDS)
    message = job.message(result, run_dir.name)
    send(_smtp_settings(args), message)
    print(f"Sent {message['Subject']!r} to {', '.join(job.recipients)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..delivery.serve import serve

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runs_dir = args.runs_dir
    if isinstance(runs_dir, Path):
        paths.folder(runs_dir)
    else:
        rules = runformat.BROWSE_MIRROR_RULES  # the reports too: a server shows them
        mirror = stores.synced_mirror(runs_dir, args.mirror, empty_ok=True, rules=rules)
        stores.Poller(mirror, args.poll_interval, stop).start()
        runs_dir = mirror.root
    serve(
        runs_dir,
        args.host,
        args.port,
        stop,
        args.output,
        allowed_hosts=args.allow_host,
        cache_bytes=args.cache_mb * 2**20,
        catalog=_catalog_server(args),
    )
    return 0


def _render(args: argparse.Namespace) -> int:
    from ..report.vega import ChartRenderer

    # (run folder, where its report goes: None for the run folder itself)
    runs: list[tuple[Path, Path | None]] = []
    mirrors: dict[Path, tuple[Mirror, str]] = {}  # a run on a store: its mirror and key there
    for path in args.paths:
        mirror = None if isinstance(path, Path) else stores.synced_mirror(path)
        for run, key in _runs_under(path if mirror is None else mirror.root):
            output_key = run.name if key == "." and len(args.paths) > 1 else key
            runs.append((run, None if args.output is None else args.output / output_key))
            if mirror is not None and args.output is None:
                mirrors[run] = (mirror, key)
    if args.output is not None:
        _check_outputs_distinct(runs)
        paths.output_dir(args.output)
    series = _series_filter(args)
    # The helper process starts first, so it warms up while the charting modules import.
    with ChartRenderer(helper=(os.cpu_count() or 1) > 1) as renderer:
        from ..report.render import render_run  # heavy imports that only this command needs

        def render(run_dir: Path, output: Path | None) -> RenderResult:
            paths.check_readable(run_dir, sources.source_of(run_dir))
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)  # DIR is the user's own
            result = render_run(
                run_dir, renderer=renderer, wait=LOCK_WAIT_SECONDS, output=output, series=series
            )
            if run_dir in mirrors:  # back beside the run on its store
                mirror, key = mirrors[run_dir]
                if not mirror.rendered(key, result.report.parent):
                    raise RunDirectoryError(str(mirror.url), f"{key}: report not uploaded")
            return result

        if len(runs) == 1:
            _print_single(render(*runs[0]))
            return 0
        progress = Progress(len(runs), sys.stderr if sys.stderr.isatty() else sys.stdout)
        failures: list[tuple[Path, str]] = []
        for run_dir, output in runs:
            started = time.monotonic()
            try:
                result = render(run_dir, output)
            except Exception as exc:  # one broken run must not stop the batch, whatever it raises
                logger.debug("%s: traceback of the failed render", run_dir, exc_info=True)
                failures.append((run_dir, _one_line(exc)))
                logger.error("%s: not rendered: %s", run_dir, failures[-1][1])
                progress.advance(f"FAILED {run_dir}: {failures[-1][1]}")
                continue
            note = f" ({len(result.problems)} inputs skipped)" if result.problems else ""
            progress.advance(f"{result.report} in {time.monotonic() - started:.1f}s{note}")
    print(f"Rendered {len(runs) - len(failures)} of {len(runs)} runs.")
    if failures:
        print(f"Not rendered ({len(failures)}):")
        for run_dir, reason in failures:
            print(f"  - {run_dir}: {reason}")
    return 1 if failures else 0


def _check_outputs_distinct(runs: list[tuple[Path, Path | None]]) -> None:
    """Refuse, before anything is written, two runs whose reports --output would put in one
    folder: the second would replace the first's (runs of one name from two places)."""
    first_of: dict[Path, Path] = {}
    for run_dir, output in runs:
        if output is None:
            continue
        if output in first_of:
            raise InvalidInputError(
                f"{output}: the reports of {first_of[output]} and {run_dir} would both go "
                "there (--output); render them with an --output of their own each"
            )
        first_of[output] = run_dir


def _one_line(exc: BaseException) -> str:
    """The error on one line, for a log line or a summary: lossreport's own errors are
    sentences that name what is wrong; anything else (a bug) keeps its type, `Type: message`."""
    text = str(exc) if isinstance(exc, LossReportError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.splitlines())


def _runs_under(path: Path) -> list[tuple[Path, str]]:
    """`path` itself if it is a run folder, else the runs inside it at any depth; each with its
    path under `path` ("." for `path` itself). A link named here is followed (the user chose
    it); links inside are not."""
    resolved = path.resolve()
    if sources.find(resolved):
        return [(resolved, ".")]
    paths.folder(path)
    runs = sources.list_runs(resolved)
    if not runs:  # not a run, and none inside: what `show` and `email` say of a non-run
        raise paths.not_a_run(path)
    return [(run, run.relative_to(resolved).as_posix()) for run in runs]


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
    """Print what can be read and name what cannot: a diagnostic, so a bad run.json or bad
    shards are reported, not raised. Exit 1 for a folder that is no run (as every command),
    or when the shards cannot even be listed."""
    run_dir: Path = args.run
    if not isinstance(run_dir, Path):
        run_dir = stores.synced_mirror(run_dir).root
    run_dir, source = paths.run_folder(run_dir)
    try:
        record = source.read_record(run_dir)
    except Exception as exc:  # whatever is wrong with run.json, the shards are still shown
        if isinstance(exc, RunDirectoryError):  # its message starts with the file's path
            problem = str(exc)
        else:
            problem = f"{run_dir / runformat.RUN_FILE}: {_one_line(exc)}"
        _say(f"run:    {run_dir.name} (run.json unreadable)")
        _say(f"problem: {problem}")
    else:
        inputs = source.inputs(run_dir)
        status = quiet_status(inputs, utc_time()) if inputs.silence_finishes else record.status
        _say(f"run:    {record.run_id} ({status})")
        if inputs.status_rule:
            _say(f"status: {inputs.status_rule}")
        architecture = f"   architecture: {record.architecture}" if record.architecture else ""
        _say(f"model:  {record.model}   hook: {record.hook}{architecture}")
        if record.error:
            _say(f"error:  {record.error}")
    try:
        data = source.read_losses(run_dir)
    except (LossReportError, OSError) as exc:
        _say(f"problem: {exc}")
        return 1
    _say(f"rows:   {data.table.num_rows}   losses: {', '.join(data.loss_names) or '(none)'}")
    for problem in data.skipped:
        _say(f"skipped: {problem}")
    return 0


def _say(line: str) -> None:
    """A line for the terminal: what a run holds (names, errors) may carry escape sequences,
    shown escaped (`\\x1b`) rather than obeyed."""
    print(logformat.printable(line))
