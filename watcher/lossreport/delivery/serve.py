"""`lossreport serve`: the runs index and every run's report over HTTP, read-only.

Made for a browser at the other end of an SSH tunnel, so it binds 127.0.0.1 unless told
otherwise. Two kinds of URL exist. The views of browse/ (the index `/` over the runs catalog,
`/.sweep`, `/.run/RUN`, `/.api/...`) all start with a dot, which no run's path can. And
`/RUN/loss_graphs/FILE` (a file a render wrote; RUN is the run's path, `exp1/tb/run3` for a
run found below the top). Any other path, a hidden name, `..`, a symlink anywhere below the
runs directory, or anything but a regular file is a 404; a bad query parameter is a 400;
nothing is ever listed or written. Loopback is shared by every user of the machine, so each
connection has a deadline and their number is capped: a stalled client cannot hold a thread for
long.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import os
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .. import runformat
from ..browse import assets, run_view, runs_view, sweep_view
from ..browse.answers import Answer
from ..browse.catalog_access import CatalogAccess
from ..browse.params import Params, reject_unknown
from ..browse.series import SeriesCache
from ..errors import QueryError, RunDirectoryError, ServeError
from ..report import pages
from ..runformat import Homes, read_marker

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

MAX_QUERY_FIELDS = 64  # parameters in one URL; the index takes about a dozen
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json"}
REQUEST_TIMEOUT_SECONDS = 30.0  # for the whole request to arrive, and for each write of the answer
MAX_CONNECTIONS = 64  # at once; a browser opens about 6, so this is many people or an attack

# Nothing below the runs directory is followed when it is a symlink: a link in a shared tree
# could show any file of the run (run.json, shards) or of another. O_NONBLOCK: opening a FIFO
# to read would wait for a writer.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


class RunsSite:
    """What the server may show: the index page and files inside runs' loss_graphs/."""

    def __init__(self, runs_dir: Path, output: Path | None = None) -> None:
        self.root = runs_dir.resolve()
        # Where each run's report is: its folder, or the daemon's --output mirror.
        self.homes = Homes(self.root, output.resolve() if output is not None else None)
        self.catalogs = CatalogAccess(self.homes)
        self.series = SeriesCache()

    def view(self, parts: list[str], params: Params) -> Answer | None:
        """The answer of a browse/ view for a path of `parts`, or None when none has it.
        Raises QueryError for a bad parameter."""
        route = tuple(parts)
        if route in (("",), (runformat.INDEX_FILE,)):
            return runs_view.index_page(*self.catalogs.current(), params)
        if route == (".api", "runs"):
            return runs_view.runs_api(self.catalogs.current()[0], params)
        if route == (".api", "sweeps"):
            return runs_view.sweeps_api(self.catalogs.current()[0], params)
        if route == (".sweep",):
            return sweep_view.sweep_page(self.catalogs.current()[0], params)
        if route == (".api", "series"):
            return run_view.series(self.root, self.series, params)
        if len(route) >= 2 and route[0] == ".run":
            reject_unknown(params, ())
            key = "/".join(route[1:])
            catalog = self.catalogs.current()[0]
            row = next(iter(catalog.rows([key])), None) if runformat.is_run_name(key) else None
            return run_view.run_page(self.root, self.series, key, row, self.report_of(key))
        if route == (".assets", assets.CHART_LIBRARY) and not params:
            return Answer(HTTPStatus.OK, "text/javascript", assets.chart_library())
        return None

    def report_of(self, run: str) -> str | None:
        """The URL of a run's report, for `/RUN/`. Built from the run's own name and the
        report's file name: the marker is anyone's to write in a shared tree, and its path
        could name another run or, as `//host/...`, another site."""
        if not runformat.is_run_name(run):
            return None
        try:
            with self._graphs_dir(run):  # a real run and loss_graphs, not links to them
                marker = read_marker(self.homes.home_of(run))
        except OSError:
            return None
        name = PurePosixPath(str(marker.entry.get("report", ""))).name if marker else ""
        if not _plain_name(name):
            return None
        return f"/{quote(run)}/{runformat.GRAPHS_DIR}/{quote(name)}"  # quote keeps the /

    def open_file(self, run: str, name: str) -> int | None:
        """A descriptor of `RUN/loss_graphs/NAME` open to read, if it is a regular file (not a
        link to one) in a real loss_graphs/ of a real run directory; else None."""
        if not (runformat.is_run_name(run) and _plain_name(name)):
            return None
        try:
            with self._graphs_dir(run) as graphs:
                # Looked at first so that a device is never opened (opening one can act).
                if not stat.S_ISREG(os.stat(name, dir_fd=graphs, follow_symlinks=False).st_mode):
                    return None
                fd = os.open(name, _FILE_FLAGS, dir_fd=graphs)
        except OSError:  # missing, a link (ELOOP), a name over NAME_MAX, unreadable...
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since it was looked at
            os.close(fd)
            return None
        return fd

    @contextmanager
    def _graphs_dir(self, run: str) -> Iterator[int]:
        """A descriptor of RUN's loss_graphs/ (RUN a run's path, checked by the caller) in its
        home, each folder opened without following a symlink. Raises OSError when one is
        missing, a link, or not a directory."""
        home = self.homes.home_of(run)
        base = self.homes.root_of(home)
        fds: list[int] = []
        try:
            fds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY))
            for part in [*home.relative_to(base).parts, runformat.GRAPHS_DIR]:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
            yield fds[-1]
        finally:
            for fd in fds:
                os.close(fd)


def _plain_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


class _DeadlineReader(io.RawIOBase):
    """A socket's incoming bytes, up to a deadline for all of them: a per-read timeout alone
    lets a client that sends a byte now and then hold its connection for ever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        timeout = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(memoryview(buffer))
        finally:
            self._sock.settimeout(timeout)


class _Handler(BaseHTTPRequestHandler):
    site: RunsSite  # set on the subclass made for each server, as is `timeout`
    timeout: ClassVar[float] = REQUEST_TIMEOUT_SECONDS
    server_version = "lossreport"
    sys_version = ""

    def setup(self) -> None:
        super().setup()  # sets the socket timeout, which then bounds each write of the answer
        self.rfile.close()  # the plain reader it made; the socket stays open
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.timeout))

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        try:
            self._route(send_body)
        except (ConnectionError, TimeoutError):  # the browser went away, or stopped reading
            self.close_connection = True
        except Exception:  # a bug or a broken run must not take the connection down silently
            logger.exception("cannot answer %s", self.path)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _route(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        try:
            params = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
            answer = self.site.view(parts, params)
        except QueryError as exc:
            answer = Answer.text(HTTPStatus.BAD_REQUEST, str(exc))
        except ValueError:  # over MAX_QUERY_FIELDS
            answer = Answer.text(HTTPStatus.BAD_REQUEST, "too many query parameters")
        if answer is not None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self._finish_headers(len(answer.body), answer.csp)
            if send_body:
                self.wfile.write(answer.body)
            return
        if parts[0].startswith("."):  # the views' own; never a run's path
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if len(parts) >= 3 and parts[-2] == runformat.GRAPHS_DIR:  # /RUN/loss_graphs/FILE
            fd = self.site.open_file("/".join(parts[:-2]), parts[-1])
            if fd is not None:
                with open(fd, "rb") as handle:
                    self._send_file(handle, parts[-1], send_body)
                return
        else:  # /RUN or /RUN/ (RUN: the run's path, `exp1/tb/run3`): its report
            target = self.site.report_of("/".join(parts[:-1] if parts[-1] == "" else parts))
            if target:
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", target)
                self._finish_headers(0)
                return
        self.send_error(HTTPStatus.NOT_FOUND)

    def _send_file(self, handle: BinaryIO, name: str, send_body: bool) -> None:
        content_type = TYPES.get(PurePosixPath(name).suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        if content_type == "text/html":
            content_type = "text/html; charset=utf-8"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self._finish_headers(os.fstat(handle.fileno()).st_size)
        if send_body:
            shutil.copyfileobj(handle, self.wfile)

    def _finish_headers(self, length: int, csp: str = pages.REPORT_CSP) -> None:
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", csp)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class RunsServer(ThreadingHTTPServer):
    """One thread a connection, at most `max_connections` at once; each request must arrive
    within `timeout` seconds. A connection over the limit is closed at once, unread: answering
    it (a 503) would take a thread or a write that a client which never reads could stall,
    which is what the limit is there to prevent."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        site: RunsSite,
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections
        self._full = False  # warned that the limit is reached, until a slot is free again
        handler = type("Handler", (_Handler,), {"site": site, "timeout": timeout})
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if not self._full:
                self._full = True
                logger.warning(
                    "%d connections open: closing new ones until one ends", self._max_connections
                )
            self.shutdown_request(request)
            return
        self._full = False
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started, so none will free the slot
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away is routine; anything else is a bug, logged (not printed)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("connection from %s ended early", client_address[0], exc_info=True)
        else:
            logger.exception("error while serving %s", client_address[0])


def serve(
    runs_dir: Path, host: str, port: int, stop: threading.Event, output: Path | None = None
) -> None:
    """Serve until `stop` is set; `output`: the daemon's --output, where the reports of runs
    in folders it could not write are. Raises ServeError, one line, when it cannot listen."""
    if not runs_dir.is_dir():
        raise RunDirectoryError(runs_dir, "is not a directory")
    # A host from a config file can hold a line break: shown quoted, the message stays one line.
    address = f"{host}:{port}" if str(host).isprintable() else f"{host!r}:{port}"
    if not 0 <= port <= 65535:
        raise ServeError(f"cannot listen on {address}: the port must be 0 to 65535")
    if output is not None and not output.is_dir():
        raise RunDirectoryError(output, "is not a directory (--output)")
    site = RunsSite(runs_dir, output)
    try:
        server = RunsServer((host, port), site)
    except (OSError, UnicodeError, TypeError) as exc:  # a host IDNA cannot encode, or with a NUL
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise ServeError(f"cannot listen on {address}: {reason[:1].lower()}{reason[1:]}") from None
    bound_host, bound_port = server.server_address[:2]
    logger.info(
        "serving %s at http://%s:%d/",
        runs_dir,
        bound_host,
        bound_port,
        extra={"event": "serving", "host": bound_host, "port": bound_port},
    )
    thread = threading.Thread(target=server.serve_forever, name="lossreport-http", daemon=True)
    thread.start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
