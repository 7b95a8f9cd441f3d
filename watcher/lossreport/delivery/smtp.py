"""Sending one message over SMTP with the daemon's settings.

The password never comes from the command line (it would show in `ps` and shell history): it
is read from an environment variable or a file, at send time, so a rotated secret is picked up.

A send has a total deadline (`deadline`, 2 minutes by default) besides the timeout of each
socket operation: a server that answers a byte at a time cannot hold the mail sender longer.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from socket import socket

from ..errors import MailError
from .deadline import Deadline

PASSWORD_ENV = "LOSSREPORT_SMTP_PASSWORD"
SECURITY_CHOICES = ("none", "starttls", "ssl")
TIMEOUT_SECONDS = 30.0  # each socket operation
DEADLINE_SECONDS = 120.0  # the whole send: connect, TLS, login, the message (up to ~14 MB)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int | None = None  # None: 25, 587 with STARTTLS or 465 with SSL
    security: str = "none"
    user: str | None = None
    password_file: Path | None = None
    password_env: str = PASSWORD_ENV
    timeout: float = TIMEOUT_SECONDS
    deadline: float = DEADLINE_SECONDS

    @property
    def where(self) -> str:
        """The server, for logs and errors."""
        return f"{self.host}:{self.effective_port}"

    def password(self) -> str | None:
        """From `password_file` (first line) or else the environment; None without a user."""
        if self.user is None:
            return None
        if self.password_file is not None:
            try:
                return self.password_file.read_text().splitlines()[0]
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                raise MailError(
                    f"{self.password_file}: cannot read the SMTP password ({exc})"
                ) from exc
        password = os.environ.get(self.password_env)
        if password is None:
            raise MailError(
                f"SMTP user {self.user!r} is set but there is no password: set "
                f"${self.password_env} or give a password file"
            )
        return password

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"ssl": 465, "starttls": 587}.get(self.security, 25)


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Hand `message` to the server within `settings.deadline`; raises MailError naming the
    server on any failure."""
    with Deadline(settings.deadline) as deadline:
        try:
            client = (_TlsClient if settings.security == "ssl" else _Client)(deadline, settings)
            with client:
                client.connect(settings.host, settings.effective_port)
                if settings.security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                password = settings.password()
                if settings.user is not None and password is not None:
                    client.login(settings.user, password)
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            if deadline.expired:
                raise MailError(
                    f"sending through {settings.where} failed: not done within the "
                    f"{settings.deadline:g}s deadline"
                ) from exc
            raise MailError(
                f"sending through {settings.where} failed: {type(exc).__name__}: {exc}"
            ) from exc


class _Client(smtplib.SMTP):
    """smtplib's client, whose connection is opened (and cut at the end) by a Deadline."""

    def __init__(self, deadline: Deadline, settings: SmtpSettings) -> None:
        self._deadline = deadline
        super().__init__(timeout=settings.timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket:
        return self._deadline.connect((host, port), timeout, self.source_address)


class _TlsClient(smtplib.SMTP_SSL, _Client):
    """SMTP over TLS from the first byte: SMTP_SSL wraps what _Client's connect opens."""

    def __init__(self, deadline: Deadline, settings: SmtpSettings) -> None:
        self._deadline = deadline
        smtplib.SMTP_SSL.__init__(
            self, timeout=settings.timeout, context=ssl.create_default_context()
        )
