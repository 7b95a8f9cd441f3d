"""Where a run and its report live: a catalog row's *place*.

A team's catalog (PostgreSQL) holds the runs of many trees and buckets. Each row names its
place: the host and the runs tree's absolute path, or a bucket's s3:// URL (reachable from any
host), and the `--output` mirror its report went to, if any (a folder on the daemon's host).
A daemon prunes only its own place's rows; `serve` links the reports of its own place and
names the others'. SQLite's catalog, kept in its tree, holds one place, `HERE`: whatever path
the tree is reached by, its rows are that tree's.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InvalidInputError
from ..runformat import GRAPHS_DIR

MAX_HOST = 253  # a DNS name's longest


@dataclass(frozen=True)
class Place:
    host: str = ""  # the daemon's host; "" for a bucket whose reports stay in it
    tree: str = ""  # the tree's absolute path, or its s3:// URL; "" for HERE
    output: str = ""  # the --output mirror on `host`, "" for none

    @property
    def name(self) -> str:
        """How the runs index and its `where` filter name the place: `host:/path`, or the
        bucket's URL; with where its reports are, when that is an --output mirror."""
        if not self.tree:
            return ""
        name = self.tree if _is_url(self.tree) else f"{self.host}:{self.tree}"
        return f"{name} (reports in {self.host}:{self.output})" if self.output else name

    def report_at(self, key: str, report: str) -> str:
        """Where run `key`'s report file is, for a reader who cannot be linked to it."""
        file = PurePosixPath(report).name
        if not file or not self.tree:
            return ""
        if self.output:
            return f"{self.host}:{self.output}/{key}/{GRAPHS_DIR}/{file}"
        if _is_url(self.tree):
            return f"{self.tree.rstrip('/')}/{key}/{GRAPHS_DIR}/{file}"
        return f"{self.host}:{self.tree}/{key}/{GRAPHS_DIR}/{file}"

    def values(self) -> tuple[str, str, str]:
        return self.host, self.tree, self.output


HERE = Place()


def place_of(runs_dir: Path | str, output: Path | None, host: str | None = None) -> Place:
    """The place of a daemon (or `serve`) on `runs_dir` (a folder or an s3:// URL) with
    `output`, on `host` (default: this one's name; daemons on several hosts that share a tree
    over NFS give one name, `--catalog-host`, so that its runs are one place's)."""
    host = socket.gethostname() if host is None else host
    if isinstance(runs_dir, Path):
        tree, local = str(runs_dir.resolve()), True
    else:
        tree, local = runs_dir.rstrip("/"), False
    kept = "" if output is None else str(output.resolve())
    return Place(host if local or kept else "", tree, kept)


def checked_host(text: str, flag: str = "--catalog-host") -> str:
    """`text` as a host's name in a place; InvalidInputError naming `flag` if it is empty,
    too long or holds a space or control character."""
    if not text or len(text) > MAX_HOST or not text.isprintable() or " " in text:
        raise InvalidInputError(
            f"{flag} {text[:MAX_HOST]!r}: must be a host's name, 1 to {MAX_HOST} printable "
            "characters without spaces"
        )
    return text


def _is_url(tree: str) -> bool:
    return "://" in tree
