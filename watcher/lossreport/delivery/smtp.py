"""Sending one message over SMTP with the daemon's settings.

The password never comes from the command line (it would show in `ps` and shell history): it
is read from an environment variable or a file, at send time, so a rotated secret is picked up.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from ..errors import MailError

PASSWORD_ENV = "LOSSREPORT_SMTP_PASSWORD"
SECURITY_CHOICES = ("none", "starttls", "ssl")
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int | None = None  # None: 25, 587 with STARTTLS or 465 with SSL
    security: str = "none"
    user: str | None = None
    password_file: Path | None = None
    password_env: str = PASSWORD_ENV
    timeout: float = TIMEOUT_SECONDS

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
    """Hand `message` to the server; raises MailError naming the server on any failure."""
    where = f"{settings.host}:{settings.effective_port}"
    try:
        client: smtplib.SMTP
        if settings.security == "ssl":
            client = smtplib.SMTP_SSL(
                settings.host,
                settings.effective_port,
                timeout=settings.timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(settings.host, settings.effective_port, timeout=settings.timeout)
        with client:
            if settings.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            password = settings.password()
            if settings.user is not None and password is not None:
                client.login(settings.user, password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"sending through {where} failed: {type(exc).__name__}: {exc}") from exc
