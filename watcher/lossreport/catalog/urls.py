"""A catalog named by a URL (`--catalog postgresql://...`), checked without the driver: the
command line refuses a bad one before anything starts, whether psycopg is installed or not.

A password in the URL is refused: a command line is seen by every user of the machine (ps,
/proc) and kept in shell histories and service files. libpq's own ways give it instead:
PGPASSWORD, a .pgpass file (PGPASSFILE), or `catalog_password_file` in a --config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from ..errors import InvalidInputError
from .places import HERE, Place

if TYPE_CHECKING:
    from .postgres import PostgresCatalog

SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class CatalogServer:
    """Where a team's catalog is: the URL (no password in it), the password if one was read
    from a file named in --config (kept out of repr, so out of logs), and the place whose rows
    a daemon writes there, or whose reports a `serve` can link (places.py)."""

    url: str
    password: str | None = field(default=None, repr=False)
    place: Place = HERE

    def __str__(self) -> str:
        return redacted(self.url)


def checked_url(url: str, flag: str = "--catalog") -> str:
    """`url` if it names a PostgreSQL database without a password; else InvalidInputError
    naming `flag` and what is wrong (the password, if any, hidden)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidInputError(
            f"{flag} {redacted(url)}: not a postgresql:// URL (the SQLite catalog needs none: "
            "it is kept in the runs directory)"
        )
    query = parse_qs(parts.query)
    if parts.password is not None or "password" in query or _PASSWORD.search(url):
        raise InvalidInputError(
            f"{flag} {redacted(url)}: holds a password, which others can read in a command "
            "line, a process listing or a config file; give it in PGPASSWORD, a .pgpass file "
            "or a --config file's catalog_password_file instead"
        )
    return url


def postgres_catalog() -> type[PostgresCatalog]:
    """The PostgreSQL catalog's class, imported only when a --catalog asks for it (psycopg is
    an optional dependency); InvalidInputError saying how to install it when it is missing."""
    try:
        from .postgres import PostgresCatalog
    except ImportError as exc:
        raise InvalidInputError(
            f"--catalog: the PostgreSQL driver cannot be imported ({exc}); install it with "
            "pip install 'lossreport[postgresql]'"
        ) from None
    return PostgresCatalog


# A password after the user, up to the host's `@`: the last one before the query, so that a
# password holding `/` or `@` (which the URL should have escaped) is hidden whole.
_PASSWORD = re.compile(r"(://[^:/@]*:)[^?#]*@")


def redacted(url: str) -> str:
    """`url` with any password hidden, to be logged or shown."""
    url = _PASSWORD.sub(r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)
