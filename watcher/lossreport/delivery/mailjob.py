"""The mail part of a render job: what a worker needs to queue a finished run's email.

Light on purpose (the message itself is built by message.py, imported only when a worker
queues one), so the CLI and the daemon's own process can hold a `MailJob` cheaply.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import runformat, sources
from ..runformat import Homes

if TYPE_CHECKING:
    from email.message import EmailMessage

    from ..report.render import RenderResult

logger = logging.getLogger(__name__)

MAILED_STATUSES = runformat.FINISHED_STATUSES | {runformat.STALLED}


@dataclass(frozen=True)
class MailJob:
    """What a worker needs to write a finished run's email into the outbox (no secrets)."""

    recipients: tuple[str, ...]
    sender: str
    attach_csv: bool = False
    report_url: str | None = None

    def message(self, result: RenderResult, run_name: str) -> EmailMessage:
        from .message import build_message

        return build_message(
            result,
            recipients=list(self.recipients),
            sender=self.sender,
            run_name=run_name,
            attach_csv=self.attach_csv,
            report_url=self.report_url,
        )

    def unsent(self, homes: Homes, key: str, status: str) -> bool:
        """Whether the email of run `key` finished as `status` was neither sent nor queued: a
        run that another process rendered (its trainer at close, `lossreport render`) must
        still be mailed, which takes a render of its own."""
        if status not in MAILED_STATUSES:
            return False
        from .message import message_key
        from .outbox import Outbox

        try:
            record = sources.read_record_at_home(homes, key)
        except OSError:  # its render names the problem; a stand-in record is mailed then
            return False
        run = {**dataclasses.asdict(record), "status": status}
        return Outbox(homes).wants(key, message_key(run))

    def queue(self, result: RenderResult, homes: Homes, key: str) -> None:
        """Write the email of `result` (a fresh render of run `key`) into the outbox, if its
        status is mailed and this state of the run was neither mailed nor queued before (a
        re-render of a finished run)."""
        if result.run["status"] not in MAILED_STATUSES:
            return
        from .message import message_key
        from .outbox import Outbox

        outbox = Outbox(homes)
        try:
            if outbox.wants(key, message_key(result.run)):
                outbox.add(self.message(result, key))
        except OSError as exc:  # the shared outbox folder is broken or not ours: the report stands
            logger.error(
                "run=%s: its mail could not be queued: %s",
                key,
                exc,
                extra={"run": key, "event": "mail_not_queued"},
            )
