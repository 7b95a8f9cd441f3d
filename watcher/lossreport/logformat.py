"""Log lines for people (`text`) or for log shippers (`json`, one object a line)."""

from __future__ import annotations

import json
import logging

from .clock import utc_time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def current() -> tuple[int, str]:
    """This process's (level, style), for child processes to log alike (render workers)."""
    root = logging.getLogger()
    json_style = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return root.level, "json" if json_style else "text"
