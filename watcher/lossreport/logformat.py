"""Log lines for people (`text`) or for log shippers (`json`, one object a line).

Log lines quote strings from a shared tree (run folder names, run ids), which anyone can make
hold a newline or a terminal escape: in the text format the message is one line with every
non-printable character escaped as Python writes it (`\n`, `\x1b`), and a traceback's lines
are indented, so a line that starts at its first column always starts a record, and none
carries a raw escape to the terminal. The JSON format escapes them by itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .clock import utc_time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """`TIME LEVEL MESSAGE`, one line, then any traceback indented (see the module's doc)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def printable(text: str) -> str:
    """`text` with each non-printable character (newlines, escapes, Unicode line separators)
    written as Python's repr writes it; printable text, backslashes included, as it is."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _indented(text: str) -> str:
    return "\n".join("  " + printable(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": utc_time(record.created).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: int, style: str) -> None:
    handler = logging.StreamHandler()
    if style == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def current() -> tuple[int, str]:
    """This process's (level, style), for child processes to log alike (render workers)."""
    root = logging.getLogger()
    json_style = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return root.level, "json" if json_style else "text"
