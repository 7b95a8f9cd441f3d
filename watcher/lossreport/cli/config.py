"""`--config FILE`: the command-line settings in a TOML file, so a systemd unit stays short.

    [watch]                       [email]
    poll = true                   to = ["me@example.com"]
    stale_after = "10m"           smtp_host = "smtp.example.com"
    workers = 2                   smtp_security = "starttls"   # or "ssl", "none"
    output = "/srv/reports"       smtp_user = "me"
    series = ["train/*"]
    exclude_series = ["*lr*"]
    max_charts = 12
    catalog = "postgresql://lossreport@db.lab/runs"    # a team's catalog (also in [serve])
    catalog_password_file = "/etc/lossreport/catalog-password"
    catalog_host = "nfs-1"        # this tree's host in the catalog (default: this host's name)
    [serve]                       smtp_password_file = "/etc/lossreport/smtp-password"
    port = 8000
    allow_host = ["gpu-box.lab"]
                                  [alerts]
                                  webhook = "https://chat.example.com/hooks/lossreport"
                                  webhook_token_file = "/etc/lossreport/webhook-token"
                                  [alerts.divergence]   # and [[alerts.rule]]: alerts/rules.py
                                  factor = 3.0

Each key becomes the default of its command-line flag, so a flag given on the command line
wins (and `--email-to` adds to `to`). Unknown keys and wrong types are errors naming the file
and the key. A password is never a value here: it comes from a file or the environment.

The limits are the command line's: every duration from 0.1 s to 365 days (each one is a wait
or an interval, where 0 would spin and nan or inf would never fire), `workers` from 1 to
64 (MAX_WORKERS), ports from 0 (serve: a free port) or 1 (smtp_port) to 65535, and each address
exactly one `local@domain`, without control characters (which could add mail headers).
"""

from __future__ import annotations

import math
import tomllib
import unicodedata
from collections.abc import Callable
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader, HeaderRegistry
from pathlib import Path
from typing import Any

from ..alerts.rules import parse_alert_rules
from ..catalog.places import checked_host
from ..catalog.urls import checked_url
from ..clock import format_duration as format_duration  # parse_duration's inverse
from ..daemon.options import MAX_WORKERS, ONCE_FINISHED, ONCE_LIVE
from ..delivery.smtp import SECURITY_CHOICES
from ..delivery.webhook import check_url
from ..errors import ConfigError, InvalidInputError
from ..sources.series import MOST_CHARTS

MIN_DURATION_SECONDS = 0.1
MAX_DURATION_SECONDS = 365 * 24 * 3600.0  # as good as never, and within every timer's range
MAX_PORT = 65535
MAX_CACHE_MB = 1024 * 1024  # serve's cache_mb: a terabyte


def parse_duration(text: str) -> float:
    """Seconds from `300`, `30s`, `10m` or `2h`, from 0.1 s to 365 days; ValueError otherwise.

    Every duration lossreport takes is a wait or an interval: 0 would make a loop spin, and
    nan or inf would silently never fire (nan compares false with everything).
    """
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (seconds, or a number with s, m or h)"
        ) from None
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{text!r}: a duration cannot be negative")
    if seconds < MIN_DURATION_SECONDS:
        raise ValueError(f"{text!r} is too short: at least {MIN_DURATION_SECONDS}s")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is too long: at most 365 days")
    return seconds


def parse_address(text: str) -> str:
    """Exactly one address, `local@domain` or `Name <local@domain>`, in its normal form;
    ValueError naming `text` otherwise. Strict, as each one becomes a mail header: a CR or LF
    would let a value add headers (a Bcc), so no control character passes."""
    if any(unicodedata.category(char)[0] == "C" or char in "\u2028\u2029" for char in text):
        raise ValueError(f"{text!r} has a control or invisible character")
    try:
        header = HeaderRegistry()("To", text)
    # IndexError: the stdlib parser's own failure on some inputs, such as "a@".
    except (HeaderParseError, IndexError, ValueError):
        raise ValueError(f"{text!r} is not an email address") from None
    assert isinstance(header, AddressHeader)  # what the registry makes of a To header
    if len(header.addresses) != 1 or len(header.groups) != 1:
        raise ValueError(f"{text!r} holds {len(header.addresses)} addresses, expected one")
    if header.groups[0].display_name is not None:
        raise ValueError(f"{text!r} is an address group, expected one address")
    if header.defects:
        raise ValueError(f"{text!r} is not an email address ({header.defects[0]})")
    address = header.addresses[0]
    if not address.username or not address.domain:
        raise ValueError(f"{text!r} is not an email address (it needs a local part and a domain)")
    return str(address)


def parse_int(text: str, low: int, high: int) -> int:
    """An integer from `low` to `high`; ValueError naming `text` otherwise."""
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if not low <= number <= high:
        raise ValueError(f"{text!r} is out of range: from {low} to {high}")
    return number


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError('a duration (seconds, or a string such as "30s", "10m", "2h")')
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"a duration from 0.1s to 365 days, but {exc}") from None


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return check


def _of(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise ValueError("true or false" if kind is bool else "a string")
        return value

    return check


def _checked_text(parse: Callable[[str], str], kind: str, wanted: str) -> Callable[[Any], str]:
    """A check of a string setting by `parse`, whose ValueError says what is wrong with it."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(kind)
        try:
            return parse(value)
        except ValueError as exc:
            raise ValueError(f"{wanted}, but {exc}") from None

    return check


_address = _checked_text(parse_address, "an email address", "one email address each")
# Keys whose value is a URL, which may hold a password or a secret path (a chat's webhook):
# an error names the key, never the value.
URL_KEYS = frozenset({"webhook", "catalog", "report_url"})
_webhook_url = _checked_text(check_url, "an http:// or https:// URL", "a URL without credentials")


def _addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("an address or a list of addresses")
    return [_address(item) for item in value]


def parse_host_name(text: str) -> str:
    """A name `serve` may be reached by (`--allow-host`): a DNS name or an address, without
    port, scheme or spaces; lower-cased."""
    if not text or len(text) > 253 or not all(char.isalnum() or char in "-._:[]" for char in text):
        raise ValueError(f"{text!r} is not a host name (letters, digits, - . _ : [ ] only)")
    return text.lower().rstrip(".")


def _host_names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("a host name or a list of them")
    return [parse_host_name(item) for item in value]


def parse_pattern(text: str) -> str:
    """A series pattern (`train/*`): not empty, no control characters."""
    if not text or any(unicodedata.category(char)[0] == "C" for char in text):
        raise ValueError(f"{text!r} is not a series pattern (empty, or a control character)")
    return text


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('a pattern or a list of patterns, such as "train/*"')
    return [parse_pattern(item) for item in value]


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return str(value)

    return check


_security = _one_of(*SECURITY_CHOICES)


def _catalog(value: Any) -> str:
    """A postgresql:// URL without a password; a ConfigError's message hides one."""
    return checked_url(_of(str)(value), "catalog =")


# section -> key in the file -> (argparse destination, check and convert)
KEYS: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "watch": {
        "poll": ("poll", _of(bool)),
        "poll_interval": ("poll_interval", _duration),
        "rescan_every": ("rescan_every", _duration),
        "stale_after": ("stale_after", _duration),
        "live_every": ("live_every", _duration),
        "workers": ("workers", _int_in(1, MAX_WORKERS)),
        "idle_restart": ("idle_restart", _duration),
        "once_foreign": ("once_foreign", _one_of(ONCE_LIVE, ONCE_FINISHED)),
        "stop_wait": ("stop_wait", _duration),
        "output": ("output", lambda value: Path(_of(str)(value))),
        "mirror": ("mirror", lambda value: Path(_of(str)(value))),
        "lease": ("lease", _duration),
        "series": ("series", _patterns),
        "exclude_series": ("exclude_series", _patterns),
        "max_charts": ("max_charts", _int_in(1, MOST_CHARTS)),
        "catalog": ("catalog", _catalog),
        "catalog_password_file": ("catalog_password_file", lambda value: Path(_of(str)(value))),
        "catalog_host": (
            "catalog_host",
            lambda value: checked_host(_of(str)(value), "catalog_host ="),
        ),
    },
    "email": {
        "to": ("email_to", _addresses),
        "from": ("email_from", _address),
        "smtp_host": ("smtp_host", _of(str)),
        "smtp_port": ("smtp_port", _int_in(1, MAX_PORT)),
        "smtp_security": ("smtp_security", _security),
        "smtp_user": ("smtp_user", _of(str)),
        "smtp_password_file": ("smtp_password_file", lambda value: Path(_of(str)(value))),
        "smtp_password_env": ("smtp_password_env", _of(str)),
        "attach_csv": ("email_attach_csv", _of(bool)),
        "report_url": ("email_report_url", _of(str)),
        "retry": ("email_retry", _duration),
        "deadline": ("email_deadline", _duration),
    },
    "serve": {
        "host": ("host", _of(str)),
        "port": ("port", _int_in(0, MAX_PORT)),
        "output": ("output", lambda value: Path(_of(str)(value))),
        "mirror": ("mirror", lambda value: Path(_of(str)(value))),
        "allow_host": ("allow_host", _host_names),
        "cache_mb": ("cache_mb", _int_in(1, MAX_CACHE_MB)),
        "catalog": ("catalog", _catalog),
        "catalog_password_file": ("catalog_password_file", lambda value: Path(_of(str)(value))),
        "catalog_host": (
            "catalog_host",
            lambda value: checked_host(_of(str)(value), "catalog_host ="),
        ),
    },
    # and the rules, read by alerts/rules.py
    "alerts": {
        "webhook": ("alert_webhook", _webhook_url),
        "webhook_token_file": ("alert_webhook_token_file", lambda value: Path(_of(str)(value))),
        "webhook_deadline": ("alert_webhook_deadline", _duration),
    },
}
ALERT_DESTINATION = "alert_rules"


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
        for key in table:
            if ("password" in key or "token" in key) and key not in KEYS[section]:
                raise ConfigError(
                    f"{path}: [{section}] {key}: a secret is never written in the config; use "
                    "smtp_password_file or $LOSSREPORT_SMTP_PASSWORD, webhook_token_file or "
                    "$LOSSREPORT_ALERT_WEBHOOK_TOKEN"
                )
        if section == "alerts":
            rules = {key: value for key, value in table.items() if key not in KEYS[section]}
            settings[ALERT_DESTINATION] = parse_alert_rules(rules, path)
            table = {key: value for key, value in table.items() if key in KEYS[section]}
        for key, value in table.items():
            if key not in KEYS[section]:
                known = ", ".join(KEYS[section])
                raise ConfigError(f"{path}: [{section}] unknown key {key!r} (known: {known})")
            destination, convert = KEYS[section][key]
            try:
                settings[destination] = convert(value)
            except InvalidInputError as exc:  # its message, not the value: it may hold a secret
                raise ConfigError(f"{path}: [{section}] {exc}") from None
            except (ValueError, TypeError) as exc:  # a URL's value not repeated: a secret?
                shown = "" if key in URL_KEYS else f" = {value!r}"
                raise ConfigError(f"{path}: [{section}] {key}{shown}: expected {exc}") from exc
    return settings
