"""The catalog `serve` reads: the daemon's, or one made here from the runs' render markers.

A daemon keeps `STATE/.lossreport-catalog/runs.sqlite` up to date; `serve` only reads it.
Where no daemon keeps one (reports rendered by hand or by trainers), the rows are read from
every run's marker into a catalog in memory, again at most every few seconds: fine for a
small tree, and the page says that a daemon would make it fast.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from .. import runformat, sources
from ..catalog import Catalog
from ..report import pages
from ..runformat import Homes, read_marker

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0  # a burst of requests shares one look at the catalog or the markers


class CatalogAccess:
    def __init__(self, homes: Homes) -> None:
        self.homes = homes
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._kept = False  # a daemon's catalog, not one made here
        self._identity: tuple[int, int] | None = None  # the daemon's file: device, inode
        self._checked = float("-inf")

    def current(self) -> tuple[Catalog, bool]:
        """The catalog to query, and whether a daemon keeps it (else: made from markers)."""
        with self._lock:
            if time.monotonic() - self._checked > REFRESH_SECONDS:
                self._refresh()
                self._checked = time.monotonic()
            assert self._catalog is not None
            return self._catalog, self._kept

    def _refresh(self) -> None:
        identity = self._kept_identity()
        if identity is not None and identity == self._identity and self._catalog is not None:
            return  # the daemon's, open already
        opened = None
        if identity is not None:
            try:
                opened = Catalog.open_readonly(self.homes.state_dir)
            except (OSError, sqlite3.Error) as exc:
                logger.error("cannot read the runs catalog: %s; reading the runs instead", exc)
        if self._catalog is not None:
            self._catalog.close()
        if opened is not None:
            self._catalog, self._kept, self._identity = opened, True, identity
        else:
            self._catalog, self._kept, self._identity = self._from_markers(), False, None

    def _kept_identity(self) -> tuple[int, int] | None:
        path = self.homes.state_dir / runformat.CATALOG_DIR / runformat.CATALOG_FILE
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return info.st_dev, info.st_ino

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
            marker = read_marker(self.homes.home_of(key)) if runformat.is_run_name(key) else None
            if marker is not None:
                rows.append(pages.index_row(marker.entry, key))
        catalog.put_many(rows)
        return catalog
