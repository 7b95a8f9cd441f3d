"""The daemon's settings, apart from the daemon itself: the CLI reads their defaults without
importing the watcher (watchdog, the outbox, the renderer)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..alerts.rules import AlertRules
from ..catalog.urls import CatalogServer
from ..sources.base import SILENCE_FINISHES_SECS
from ..sources.series import SeriesFilter

if TYPE_CHECKING:
    from ..delivery.mailjob import MailJob
    from ..delivery.smtp import SmtpSettings
    from ..delivery.webhook import WebhookSettings

MAX_WORKERS = 64  # each render worker holds up to ~300 MB; more than this is a typo
# Running runs are looked at again every tenth of --stale-after (a SIGKILLed trainer writes
# nothing, so only a look sees it stall), within these bounds: looking at 200 running runs every
# 2 s cost a daemon 2.3% of a core for nothing; every 30 s (--stale-after 10m) it costs 0.5%.
MIN_HEALTH_SECONDS, MAX_HEALTH_SECONDS = 1.0, 30.0
# `--once` and runs whose writer records no end (TensorBoard, Lightning...): "live" renders the
# ones not being written now as they are; "finished" waits, as the daemon does, for
# --stale-after of silence (runstate.py).
ONCE_LIVE, ONCE_FINISHED = "live", "finished"


@dataclass(frozen=True)
class WatchOptions:
    """The daemon's settings; the CLI maps its flags one to one onto these, and takes their
    defaults from here."""

    poll: bool | None = None  # None: poll when the runs directory is on a network filesystem
    poll_interval: float = 5.0
    rescan_every: float = 300.0
    stale_after: float = SILENCE_FINISHES_SECS  # also: when a run with no end of its own ends
    live_every: float | None = None
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, MAX_WORKERS))
    # A worker that has drawn charts holds ~300 MB (the chart engine's heap and buffers), a
    # fresh warm one ~150 MB. Workers are kept while renders come (fast bursts) and replaced by
    # one fresh warm worker after this long without a render (a small daemon when idle).
    idle_restart: float = 60.0
    # A stopping daemon (SIGTERM, Ctrl-C) lets the renders in progress finish for this long,
    # then kills their workers (each render is atomic: a stopped one leaves the old report, and
    # the next start renders the run again). Under systemd's TimeoutStopSec (60 s in our units).
    stop_wait: float = 20.0
    debounce: float = 0.25
    once: bool = False
    once_foreign: str = ONCE_LIVE  # with `once`: ONCE_LIVE or ONCE_FINISHED
    mail: MailJob | None = None  # email each finished run (completed, failed, stalled)
    smtp: SmtpSettings | None = None
    mail_retry: float = 30.0  # first retry of a failed send; doubles up to an hour
    # Alerts while runs train: logged, mailed with `mail`, posted with `webhook`.
    alerts: bool = True
    alert_rules: AlertRules = field(default_factory=AlertRules)
    webhook: WebhookSettings | None = None
    report_url: str | None = None  # where `lossreport serve` shows the runs, for alert links
    # --output: where the reports of runs whose folders are not writable go (runformat.homes)
    output: Path | None = None
    series: SeriesFilter = field(default_factory=SeriesFilter)  # losses, how many drawn
    catalog: CatalogServer | None = None  # a team's PostgreSQL catalog; None: SQLite's

    @property
    def health_every(self) -> float:
        """How often each running run is looked at without an event."""
        return min(max(self.stale_after / 10, MIN_HEALTH_SECONDS), MAX_HEALTH_SECONDS)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.once_foreign not in (ONCE_LIVE, ONCE_FINISHED):
            raise ValueError(f"once_foreign must be {ONCE_LIVE} or {ONCE_FINISHED}")
        if not self.poll_interval > 0:  # zero would poll in a busy loop
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
