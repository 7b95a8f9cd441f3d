"""Posting one alert to a chat tool's incoming webhook (Slack, Mattermost, Teams, Discord's
Slack-compatible endpoint, or anything that takes JSON): an HTTP POST of a JSON object whose
`text` field those tools show, plus structured fields for anything else.

Secrets never come from the command line, where `ps` and shell history would show them: a
bearer token comes from an environment variable or a file, and a webhook URL that itself holds
a secret (Slack's do) from the environment. The standard library's HTTP client does the work;
redirects are not followed (a POST re-sent elsewhere could carry the token there).

A post has a total deadline (`deadline`, 30 s by default) besides the timeout of each socket
operation (`timeout`, 10 s): an endpoint that answers a byte at a time gives up the sender
then, and the post is retried later like any failed one.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import WebhookError
from ..version import __version__
from .deadline import Deadline

URL_ENV = "LOSSREPORT_ALERT_WEBHOOK_URL"
TOKEN_ENV = "LOSSREPORT_ALERT_WEBHOOK_TOKEN"
TIMEOUT_SECONDS = 10.0  # each socket operation
DEADLINE_SECONDS = 30.0  # the whole post: connect, TLS, request, answer
# Query parameters that carry credentials in webhook URLs (Teams' workflows sign with `sig`,
# Google Chat has `key` and `token`).
SECRET_PARAMETERS = frozenset(
    {"sig", "signature", "token", "access_token", "key", "apikey", "api_key", "secret", "code",
     "auth", "password"}
)  # fmt: skip
# Chat tools whose webhook paths are their secret, whatever they look like.
SECRET_PLACES = (
    "hooks.slack.com/services/",
    "discord.com/api/webhooks/",
    "discordapp.com/api/webhooks/",
    ".webhook.office.com/webhookb2/",
)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,}")


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host and no user:password part (credentials
    belong in the environment or a file); ValueError saying what is wrong otherwise, without
    repeating the URL (its path may be a secret, as Slack's are)."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError("the webhook URL holds a space or a control character")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError("the webhook URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook URL is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the webhook URL holds a user or password: give a token in "
            f"${TOKEN_ENV} or a token file instead"
        )
    return url


def secret_part(url: str) -> str | None:
    """What of `url` looks like a secret, or None: a query parameter named as credentials
    are, or a path part as random as a token (Slack's `/services/T…/B…/<24 characters>`,
    Discord's, Mattermost's `/hooks/<26>`, Teams' GUIDs): 20 or more letters, digits, `-`
    or `_`, with at least 3 letters and 3 digits. A guess, stated in docs/alerts.md: such a
    URL is refused on the command line (`ps`, shell history) and taken from the environment
    or a --config file."""
    parts = urlsplit(url)
    if any(place in f"{parts.hostname}{parts.path}" for place in SECRET_PLACES):
        return "a path that the chat tool makes secret"
    for name in parse_qs(parts.query, keep_blank_values=True):
        if name.lower() in SECRET_PARAMETERS:
            return f"its query parameter {name!r}"
    for part in parts.path.split("/"):
        if (
            _TOKEN.fullmatch(part)
            and _has_three(part, str.isalpha)
            and _has_three(part, str.isdigit)
        ):
            return "a part of its path that looks like a token"
    return None


def _has_three(text: str, kind: Callable[[str], bool]) -> bool:
    return sum(map(kind, text)) >= 3


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    token_file: Path | None = None
    token_env: str = TOKEN_ENV
    timeout: float = TIMEOUT_SECONDS
    deadline: float = DEADLINE_SECONDS

    @property
    def where(self) -> str:
        """The URL without its path, for logs and errors: Slack-style paths are secrets."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def token(self) -> str | None:
        """A bearer token from `token_file` (first line) or else the environment; read at each
        post, so a rotated secret is picked up."""
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().splitlines()[0]
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                raise WebhookError(
                    f"{self.token_file}: cannot read the webhook token ({exc})"
                ) from exc
        else:
            token = os.environ.get(self.token_env, "")
        token = token.strip()  # a secret mounted from a file often ends in a newline
        if any(not char.isprintable() for char in token):
            where = self.token_file or f"${self.token_env}"
            raise WebhookError(f"{where}: the webhook token holds a control character")
        return token or None


def post(settings: WebhookSettings, payload: dict[str, Any]) -> None:
    """POST `payload` as JSON within `settings.deadline`; raises WebhookError unless the
    answer is 2xx."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"lossreport/{__version__}",
    }
    token = settings.token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        settings.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    with Deadline(settings.deadline) as deadline:
        try:
            _send(deadline, request, settings)
        except WebhookError:
            if deadline.expired:
                raise WebhookError(
                    f"{settings.where}: no whole answer within the {settings.deadline:g}s deadline"
                ) from None
            raise


def _send(deadline: Deadline, request: urllib.request.Request, settings: WebhookSettings) -> None:
    opener = urllib.request.build_opener(
        _NoRedirect, _PlainHandler(deadline), _TlsHandler(deadline)
    )
    try:
        with opener.open(request, timeout=settings.timeout) as answer:
            answer.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"{settings.where} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:  # its reason: refused, timed out, no such host
        raise WebhookError(f"{settings.where} unreachable: {_reason(exc.reason)}") from None
    # The standard library's other errors (a malformed answer, a URL it cannot send, a
    # timeout while reading) may quote the request: the URL's path or the token.
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise WebhookError(f"{settings.where}: {type(exc).__name__}") from None


def _reason(reason: object) -> str:
    """A connection failure in words of our own (errno's), not the library's text."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the 3xx is then raised as an HTTPError


def _connection(kind: type[http.client.HTTPConnection], deadline: Deadline) -> Any:
    """A factory of `kind` whose socket `deadline` opens (the standard library's own hook)."""

    def make(host: str, **options: Any) -> http.client.HTTPConnection:
        connection = kind(host, **options)
        connection._create_connection = deadline.connect  # type: ignore[attr-defined]
        return connection

    return make


class _PlainHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(http.client.HTTPConnection, self._deadline), req)


class _TlsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        kind = _connection(http.client.HTTPSConnection, self._deadline)
        return self.do_open(kind, req)
