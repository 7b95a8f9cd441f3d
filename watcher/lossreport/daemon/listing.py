"""The daemon's side of the runs catalog (catalog/) and of the static `index.html`.

The daemon holds no run's row in memory: each render's row goes to the catalog, and the
static page is made from the catalog's newest rows, a bounded number, so neither its size
nor the daemon's memory grows with the tree. A catalog left by an earlier daemon is kept:
a run's row is replaced only when its marker says it was rendered since. A row's overview
curves are bounded (`runformat.index_curves`): the marker they come from is the run owner's.

A catalog found damaged while the daemon runs (overwritten, truncated: any query says it is
no database) is set aside and made again from the runs' markers, as a restart would, logged
once: the index goes on updating.

A team's catalog on a PostgreSQL server (`--catalog`) is never a reason to stop rendering:
while the server is down (or refuses, its schema newer than this daemon), the rows it could not
take are kept, at most MAX_UNWRITTEN (beyond that the oldest are left to the next full scan,
which lists them again from their markers), written when it is back; that it went away, and
that it came back, are each logged once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from .. import runformat, sources, storage
from ..catalog import Catalog, is_damaged, packed_row
from ..catalog.store import DATABASE_ERRORS
from ..catalog.urls import CatalogServer, postgres_catalog
from ..errors import CatalogSchemaError, CatalogServerError
from ..report import pages
from ..runformat import INDEX_FILE, Homes, index_curves, read_marker

logger = logging.getLogger(__name__)

BATCH = 1000  # rows found at start-up written in one transaction
MAX_UNWRITTEN = 10_000  # rows kept for a catalog server that is down (packed: 3.4 KB each)
OPEN_ERRORS: tuple[type[Exception], ...] = (OSError, *DATABASE_ERRORS)


class Listing:
    def __init__(self, homes: Homes, server: CatalogServer | None = None) -> None:
        """`server`: a team's catalog, where this daemon writes and prunes only its own
        place's rows (raises CatalogSchemaError at once when its schema is newer than this
        daemon's); None: SQLite's, in the tree."""
        self.homes = homes
        self._server = server
        self._listed: set[str] = set()  # runs whose row this daemon has put or checked
        self._pending: dict[str, dict[str, Any]] = {}  # rows found, not written yet
        self._seen: dict[str, tuple[int, bool]] = {}  # stamps (seen.py) not written yet
        self._unwritten: dict[str, dict[str, Any]] = {}  # rows the server could not take
        self._down = False  # the catalog server is unreachable, and that was logged
        self._rebuilding = False
        self._filling_empty = False  # a first start: no run has a row but those it listed
        self.catalog = self._opened()

    def _opened(self) -> Catalog:
        if self._server is not None:
            catalog = postgres_catalog().unconnected(self._server, writable=True)
            try:
                catalog.reconnect()
            except CatalogSchemaError:  # a server that answers, and refuses: waiting is no help
                catalog.close()
                raise
            except CatalogServerError as exc:
                self._server_down(exc)
            return catalog
        try:
            return Catalog.open(self.homes.state_dir)
        except OPEN_ERRORS as exc:  # a read-only tree, a planted link, a bad file
            logger.error(
                "cannot keep the runs catalog in %s (%s); keeping it in memory: `serve` will "
                "not see it",
                self.homes.state_dir / runformat.CATALOG_DIR,
                exc,
                extra={"event": "catalog_failed"},
            )
            return Catalog.in_memory()

    def is_listed(self, key: str) -> bool:
        return key in self._listed

    def found(self, key: str, entry: dict[str, Any]) -> bool:
        """Run `key` has a render marker with `entry`: list it unless the catalog has that
        render already. True if its row changes. Rows are written in batches (`flush`): a
        first start lists every run of the tree."""
        try:
            if not self._filling_empty and self.catalog.rendered_at(key) == str(
                entry.get("rendered_at", "")
            ):
                self._listed.add(key)
                return False
        except DATABASE_ERRORS as exc:
            if self._keep({key: self.row(key, entry, bounded=True)}, exc):
                return True
            return self._failed_write(key, exc)
        self._pending[key] = self.row(key, entry, bounded=True)
        self._listed.add(key)
        if len(self._pending) >= BATCH:
            self.flush()
        return True

    def seen(self, key: str) -> tuple[int, bool] | None:
        """The stamp and running flag last recorded for run `key` (daemon/seen.py)."""
        try:
            return self._seen.get(key) or self.catalog.seen(key)
        except DATABASE_ERRORS:
            return None  # the run gets a full look, which reports the catalog's trouble

    def stamps(self) -> dict[str, tuple[int, bool]]:
        """Every run's recorded stamp and running flag, by key: what a scan compares with.
        Asked as a scan starts: SQLite's catalog, empty (a first start), is filled without
        its query indexes until the scan's `keep_only` (store.QUERY_INDEXES)."""
        self.flush()
        try:
            if self._server is None:
                self._filling_empty = self.catalog.begin_fill()
            return self.catalog.stamps()
        except DATABASE_ERRORS:
            return {}  # each run gets a full look, which reports the catalog's trouble

    def checked(self, key: str) -> None:
        """Run `key`'s row is the one its marker gives (its stamp says so)."""
        self._listed.add(key)

    def saw(self, key: str, stamp: int, running: bool) -> None:
        """Record run `key`'s stamp (seen.py), written with the next batch of rows."""
        self._seen[key] = (stamp, running)
        if len(self._seen) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the rows `found` and the stamps `saw` are holding."""
        if self._pending:
            pending, self._pending = self._pending, {}
            try:
                self.catalog.put_many(pending.values())
            except DATABASE_ERRORS as exc:
                for key in pending:  # their rows are not there: no stamp says they are
                    self._seen.pop(key, None)
                if not self._keep(pending, exc):
                    self._listed.difference_update(pending)  # listed again at their next look
                    # (Found in their markers: a catalog made afresh has them again.)
                    self._failed_write(f"{len(pending)} runs, e.g. {next(iter(pending))}", exc)
        if self._seen:
            seen, self._seen = self._seen, {}
            try:  # a stamp not written costs its run a full look at the next start
                self.catalog.put_seen((key, *found) for key, found in seen.items())
            except DATABASE_ERRORS as exc:
                if self._server is not None:
                    self._server_down(exc)
                else:
                    self._failed_write(f"{len(seen)} runs, e.g. {next(iter(seen))}", exc)

    def rendered(self, key: str, entry: dict[str, Any]) -> None:
        """List run `key` as just rendered."""
        self._pending.pop(key, None)
        self._seen.pop(key, None)
        row = self.row(key, entry)
        try:
            self.catalog.put(row)
        except DATABASE_ERRORS as exc:
            if self._keep({key: row}, exc):
                return
            self._failed_write(key, exc)  # made afresh, it lists the run from its new marker
        else:
            self._unwritten.pop(key, None)  # an older row of it, waiting: this one is newer
            self._listed.add(key)
            if self._down:
                self.retry()

    def failed(self, key: str, error: str) -> None:
        self.flush()  # the error goes on the row, which must be written first
        try:
            self.catalog.mark_failed(
                key, error, pages.index_row({"status": "not rendered", "error": error}, key)
            )
        except DATABASE_ERRORS as exc:
            if self._server is not None:  # recorded again at the run's next failed render
                self._server_down(exc)
                return
            self._failed_write(key, exc)

    def forget(self, key: str) -> None:
        self._listed.discard(key)
        self._pending.pop(key, None)
        self._seen.pop(key, None)
        self._unwritten.pop(key, None)
        try:
            self.catalog.forget(key)
        except DATABASE_ERRORS as exc:
            if self._server is not None:  # its row goes at the next full scan's keep_only
                self._server_down(exc)
                return
            self._failed_write(key, exc)

    def keep_only(self, keys: list[str]) -> None:
        """After a full scan found `keys`: drop every other run's row."""
        self.flush()
        self._filling_empty = False
        try:
            gone = self.catalog.keep_only(keys)
            if self._server is None:
                self.catalog.end_fill()
            self.catalog.optimize()  # a first scan may have listed every run
        except DATABASE_ERRORS as exc:
            if self._server is not None:
                self._server_down(exc)
                return
            if not self._recovered(exc):
                logger.error(
                    "cannot prune the runs catalog: %s", exc, extra={"event": "catalog_failed"}
                )
            return
        if gone:
            logger.info("%d runs gone from the catalog", gone, extra={"event": "catalog_pruned"})

    def row(self, key: str, entry: dict[str, Any], bounded: bool = False) -> dict[str, Any]:
        """Run `key`'s catalog row from `entry`, its curves bounded unless they are already
        (an entry `read_marker` gave), and packed (the blob a marker carries, where it is
        ours): the row is held until its batch is written, or while a catalog server is
        down."""
        if not bounded:
            entry = {**entry, "curves": index_curves(entry.get("curves"))}
        row = pages.index_row(entry, key, self._graphs_link(key))
        return packed_row(row, entry.get("packed"))

    def _graphs_link(self, key: str) -> str | None:
        """Run `key`'s loss_graphs/ as the index links it, where that is not `KEY/loss_graphs`
        (its report is in the --output mirror and the index is not, or the other way round).
        Without --output, never: both are in the runs directory (a first start asks this of
        every run, and the path arithmetic cost about 11 µs a run)."""
        if self.homes.output is None:
            return None
        graphs = self.homes.home_of(key) / runformat.GRAPHS_DIR
        link = Path(os.path.relpath(graphs, self.homes.state_dir)).as_posix()
        return None if link == f"{key}/{runformat.GRAPHS_DIR}" else link

    def write_page(self) -> None:
        """index.html, from the newest rows. Failing to write it is logged, not raised."""
        path = self.homes.state_dir / INDEX_FILE
        self.flush()
        for _ in range(2):  # again once, from a catalog made afresh
            try:
                rows = self.catalog.recent(pages.INDEX_MAX_RUNS, here=True)
                page = pages.render_index(rows, total=self.catalog.count(here=True))
                storage.atomic_write(path, page.encode())
                return
            except DATABASE_ERRORS as exc:
                if self._server is not None:  # written again once the server is back
                    self._server_down(exc)
                    return
                if not self._recovered(exc):
                    logger.error("cannot write %s: %s", path, exc, extra={"event": "index_failed"})
                    return
            except OSError as exc:
                logger.error("cannot write %s: %s", path, exc, extra={"event": "index_failed"})
                return

    def close(self) -> None:
        self.flush()
        self.retry()
        if self._server is None:  # stopped during a first scan's fill
            with contextlib.suppress(*DATABASE_ERRORS):
                self.catalog.end_fill()
        if self._unwritten:
            logger.error(
                "the runs catalog %s did not take %d rows before the daemon stopped: the next "
                "daemon lists them from their markers",
                self._server,
                len(self._unwritten),
                extra={"event": "catalog_unwritten"},
            )
        self.catalog.close()

    def retry(self) -> None:
        """Write the rows a catalog server that was down could not take (or, with none
        waiting, see whether it is back)."""
        if not self._unwritten and not self._down:
            return
        waiting = dict(self._unwritten)
        try:
            if waiting:
                self.catalog.put_many(waiting.values())
            else:  # down at a read or a prune: is it back?
                self.catalog.count()
        except DATABASE_ERRORS as exc:
            self._server_down(exc)
            return
        for key in waiting:
            if self._unwritten.get(key) is waiting[key]:
                del self._unwritten[key]
        self._server_up(len(waiting))

    def _keep(self, rows: dict[str, dict[str, Any]], exc: Exception) -> bool:
        """Keep `rows` for `retry` if a catalog server could not take them; True if it did.
        Past MAX_UNWRITTEN the oldest kept are dropped and left to the next full scan."""
        if self._server is None:
            return False
        self._server_down(exc)
        self._unwritten.update(rows)
        self._listed.update(rows)
        while len(self._unwritten) > MAX_UNWRITTEN:
            oldest = next(iter(self._unwritten))
            del self._unwritten[oldest]
            self._listed.discard(oldest)
        return True

    def _server_down(self, exc: Exception) -> None:
        if self._down:
            return
        self._down = True
        logger.error(
            "the runs catalog %s cannot be written (%s); rendering goes on, and the rows are "
            "written when it can be",
            self._server,
            exc,
            extra={"event": "catalog_unreachable"},
        )

    def _server_up(self, written: int) -> None:
        if not self._down:
            return
        self._down = False
        logger.info(
            "the runs catalog %s is back: %d waiting rows written",
            self._server,
            written,
            extra={"event": "catalog_reachable"},
        )

    def _failed_write(self, key: str, exc: Exception) -> bool:
        """A full disk or a catalog locked too long: the run is listed again at its next look.
        A damaged catalog: made afresh. True if it was (the caller may try again)."""
        if self._recovered(exc):
            return True
        logger.error(
            "run=%s: cannot update the runs catalog: %s",
            key,
            exc,
            extra={"run": key, "event": "catalog_failed"},
        )
        return False

    def _recovered(self, exc: Exception) -> bool:
        """If `exc` says the catalog is damaged: set it aside, open a new one and list every
        run with a marker in it, as a restart would. True if that was done."""
        if self._rebuilding or not is_damaged(exc):
            return False
        self._rebuilding = True
        try:
            aside = self.catalog.set_aside()
            logger.error(
                "the runs catalog %s is damaged (%s): %s; rebuilding it from the runs' markers",
                self.homes.state_dir / runformat.CATALOG_DIR / runformat.CATALOG_FILE,
                exc,
                f"set aside as {aside}" if aside else "set aside already",
                extra={"event": "catalog_damaged"},
            )
            self.catalog = self._opened()
            self._listed.clear()
            self._rebuild()
        finally:
            self._rebuilding = False
        return True

    def _rebuild(self) -> None:
        try:
            run_dirs = sources.list_runs(self.homes.runs_dir)
        except OSError as exc:  # listed again as the daemon looks at each run
            logger.error("cannot list %s: %s", self.homes.runs_dir, exc)
            return
        for run_dir in run_dirs:
            key = self.homes.key_of(run_dir)
            marker = read_marker(self.homes.home_of(key)) if runformat.is_run_name(key) else None
            if marker is not None and key not in self._pending:
                self._pending[key] = self.row(key, marker.entry, bounded=True)
                self._listed.add(key)
        self.flush()
