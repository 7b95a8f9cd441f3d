"""`--config FILE`: the command-line settings in a TOML file, so a systemd unit stays short.

    [watch]                       [email]
    poll = true                   to = ["me@example.com"]
    stale_after = "10m"           smtp_host = "smtp.example.com"
    workers = 2                   smtp_security = "starttls"   # or "ssl", "none"
                                  smtp_user = "me"
    [serve]                       smtp_password_file = "/etc/lossreport/smtp-password"
    port = 8000

Each key becomes the default of its command-line flag, so a flag given on the command line
wins (and `--email-to` adds to `to`). Unknown keys and wrong types are errors naming the file
and the key. A password is never a value here: it comes from a file or the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import LossReportError
from .smtp import SECURITY_CHOICES


class ConfigError(LossReportError):
    """The config file is unreadable, not TOML, or has an unknown key or a wrong value."""


def parse_duration(text: str) -> float:
    """Seconds from `300`, `30s`, `10m` or `2h`; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (seconds, or a number with s, m or h)"
        ) from None
    if seconds < 0:
        raise ValueError(f"{text!r}: a duration cannot be negative")
    return seconds


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError('a duration (seconds, or a string such as "30s", "10m", "2h")')
    return parse_duration(str(value))


def _of(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError({int: "an integer", bool: "true or false"}.get(kind, "a string"))
        return value

    return check


def _addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("an address or a list of addresses")
    return list(value)


def _security(value: Any) -> str:
    if value not in SECURITY_CHOICES:
        raise ValueError(f"one of {', '.join(SECURITY_CHOICES)}")
    return str(value)


# section -> key in the file -> (argparse destination, check and convert)
KEYS: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "watch": {
        "poll": ("poll", _of(bool)),
        "poll_interval": ("poll_interval", _duration),
        "rescan_every": ("rescan_every", _duration),
        "stale_after": ("stale_after", _duration),
        "live_every": ("live_every", _duration),
        "workers": ("workers", _of(int)),
        "idle_restart": ("idle_restart", _duration),
    },
    "email": {
        "to": ("email_to", _addresses),
        "from": ("email_from", _of(str)),
        "smtp_host": ("smtp_host", _of(str)),
        "smtp_port": ("smtp_port", _of(int)),
        "smtp_security": ("smtp_security", _security),
        "smtp_user": ("smtp_user", _of(str)),
        "smtp_password_file": ("smtp_password_file", lambda value: Path(_of(str)(value))),
        "smtp_password_env": ("smtp_password_env", _of(str)),
        "attach_csv": ("email_attach_csv", _of(bool)),
        "report_url": ("email_report_url", _of(str)),
        "retry": ("email_retry", _duration),
    },
    "serve": {
        "host": ("host", _of(str)),
        "port": ("port", _of(int)),
    },
}


def load(path: Path) -> dict[str, Any]:
    """The file's settings as argparse destinations and values."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a TOML file ({exc})") from exc
    settings: dict[str, Any] = {}
    for section, table in document.items():
        if section not in KEYS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(KEYS)})")
        for key, value in table.items():
            if "password" in key and key not in KEYS[section]:
                raise ConfigError(
                    f"{path}: [{section}] {key}: a password is never written in the config; "
                    "use smtp_password_file or the LOSSREPORT_SMTP_PASSWORD environment variable"
                )
            if key not in KEYS[section]:
                known = ", ".join(KEYS[section])
                raise ConfigError(f"{path}: [{section}] unknown key {key!r} (known: {known})")
            destination, convert = KEYS[section][key]
            try:
                settings[destination] = convert(value)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{path}: [{section}] {key} = {value!r}: expected {exc}") from exc
    return settings
