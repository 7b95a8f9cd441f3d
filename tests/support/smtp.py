"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives, for mail tests."""

from __future__ import annotations

import socket
import threading
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.data)  # type: ignore[return-value,unused-ignore]


class _Keeper:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 Message accepted for delivery"


class _Authenticator:
    def __init__(self, credentials: tuple[str, str]) -> None:
        self.login, self.password = (part.encode() for part in credentials)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.login,
            self.password,
        )
        return AuthResult(success=ok)


class SmtpServer:
    """`with SmtpServer(port) as server:` ... `server.received`. Port 0 picks a free one."""

    def __init__(self, port: int = 0, credentials: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self._keeper = _Keeper()
        auth: dict[str, Any] = {}
        if credentials is not None:  # AUTH LOGIN/PLAIN required, over plain TCP on loopback
            auth = {
                "authenticator": _Authenticator(credentials),
                "auth_required": True,
                "auth_require_tls": False,
            }
        with warnings.catch_warnings():  # AUTH without TLS: on loopback, on purpose
            warnings.simplefilter("ignore", UserWarning)
            self._controller = Controller(
                self._keeper, hostname="127.0.0.1", port=self.port, **auth
            )

    @property
    def received(self) -> list[Received]:
        with self._keeper.lock:
            return list(self._keeper.received)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
