"""The daemon's alerts while runs train: each running run's detectors (alerts/check.py) fed
only the shards that landed since the last look, and what to do with what they find.

An alert is raised once per run and rule: the rules a run has raised are in its alert log
(runformat/alertlog.py), which a restarted daemon reads before it looks again. Raising one
logs it, queues its email and webhook post in the outbox (sent and retried by the sender
thread), records it in the log, and asks for a live render of the run, so the link in the
alert shows the report with the alert in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import runformat, sources
from ..alerts import words
from ..alerts.check import Alert, RunChecker
from ..alerts.rules import STALLED, AlertRules
from ..clock import utc_now
from ..delivery import alerting
from ..delivery.outbox import Outbox
from ..errors import MalformedRunFileError
from ..runformat import Homes
from .runstate import RunState

logger = logging.getLogger(__name__)

# Other tools' runs checked while they train: those whose source can hand over only what was
# logged since the last look (`read_new`), so a check costs what was logged since.
LIVE_SOURCES = frozenset({sources.WandbSource.name})


@dataclass
class _Followed:
    checker: RunChecker
    checked: str = ""  # the inputs' fingerprint at the last check: unchanged, nothing to read
    tail: sources.Tail | None = None  # another tool's run: how far its log was read


@dataclass
class Alerter:
    """Alerts for lossreport's own runs and those of the tools in LIVE_SOURCES (other tools'
    logs are not checked while they train), queued in the outbox of `homes`; `sent` wakes the
    outbox's sender thread."""

    homes: Homes
    rules: AlertRules
    target: alerting.AlertTarget
    sent: Callable[[], None]
    _followed: dict[str, _Followed] = field(default_factory=dict)
    _stalled: set[str] = field(default_factory=set)  # runs whose stall was raised

    def look(
        self, name: str, state: RunState, rendered: Callable[[], str | None] = lambda: None
    ) -> bool:
        """Check run `name`'s new shards; True if an alert was raised. Only runs seen while
        running are followed (a tree of finished runs is never read for alerts), and a check
        with unchanged inputs reads nothing. `rendered`: the inputs a daemon's render of the
        run saw (asked only when the run is first followed): that daemon checked them before
        it rendered, so a restart over stalled runs does not read every shard again."""
        followed = self._followed.get(name)
        if followed is None:
            if state.status != runformat.RUNNING:
                return False
            already = {str(entry["rule"]) for entry in runformat.read_alert_log(state.run_dir)}
            followed = self._followed[name] = _Followed(RunChecker(self.rules, already))
            if rendered() == state.fingerprint:
                followed.checked = state.fingerprint
        if followed.checked == state.fingerprint:
            return False
        followed.checked = state.fingerprint
        if state.writer == sources.NATIVE.name:
            alerts = followed.checker.check(state.run_dir)
        else:
            alerts = self._check_foreign(state, followed)
        if state.status != runformat.RUNNING:  # finished: its report takes over from here
            del self._followed[name]
        return self._raise(name, state.run_dir, alerts)

    def _check_foreign(self, state: RunState, followed: _Followed) -> list[Alert]:
        """Feed the checker the rows another tool's run logged since the last look: its
        losses (series.is_loss_name), as its source reads them."""
        source = sources.source_of(state.run_dir)
        if not isinstance(source, sources.WandbSource):
            return []
        followed.tail = followed.tail or sources.Tail()
        table = source.read_new(state.run_dir, followed.tail)
        losses = [
            column
            for column in table.column_names
            if column not in runformat.RESERVED_COLUMNS and sources.is_loss_name(column)
        ]
        return followed.checker.check_table(table.select([runformat.STEP, *losses]))

    def stalled(self, name: str, state: RunState, silent_for: float) -> bool:
        """A running run whose trainer stopped writing: raised once. True if it was now."""
        if not self.rules.stalled or name in self._stalled:
            return False
        self._stalled.add(name)
        if any(entry["rule"] == STALLED for entry in runformat.read_alert_log(state.run_dir)):
            return False
        record = "run.json still says" if state.writer == sources.NATIVE.name else "its log says"
        detail = (
            f"The trainer has written nothing for {words.duration(silent_for)}, though "
            f"{record} running: it may have hung or been killed (rule stalled)."
        )
        return self._raise(name, state.run_dir, [Alert(STALLED, None, None, None, detail)])

    def forget(self, name: str) -> None:
        self._followed.pop(name, None)
        self._stalled.discard(name)

    def _raise(self, name: str, run_dir: Path, alerts: list[Alert]) -> bool:
        if not alerts:
            return False
        try:
            if sources.source_of(run_dir) is sources.NATIVE:
                record = runformat.read_run_file(run_dir)
            else:
                record = sources.read_record_at_home(self.homes, name)
        except MalformedRunFileError as exc:
            logger.warning("run=%s: alerts raised with run.json unreadable: %s", name, exc)
            record = runformat.RunRecord(name, "unknown-model", "unknown-hook")
        outbox = Outbox(self.homes)
        entries = []
        for alert in alerts:
            raised = alerting.raised(run_dir, name, record, alert, self.target.report_url)
            logger.warning(
                "run=%s ALERT %s: %s",
                name,
                alert.rule,
                alert.detail,
                extra={"run": name, "event": "alert", "rule": alert.rule, "step": alert.step},
            )
            try:
                alerting.queue(outbox, raised, self.target)
            except Exception as exc:  # not recorded: a restarted daemon raises it again
                logger.error(
                    "run=%s: the alert could not be queued: %s: %s",
                    name,
                    type(exc).__name__,
                    exc,
                    extra={"run": name, "event": "alert_not_queued"},
                )
                continue
            entries.append({**alert.to_json(), "detected_at": utc_now("seconds")})
        if entries:
            self.sent()
            try:
                runformat.append_alert_log(run_dir, entries)
            except OSError as exc:  # sent anyway; the outbox's record keeps them to once
                logger.error("run=%s: %s", name, exc, extra={"run": name, "event": "alert_log"})
        return True
