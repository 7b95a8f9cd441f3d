"""What a view gives the server to send: a status, a body and the page's own policy."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

# Answers that are data, not pages, may run nothing and load nothing.
DATA_CSP = "default-src 'none'"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    csp: str = DATA_CSP

    @classmethod
    def html(cls, page: str, csp: str) -> Answer:
        return cls(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), csp)

    @classmethod
    def json(cls, document: Any) -> Answer:
        """`document` as JSON; a NaN or infinity (a hand-edited marker) becomes null."""
        body = json.dumps(_finite(document), separators=(",", ":"), allow_nan=False)
        return cls(HTTPStatus.OK, "application/json", body.encode())

    @classmethod
    def text(cls, status: int, message: str) -> Answer:
        return cls(status, "text/plain; charset=utf-8", f"{message}\n".encode())


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_finite(inner) for inner in value]
    return value
