"""The unit of work the daemon hands to a worker process: render one run, record it."""

from __future__ import annotations

import logging
import signal
from typing import Any

from .. import logformat, storage
from ..delivery.mailjob import MailJob
from ..errors import UnsafePathError
from ..processes import exit_with_parent
from ..runformat import Homes, read_marker
from ..sources.series import SeriesFilter

logger = logging.getLogger(__name__)


def start_worker(log_level: int, log_style: str) -> None:
    """A render worker's start: log as the daemon does, die with it, then warm up.

    A SIGKILLed daemon cannot stop its workers, and cron's `--once` or a hand-started daemon
    has no systemd to clean up after it; so each worker exits when its parent is gone. Ctrl-C
    in a terminal reaches the whole process group: the daemon decides what its workers do
    then (finish, or be stopped at its deadline), so they ignore it.
    """
    logformat.configure(log_level, log_style)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    warm_up()


def warm_up() -> None:
    """Make a new worker as quick as a used one: load the renderer and draw a small chart."""
    import numpy as np

    from ..report import charts, vega
    from ..report.history import LossSeries
    from ..report.render import render_run  # noqa: F401  (imported for its import cost, now)
    from ..report.stats import loss_stats

    series = LossSeries("warm_up", np.arange(100), np.linspace(1.0, 0.1, 100))
    vega.render(charts.loss_chart(series, loss_stats(series), "warm-up"))


def render_job(
    homes: Homes,
    key: str,
    status: str,
    fingerprint: str,
    mail: MailJob | None = None,
    series: SeriesFilter | None = None,
    *,
    quick: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Render run `key` into its home as `status`, the status the daemon derived from inputs
    `fingerprint`, and record both in its marker; with `mail`, queue the email of a finished
    run first, so a crash after the render cannot lose it. `series`: which series to report.

    `quick`: only the quick report a backlog gets first (no charts), which records nothing and
    queues no mail: the marker and the mail wait for the full render that replaces it, so a
    daemon stopped in between draws the charts after it restarts.

    Returns the run's runs-index entry, and False if another process (a daemon, the trainer at
    its close, `lossreport render`) had rendered these very inputs already (a quick job then
    leaves the full report as it is). Raises RunBusy when another process holds the run.
    """
    # Imported here, so the daemon's own process never loads the charts.
    from ..report.render import index_entry, record_render, render_held, render_lock

    run_dir, home, parts = homes.runs_dir / key, homes.make_home(key), key.split("/")

    def verify() -> None:  # keys are paths: any folder on one could become a link meanwhile
        if not storage.still_at(run_dir, run_fd, homes.runs_dir, parts):
            raise UnsafePathError(run_dir, "a folder on its path changed while it was read")

    # Held from reading the marker to writing the new one: two daemons cannot both render.
    with (
        render_lock(home, wait=0, root=homes.root_of(home)) as home_fd,
        storage.opened_beneath(homes.runs_dir, parts) as run_fd,
    ):
        done = read_marker(home)
        rendered = done is not None and (done.fingerprint, done.status) == (fingerprint, status)
        if (
            done is not None
            and rendered
            and (quick or mail is None or not mail.unsent(homes, key, status))
        ):
            return done.entry, False
        result = render_held(
            run_dir,
            home_fd,
            home=home,
            status=status,
            fingerprint=fingerprint,
            series=series or SeriesFilter(),
            verify=verify,
            draw=not quick,
        )
        if quick:
            return index_entry(result), True
        if mail is not None:
            mail.queue(result, homes, key)
        return record_render(home_fd, result, by_daemon=True), True
