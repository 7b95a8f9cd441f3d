"""The catalog `serve` reads: the daemon's, or one made here from the runs' render markers.

A daemon keeps `STATE/.lossreport-catalog/runs.sqlite` up to date; `serve` only reads it.
Where no daemon keeps one (reports rendered by hand or by trainers), the rows are read from
every run's marker into a catalog in memory, again at most every few seconds: fine for a
small tree, and the page says that a daemon would make it fast.

A daemon's catalog found unusable while served (its bytes overwritten, the file truncated, a
hot journal a killed daemon left, which a reader cannot roll back) is logged once and left
alone: `serve` only reads, and the daemon sets a damaged file aside and rebuilds it. Until the
file changes, the rows come from the markers, as if no daemon kept one.

A team's catalog on a PostgreSQL server (`--catalog`) is read instead of the file. While the
server cannot be reached (or its schema is not this version's) the page says so, the rows
come from this tree's markers and the report files are served as ever; connecting is tried
again every RETRY_SECONDS, and that the server went and came back is logged once each.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .. import runformat, sources
from ..catalog import Catalog, is_unusable, packed_row
from ..catalog.store import DATABASE_ERRORS, JOURNAL_SUFFIX
from ..catalog.urls import CatalogServer, postgres_catalog
from ..errors import CatalogServerError
from ..report import pages
from ..runformat import Homes, marker_refusal, read_marker

logger = logging.getLogger(__name__)
T = TypeVar("T")

REFRESH_SECONDS = 2.0  # a burst of requests shares one look at the catalog or the markers
RETRY_SECONDS = 10.0  # a catalog server that could not be reached is tried again this often

# The daemon's file as last found unusable: device, inode, size, modification time, and
# whether a journal is beside it. Tried again only once one of these changes.
Signature = tuple[int, int, int, int, bool]


class CatalogAccess:
    """The catalog `serve` answers from, replaced as the daemon's file changes (or made from
    the runs' markers every REFRESH_SECONDS where there is none). A catalog replaced is never
    closed here: requests on other threads may still be querying it, and closing a SQLite
    connection under a running query crashed the server (SIGSEGV, six clients sufficed). It
    closes when the last request holding it lets it go."""

    def __init__(self, homes: Homes, server: CatalogServer | None = None) -> None:
        self.homes = homes
        self.server = server
        self.unreachable: str | None = None  # why the catalog server is not read now
        self._server_tried = float("-inf")  # when connecting to it last failed
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._kept = False  # a daemon's catalog, not one made here
        self._identity: tuple[int, int] | None = None  # the daemon's file: device, inode
        self._refused: Signature | None = None
        self._checked = float("-inf")

    def current(self) -> tuple[Catalog, bool]:
        """The catalog to query, and whether a daemon keeps it (else: made from markers)."""
        with self._lock:
            if time.monotonic() - self._checked > REFRESH_SECONDS:
                self._refresh()
                self._checked = time.monotonic()
            assert self._catalog is not None
            return self._catalog, self._kept

    def answer(self, query: Callable[[Catalog, bool], T]) -> T:
        """`query(catalog, kept)` on the current catalog; asked again of the markers' when
        the daemon's cannot be read (damaged, or a hot journal in the way)."""
        catalog, kept = self.current()
        try:
            return query(catalog, kept)
        except DATABASE_ERRORS as exc:
            server = isinstance(exc, CatalogServerError) and self.server is not None
            if not kept or not (
                server or is_unusable(exc) or isinstance(exc, sqlite3.ProgrammingError)
            ):
                raise
            self._set_unusable(catalog, exc)
        return query(*self.current())

    def _set_unusable(self, catalog: Catalog, exc: Exception) -> None:
        with self._lock:
            if catalog is not self._catalog:  # another request did it, or the file changed
                return
            if self.server is not None:
                self._server_failed(exc)
            else:
                self._refused = self._signature()
                self._log_unusable(exc)
            self._catalog, self._kept, self._identity = self._from_markers(), False, None
            self._checked = time.monotonic()

    def _refresh(self) -> None:
        if self.server is not None:
            self._refresh_server()
            return
        identity = self._kept_identity()
        if identity is not None and identity == self._identity and self._catalog is not None:
            return  # the daemon's, open already
        opened = None
        if identity is not None and (self._refused is None or self._signature() != self._refused):
            try:
                opened = Catalog.open_readonly(self.homes.state_dir)
                if opened is not None:
                    opened.count()  # a damaged file opens, and fails at its first query
            except (OSError, sqlite3.Error) as exc:
                if opened is not None:
                    opened.close()
                    opened = None
                self._refused = self._signature()
                self._log_unusable(exc)
        if opened is not None:
            if self._refused is not None:
                logger.info("reading the runs catalog again", extra={"event": "catalog_read"})
            self._refused = None
            self._catalog, self._kept, self._identity = opened, True, identity
        else:
            self._catalog, self._kept, self._identity = self._from_markers(), False, None

    def _refresh_server(self) -> None:
        """Connect to the catalog server, unless connected, or tried less than RETRY_SECONDS
        ago: meanwhile the markers' catalog made at the failure is kept."""
        assert self.server is not None
        if self._kept or time.monotonic() - self._server_tried < RETRY_SECONDS:
            return
        try:
            opened = postgres_catalog().connect(self.server, writable=False)
        except CatalogServerError as exc:
            self._server_failed(exc)
            return
        if self.unreachable is not None:
            logger.info("reading the runs catalog %s again", self.server,
                        extra={"event": "catalog_read"})  # fmt: skip
        self.unreachable = None
        self._catalog, self._kept = opened, True

    def _server_failed(self, exc: Exception) -> None:
        """The catalog server went away (or refuses): say so once, read the markers."""
        if self.unreachable is None:
            logger.error(
                "cannot read the runs catalog %s (%s); serving the report files, and the "
                "runs index from this tree's markers, until it can be read",
                self.server,
                exc,
                extra={"event": "catalog_unreachable"},
            )
        self.unreachable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._catalog, self._kept = self._from_markers(), False
        self._server_tried = time.monotonic()

    def _log_unusable(self, exc: BaseException) -> None:
        logger.error(
            "cannot read the runs catalog %s (%s); reading the runs' markers until it changes",
            self._path(),
            exc,
            extra={"event": "catalog_unreadable"},
        )

    def _path(self) -> Path:
        return self.homes.state_dir / runformat.CATALOG_DIR / runformat.CATALOG_FILE

    def _kept_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self._path(), follow_symlinks=False)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _signature(self) -> Signature | None:
        path = os.fspath(self._path())
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        journal = os.path.lexists(path + JOURNAL_SUFFIX)
        return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, journal

    def _from_markers(self) -> Catalog:
        catalog = Catalog.in_memory()
        try:
            run_dirs = sources.list_runs(self.homes.runs_dir)
        except OSError as exc:
            logger.error("cannot list %s: %s", self.homes.runs_dir, exc)
            run_dirs = []
        rows = []
        for run_dir in run_dirs:
            key = self.homes.key_of(run_dir)
            if not runformat.is_run_name(key):
                continue
            home = self.homes.home_of(key)
            marker = read_marker(home)  # its curves bounded; one over the size limit, logged
            if marker is not None:
                row = pages.index_row(marker.entry, key)
                rows.append(packed_row(row, marker.entry.get("packed")))
                continue
            refusal = marker_refusal(home)
            if refusal is not None:  # listed, saying why it shows nothing
                rows.append(pages.index_row({"status": "not rendered", "error": refusal}, key))
        catalog.put_many(rows)
        return catalog
