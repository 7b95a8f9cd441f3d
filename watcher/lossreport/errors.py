"""Every exception lossreport raises, here and nowhere else.

LossReportError                 base: catch this to catch everything lossreport raises
├── InvalidInputError           an argument, path or setting given to lossreport that it cannot use
│   ├── InvalidLossError        a loss name or value that cannot be recorded (.key, .value)
│   ├── ConfigError             a --config file that is unreadable, not TOML, or wrong
│   └── QueryError              a bad query parameter of a `serve` URL (.parameter): a 400
├── RunClosedError              log() on a run that has been closed (.path)
├── RunBusy                     another process is rendering the run now (.path)
├── ChartRenderError            the chart engine could not draw a chart
├── MailError                   a message could not be sent (server, login, settings)
├── WebhookError                an alert could not be posted to the webhook
├── ServeError                  `lossreport serve` cannot listen where it was told to
├── CatalogServerError          the catalog's database server failed, refused or is unreachable
│   └── CatalogSchemaError      its schema is newer than this lossreport's: not written
├── DemoError                   `lossreport demo` could not finish (a trainer or the daemon failed)
├── RenderWorkerDied            a daemon's render worker process died while it rendered a run
└── RunDirectoryError           a run directory that cannot be written or read (.path)
    ├── MalformedRunFileError   run.json that is not a lossreport.run/1 document
    ├── CorruptShardError       a loss shard that is not readable Parquet
    └── UnsafePathError         a symlink, FIFO, device or folder where a file belongs
        └── FileTooLargeError   a file over its documented size limit
            └── ReadBudgetError  a file that would take its run past its read budget

The ones a library call can raise are exported from `lossreport`; the others (ConfigError,
MailError, WebhookError, ServeError, DemoError, QueryError, RenderWorkerDied, the catalog's
server errors) come from the command line's work and live here, as does ReadBudgetError: a
reader skips and names the file instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LossReportError(Exception):
    """Base class of every error lossreport raises on purpose."""


class InvalidInputError(LossReportError):
    """An argument, path or setting given to lossreport (by a caller or on the command line)
    that it cannot use; the message names it and says what is wrong."""


class InvalidLossError(InvalidInputError, ValueError):
    """A loss name or value that cannot be recorded; `key` names it, `value` holds it."""

    def __init__(self, message: str, *, key: str, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: errors cross process boundaries
        return _rebuild_invalid_loss, (str(self), self.key)


class RunClosedError(LossReportError):
    """The run was closed; nothing more can be logged to it."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"{path}: the run is closed; start a new run to log more")
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path,)


class RunDirectoryError(LossReportError, OSError):
    """A run directory (or a file in it) that cannot be written or read; `path` names it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


class RunBusy(LossReportError):
    """Another process holds the run's render lock right now."""

    def __init__(self, path: Path, reason: str = "being rendered by another process") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


class ChartRenderError(LossReportError):
    """The chart engine (vl-convert) could not draw a chart; the message carries its reason."""


class ConfigError(InvalidInputError):
    """The config file is unreadable, not TOML, or has an unknown key or a wrong value."""


class QueryError(InvalidInputError):
    """A query parameter of a `serve` URL that is unknown, repeated, malformed or out of range;
    `parameter` names it. The server answers 400 with the message."""

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        shown = parameter if parameter.isprintable() and len(parameter) <= 60 else "(a parameter)"
        super().__init__(f"query parameter {shown!r} {reason}")


class MailError(LossReportError):
    """A message could not be sent (server unreachable, refused, bad settings)."""


class WebhookError(LossReportError):
    """An alert could not be posted to the webhook (unreachable, refused, a bad answer)."""


class ServeError(LossReportError):
    """`lossreport serve` cannot listen on the address it was given."""


class CatalogServerError(LossReportError):
    """The runs catalog's database server (PostgreSQL) failed a statement, refused the
    connection or cannot be reached; the message is the server's or the driver's."""


class CatalogSchemaError(CatalogServerError):
    """The catalog's schema is newer than this lossreport knows: a daemon does not write to
    it (it would write rows a newer reader misreads), `serve` does not read it."""


class DemoError(LossReportError):
    """`lossreport demo` could not finish: an example trainer or the daemon failed."""


class RenderWorkerDied(LossReportError):
    """The render worker process given a run died before it answered (the kernel's OOM killer,
    an abort in the chart engine); `how` says how it ended, `pid` which process it was."""

    def __init__(self, pid: int, how: str) -> None:
        super().__init__(f"the render worker (pid {pid}) died: {how}")
        self.pid = pid
        self.how = how


class MalformedRunFileError(RunDirectoryError):
    """run.json is missing fields, is not JSON, or has an unknown format."""


class CorruptShardError(RunDirectoryError):
    """A loss shard cannot be read as Parquet."""


class UnsafePathError(RunDirectoryError):
    """Something other than what belongs there (a symlink, FIFO, device, a folder for a file):
    left untouched, neither followed nor opened."""


class FileTooLargeError(UnsafePathError):
    """A file over its documented size limit, not read."""


class ReadBudgetError(FileTooLargeError):
    """A file whose data, once decoded, would take its run past its read budget
    (storage.budget); not decoded."""


def _rebuild_invalid_loss(message: str, key: str) -> InvalidLossError:
    return InvalidLossError(message, key=key)
