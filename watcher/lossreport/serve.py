"""`lossreport serve`: the runs index and every run's report over HTTP, read-only.

Made for a browser at the other end of an SSH tunnel, so it binds 127.0.0.1 unless told
otherwise. Only two kinds of URL exist: `/` (the index, built from the render markers) and
`/RUN/loss_graphs/FILE` (a file a render wrote). Any other path, a hidden name, `..`, or a
symlink leading outside the runs directory is a 404; nothing is ever listed or written.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import shutil
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import report, rundir
from .errors import RunDirectoryError
from .runstate import read_marker

logger = logging.getLogger(__name__)

INDEX_TTL_SECONDS = 2.0  # a burst of requests shares one scan of the runs directory
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json"}


class RunsSite:
    """What the server may show: the index page and files inside runs' loss_graphs/."""

    def __init__(self, runs_dir: Path) -> None:
        self.root = runs_dir.resolve()
        self._index: tuple[float, bytes] | None = None
        self._lock = threading.Lock()

    def index(self) -> bytes:
        with self._lock:
            if self._index is None or time.monotonic() - self._index[0] > INDEX_TTL_SECONDS:
                self._index = (time.monotonic(), self._build_index())
            return self._index[1]

    def _build_index(self) -> bytes:
        try:
            run_dirs = rundir.list_run_dirs(self.root)
        except OSError as exc:
            logger.error("cannot list %s: %s", self.root, exc)
            run_dirs = []
        markers = [read_marker(run_dir) for run_dir in run_dirs]
        rows = [report.index_row(marker.entry) for marker in markers if marker is not None]
        return report.render_index(rows).encode()

    def report_of(self, run: str) -> str | None:
        """The URL of a run's report, for `/RUN/`."""
        if not _plain_name(run) or not (self.root / run).is_dir():
            return None
        marker = read_marker(self.root / run)
        return "/" + quote(str(marker.entry.get("report", ""))) if marker else None

    def file(self, run: str, name: str) -> Path | None:
        """`RUN/loss_graphs/NAME` if it is a regular file really inside the runs directory."""
        if not (_plain_name(run) and _plain_name(name)):
            return None
        path = (self.root / run / rundir.GRAPHS_DIR / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None  # a symlink out of the runs directory, or nothing
        return path


def _plain_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


class _Handler(BaseHTTPRequestHandler):
    site: RunsSite  # set on the subclass made for each server
    server_version = "lossreport"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        try:
            self._route(send_body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
        except Exception:  # a bug or a broken run must not take the connection down silently
            logger.exception("cannot answer %s", self.path)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _route(self, send_body: bool) -> None:
        parts = [unquote(part) for part in urlsplit(self.path).path.split("/")[1:]]
        if parts in ([""], ["index.html"]):
            self._send_bytes(self.site.index(), "text/html; charset=utf-8", send_body)
            return
        if len(parts) == 1 or parts[1:] == [""]:  # /RUN or /RUN/: its report
            target = self.site.report_of(parts[0])
            if target:
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", target)
                self._finish_headers(0)
                return
        if len(parts) == 3 and parts[1] == rundir.GRAPHS_DIR:
            path = self.site.file(parts[0], parts[2])
            if path is not None:
                self._send_file(path, send_body)
                return
        self.send_error(HTTPStatus.NOT_FOUND)

    def _send_bytes(self, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self._finish_headers(len(body))
        if send_body:
            self.wfile.write(body)

    def _send_file(self, path: Path, send_body: bool) -> None:
        try:
            handle = path.open("rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            content_type = TYPES.get(path.suffix) or (
                mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            )
            if content_type == "text/html":
                content_type = "text/html; charset=utf-8"
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self._finish_headers(os.fstat(handle.fileno()).st_size)
            if send_body:
                shutil.copyfileobj(handle, self.wfile)

    def _finish_headers(self, length: int) -> None:
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", report.index_csp())
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def serve(runs_dir: Path, host: str, port: int, stop: threading.Event) -> None:
    """Serve until `stop` is set."""
    if not runs_dir.is_dir():
        raise RunDirectoryError(runs_dir, "is not a directory")
    handler = type("Handler", (_Handler,), {"site": RunsSite(runs_dir)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
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
