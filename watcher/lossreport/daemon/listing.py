"""The daemon's side of the runs catalog (catalog/) and of the static `index.html`.

The daemon holds no run's row in memory: each render's row goes to the catalog, and the
static page is made from the catalog's newest rows, a bounded number, so neither its size
nor the daemon's memory grows with the tree. A catalog left by an earlier daemon is kept:
a run's row is replaced only when its marker says it was rendered since.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from .. import runformat, storage
from ..catalog import Catalog
from ..report import pages
from ..runformat import INDEX_FILE, Homes

logger = logging.getLogger(__name__)

BATCH = 1000  # rows found at start-up written in one transaction


class Listing:
    def __init__(self, homes: Homes) -> None:
        self.homes = homes
        self._listed: set[str] = set()  # runs whose row this daemon has put or checked
        self._pending: dict[str, dict[str, Any]] = {}  # rows found, not written yet
        try:
            self.catalog = Catalog.open(homes.state_dir)
        except (OSError, sqlite3.Error) as exc:  # a read-only tree, a planted link, a bad file
            logger.error(
                "cannot keep the runs catalog in %s (%s); keeping it in memory: `serve` will "
                "not see it",
                homes.state_dir / runformat.CATALOG_DIR,
                exc,
                extra={"event": "catalog_failed"},
            )
            self.catalog = Catalog.in_memory()

    def is_listed(self, key: str) -> bool:
        return key in self._listed

    def found(self, key: str, entry: dict[str, Any]) -> bool:
        """Run `key` has a render marker with `entry`: list it unless the catalog has that
        render already. True if its row changes. Rows are written in batches (`flush`): a
        first start lists every run of the tree."""
        try:
            if self.catalog.rendered_at(key) == str(entry.get("rendered_at", "")):
                self._listed.add(key)
                return False
        except sqlite3.Error as exc:
            return _failed_write(key, exc)
        self._pending[key] = self.row(key, entry)
        self._listed.add(key)
        if len(self._pending) >= BATCH:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the rows `found` is holding."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            self.catalog.put_many(pending.values())
        except sqlite3.Error as exc:
            self._listed.difference_update(pending)  # listed again at their next look
            _failed_write(f"{len(pending)} runs, e.g. {next(iter(pending))}", exc)

    def rendered(self, key: str, entry: dict[str, Any]) -> None:
        """List run `key` as just rendered."""
        self._pending.pop(key, None)
        try:
            self.catalog.put(self.row(key, entry))
        except sqlite3.Error as exc:
            _failed_write(key, exc)
        else:
            self._listed.add(key)

    def failed(self, key: str, error: str) -> None:
        self.flush()  # the error goes on the row, which must be written first
        try:
            self.catalog.mark_failed(
                key, error, pages.index_row({"status": "not rendered", "error": error}, key)
            )
        except sqlite3.Error as exc:
            _failed_write(key, exc)

    def forget(self, key: str) -> None:
        self._listed.discard(key)
        self._pending.pop(key, None)
        try:
            self.catalog.forget(key)
        except sqlite3.Error as exc:
            _failed_write(key, exc)

    def keep_only(self, keys: list[str]) -> None:
        """After a full scan found `keys`: drop every other run's row."""
        self.flush()
        try:
            gone = self.catalog.keep_only(keys)
            self.catalog.optimize()  # a first scan may have listed every run
        except sqlite3.Error as exc:
            logger.error(
                "cannot prune the runs catalog: %s", exc, extra={"event": "catalog_failed"}
            )
            return
        if gone:
            logger.info("%d runs gone from the catalog", gone, extra={"event": "catalog_pruned"})

    def row(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        return pages.index_row(entry, key, self._graphs_link(key))

    def _graphs_link(self, key: str) -> str | None:
        """Run `key`'s loss_graphs/ as the index links it, where that is not `KEY/loss_graphs`
        (its report is in the --output mirror and the index is not, or the other way round)."""
        graphs = self.homes.home_of(key) / runformat.GRAPHS_DIR
        link = Path(os.path.relpath(graphs, self.homes.state_dir)).as_posix()
        return None if link == f"{key}/{runformat.GRAPHS_DIR}" else link

    def write_page(self) -> None:
        """index.html, from the newest rows. Failing to write it is logged, not raised."""
        path = self.homes.state_dir / INDEX_FILE
        self.flush()
        try:
            rows = self.catalog.recent(pages.INDEX_MAX_RUNS)
            page = pages.render_index(rows, total=self.catalog.count())
            storage.atomic_write(path, page.encode())
        except (OSError, sqlite3.Error) as exc:
            logger.error("cannot write %s: %s", path, exc, extra={"event": "index_failed"})

    def close(self) -> None:
        self.flush()
        self.catalog.close()


def _failed_write(key: str, exc: sqlite3.Error) -> bool:
    """A full disk or a catalog locked too long: the run is listed again at its next look."""
    logger.error(
        "run=%s: cannot update the runs catalog: %s",
        key,
        exc,
        extra={"run": key, "event": "catalog_failed"},
    )
    return False
