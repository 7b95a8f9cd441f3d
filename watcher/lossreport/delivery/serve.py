"""`lossreport serve`: the runs index and every run's report over HTTP, read-only.

Made for a browser at the other end of an SSH tunnel, so it binds 127.0.0.1 unless told
otherwise. Two kinds of URL exist. The views of browse/ (the index `/` over the runs catalog,
`/.sweep`, `/.run/RUN`, `/.api/...`) all start with a dot, which no run's path can. And
`/RUN/loss_graphs/FILE` (a file a render wrote; RUN is the run's path, `exp1/tb/run3` for a
run found below the top). Any other path, a hidden name, `..`, a symlink anywhere below the
runs directory, or anything but a regular file is a 404; a bad query parameter is a 400;
nothing is ever listed or written. Loopback is shared by every user of the machine, so each
request and each answer has a deadline, an answer must be read at a minimum rate, and the
connections and the answers made at once are capped (`RunsServer`): a stalled client cannot
hold a thread for long, nor one that sends nothing an answer's slot. A request whose Host
header names another site (a DNS-rebinding page) is refused with a 421.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import mimetypes
import os
import select
import shutil
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NoReturn
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .. import runformat
from ..browse import assets, run_view, runs_view, sweep_view
from ..browse.answers import Answer
from ..browse.catalog_access import CatalogAccess
from ..browse.params import Params, reject_unknown
from ..browse.series import CACHE_BYTES, SeriesCache
from ..catalog.urls import CatalogServer
from ..errors import QueryError, RunDirectoryError, ServeError
from ..report import pages
from ..runformat import Homes, read_marker

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

logger = logging.getLogger(__name__)

MAX_QUERY_FIELDS = 64  # parameters in one URL; the index takes about a dozen
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json"}
REQUEST_TIMEOUT_SECONDS = 30.0  # for each whole request to arrive, from its connection on
RESPONSE_DEADLINE_SECONDS = 120.0  # for a whole answer to be read
MIN_RATE_BYTES = 32 * 2**10  # a second, averaged over an answer so far, once past the grace
RATE_GRACE_SECONDS = 5.0
MAX_ANSWERS = 64  # requests answered at once; a browser opens about 6 connections
MAX_CONNECTIONS = 256  # open at once, one thread each, the answered ones included
SLOT_WAIT_SECONDS = 10.0  # a request that is in waits this long for an answer's slot, then 503
ROOM_WAIT_SECONDS = 1.0  # the accept loop waits this long for a connection it closed to end
PACE_CHECK_SECONDS = 0.25  # a blocked write looks again at the deadline and the rate this often
WRITE_CHUNK = 64 * 2**10
TCP_INFO_BYTES_ACKED = 120  # where Linux's struct tcp_info holds tcpi_bytes_acked, a u64

# Nothing below the runs directory is followed when it is a symlink: a link in a shared tree
# could show any file of the run (run.json, shards) or of another. O_NONBLOCK: opening a FIFO
# to read would wait for a writer.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


class RunsSite:
    """What the server may show: the index page and files inside runs' loss_graphs/."""

    def __init__(
        self,
        runs_dir: Path,
        output: Path | None = None,
        cache_bytes: int = CACHE_BYTES,
        catalog: CatalogServer | None = None,
    ) -> None:
        self.root = runs_dir.resolve()
        # Where each run's report is: its folder, or the daemon's --output mirror.
        self.homes = Homes(self.root, output.resolve() if output is not None else None)
        self.catalogs = CatalogAccess(self.homes, catalog)
        self.series = SeriesCache(cache_bytes)

    def view(self, parts: list[str], params: Params) -> Answer | None:
        """The answer of a browse/ view for a path of `parts`, or None when none has it.
        Raises QueryError for a bad parameter."""
        route = tuple(parts)
        answer = self.catalogs.answer
        if route in (("",), (runformat.INDEX_FILE,)):
            return answer(
                lambda catalog, kept: runs_view.index_page(
                    catalog, kept, params, self.catalogs.unreachable
                )
            )
        if route == (".api", "runs"):
            return answer(lambda catalog, _: runs_view.runs_api(catalog, params))
        if route == (".api", "sweeps"):
            return answer(lambda catalog, _: runs_view.sweeps_api(catalog, params))
        if route == (".sweep",):
            return answer(lambda catalog, _: sweep_view.sweep_page(catalog, params))
        if route == (".api", "series"):
            return run_view.series(self.root, self.series, params)
        if len(route) >= 2 and route[0] == ".run":
            reject_unknown(params, ())
            key = "/".join(route[1:])
            row = None
            if runformat.is_run_name(key):
                row = answer(lambda catalog, _: next(iter(catalog.rows([key])), None))
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


@dataclass(frozen=True)
class Limits:
    """What one connection may take. Loopback is shared by every user of the machine, and a
    slot held by a client that does not read is one taken from everyone else."""

    request_seconds: float = REQUEST_TIMEOUT_SECONDS
    response_seconds: float = RESPONSE_DEADLINE_SECONDS
    min_rate: float = MIN_RATE_BYTES
    rate_grace_seconds: float = RATE_GRACE_SECONDS
    max_answers: int = MAX_ANSWERS
    max_connections: int = MAX_CONNECTIONS
    slot_wait_seconds: float = SLOT_WAIT_SECONDS


class _DeadlineReader(io.RawIOBase):
    """A socket's incoming bytes, up to a deadline for all of a request: a per-read timeout
    alone lets a client that sends a byte now and then hold its connection for ever. Until
    the request's first byte, the server may close the connection to make room for another
    (`RunsServer.await_request`); the end of the input then."""

    def __init__(self, sock: socket.socket, seconds: float, server: RunsServer) -> None:
        self._sock = sock
        self._seconds = seconds
        self._server = server
        self._deadline = time.monotonic() + seconds
        self._begun = False  # a byte of this request has come

    def restart(self) -> None:
        """The next request's deadline starts now."""
        self._deadline = time.monotonic() + self._seconds
        self._begun = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if not self._begun:
            if not self._server.await_request(self._sock, self._left()):
                return 0
            self._begun = True
        self._sock.settimeout(self._left())
        return self._sock.recv_into(memoryview(buffer))

    def _left(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        return remaining


class _PacedWriter(io.BufferedIOBase):
    """An answer's bytes to a socket within `response_seconds` in all, and read by the client
    at `min_rate` bytes a second at least (counted from the start of the answer, after a grace
    of `rate_grace_seconds`, in bytes the client acknowledged): a client that reads slowly, or
    not at all, is dropped as soon as it falls behind, not after a timeout on each write."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self._sock = sock
        self._limits = limits
        self._started: float | None = None
        self._sent = 0  # of this answer
        self._before = 0  # bytes sent on the connection before this answer

    def restart(self) -> None:
        """The next answer's deadline starts at its first byte."""
        self._started = None

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        if self._started is None:
            self._started, self._before, self._sent = time.monotonic(), self._before + self._sent, 0
        done = 0
        while done < len(view):
            left = self._check(time.monotonic())
            self._sock.settimeout(min(left, PACE_CHECK_SECONDS))
            try:
                sent = self._sock.send(view[done : done + WRITE_CHUNK])
            except TimeoutError:
                continue  # checked again: fallen behind, or past the deadline?
            done += sent
            self._sent += sent
        return done

    def _check(self, now: float) -> float:
        """Raises TimeoutError past the deadline or under the rate; else the seconds left."""
        assert self._started is not None
        elapsed = now - self._started
        limits = self._limits
        if elapsed >= limits.response_seconds:
            self._drop(f"the answer was not read in {limits.response_seconds:g}s")
        owed = limits.min_rate * (elapsed - limits.rate_grace_seconds)
        if owed > 0 and self._read() < owed:
            self._drop(f"the client reads under {limits.min_rate:g} bytes a second")
        return limits.response_seconds - elapsed

    def _read(self) -> int:
        """Bytes of this answer the client has acknowledged (else: written to the kernel)."""
        acknowledged = _acknowledged(self._sock)
        if acknowledged is None:
            return self._sent
        return acknowledged - self._before

    def _drop(self, reason: str) -> NoReturn:
        """The connection is reset when closed: what the kernel still holds of the answer is
        thrown away, not sent at the client's pace."""
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise TimeoutError(reason)


def _acknowledged(sock: socket.socket) -> int | None:
    """Bytes the peer of `sock` has acknowledged on the connection (Linux's TCP_INFO
    `tcpi_bytes_acked`): what the kernel holds is not read. None where that cannot be asked."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except OSError:
        return None
    if len(info) < TCP_INFO_BYTES_ACKED + 8:  # a kernel before 4.1
        return None
    return int(struct.unpack_from("Q", info, TCP_INFO_BYTES_ACKED)[0])


class _Handler(BaseHTTPRequestHandler):
    site: RunsSite  # set on the subclass made for each server, as are `timeout` and `limits`
    server: RunsServer
    timeout: ClassVar[float] = REQUEST_TIMEOUT_SECONDS
    limits: ClassVar[Limits] = Limits()
    server_version = "lossreport"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader and writer it made; the socket stays open
        self.wfile.close()
        self._reader = _DeadlineReader(self.connection, self.timeout, self.server)
        self._writer = _PacedWriter(self.connection, self.limits)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile = self._writer
        self._answering = False  # holds one of the server's answer slots

    def handle_one_request(self) -> None:
        """Each request has its own deadline to arrive, and each answer its own; the answer's
        slot, taken once the request is in, is given back once it is sent."""
        self._reader.restart()
        self._writer.restart()
        try:
            super().handle_one_request()
        finally:
            if self._answering:
                self._answering = False
                self.server.answered()

    def parse_request(self) -> bool:
        """The whole request is in: it waits for an answer's slot, or is told to come back
        (a 503) when none frees in time; it is never closed unanswered for another."""
        if not super().parse_request():
            return False
        self._answering = self.server.take_answer_slot()
        if not self._answering:
            self.close_connection = True
            busy = Answer.text(HTTPStatus.SERVICE_UNAVAILABLE, "too busy: try again in a moment")
            self._send_answer(busy, send_body=self.command != "HEAD")
        return self._answering

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        try:
            if self._host_allowed(send_body):
                self._route(send_body)
        except (ConnectionError, TimeoutError):  # the browser went away, or stopped reading
            self.close_connection = True
        except Exception:  # a bug or a broken run must not take the connection down silently
            logger.exception("cannot answer %s", self.path)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _host_allowed(self, send_body: bool) -> bool:
        """Only a Host this server is known by: a page of another site whose name was made
        to resolve to this address (DNS rebinding) must not read the runs."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) <= 1 and all(self.server.answers_to(host) for host in hosts):
            return True
        self._send_answer(
            Answer.text(
                HTTPStatus.MISDIRECTED_REQUEST,
                "this server answers to localhost, its own address and the names given with "
                "--allow-host only",
            ),
            send_body,
        )
        self.close_connection = True
        return False

    def _route(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        try:
            params = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:  # over MAX_QUERY_FIELDS (a view's own ValueError is no bad request)
            answer: Answer | None = Answer.text(HTTPStatus.BAD_REQUEST, "too many query parameters")
        else:
            try:
                answer = self.site.view(parts, params)
            except QueryError as exc:
                answer = Answer.text(HTTPStatus.BAD_REQUEST, str(exc))
        if answer is not None:
            self._send_answer(answer, send_body)
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

    def _send_answer(self, answer: Answer, send_body: bool) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self._finish_headers(len(answer.body), answer.csp)
        if send_body:
            self.wfile.write(answer.body)

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
    """One thread a connection, at most `limits.max_connections` open and `limits.max_answers`
    requests answered at once. A connection takes an answer's slot only once its whole request
    is in, so one that sends nothing, or a byte now and then, costs a waiting thread, never an
    answer; a request that is in waits up to `slot_wait_seconds` for a slot, then is a 503. An
    answer must be read at the minimum rate, so a slow reader frees its slot within seconds
    (`_PacedWriter`).

    The accept loop never waits for an answer's slot. With every connection open, a new one
    takes the place of the one that has sent nothing for the longest (closed unanswered: it
    asked nothing), waiting up to `ROOM_WAIT_SECONDS` for its thread to end; a connection that
    has sent a byte of its request is never closed for another, so with none silent the new
    one is closed at once (the next ones wait in the listen queue).

    It answers only requests whose Host is localhost, its own address (any port: an SSH
    tunnel's differs) or a name in `allowed_hosts`."""

    daemon_threads = True
    request_queue_size = 128  # connections not yet accepted, beyond: refused by the kernel

    def __init__(
        self,
        address: tuple[str, int],
        site: RunsSite,
        *,
        limits: Limits = Limits(),
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self._limits = limits
        lock = threading.Lock()  # guards all below
        self._slot_freed = threading.Condition(lock)
        self._connection_ended = threading.Condition(lock)
        self._open = 0  # connections with a thread
        self._answering = 0  # answer slots taken
        self._silent: dict[socket.socket, float] = {}  # no byte of a request yet, since
        self._closed_for_room: set[socket.socket] = set()  # their threads not ended yet
        self._closing = False
        self._full = False  # warned that new connections are closed, until one is let in
        self._busy = False  # warned that requests are answered 503, until one gets a slot
        handler = type(
            "Handler",
            (_Handler,),
            {"site": site, "timeout": limits.request_seconds, "limits": limits},
        )
        super().__init__(address, handler)
        bound = str(self.server_address[0])
        names = {"localhost", _host_name(address[0]), _host_name(bound)}
        self.allowed_hosts = frozenset(names | {_host_name(name) for name in allowed_hosts})

    def answers_to(self, host: str) -> bool:
        """Whether a request with this Host header is for this server."""
        name = _host_name(_without_port(host.strip()))
        if name in self.allowed_hosts:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._let_in(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started, so none will give its place back
            self._ended(request)
            raise

    def _let_in(self, connection: socket.socket) -> bool:
        """A place for a new connection, made when all are taken by closing the one silent for
        the longest; False (logged once) when none is silent or its thread does not end."""
        deadline = time.monotonic() + ROOM_WAIT_SECONDS
        with self._connection_ended:
            while self._open >= self._limits.max_connections:
                left = deadline - time.monotonic()
                room_coming = self._closed_for_room or self._close_silent()
                if self._closing or left <= 0 or not room_coming:
                    self._warn_full()
                    return False
                self._connection_ended.wait(left)
            self._full = False
            self._open += 1
            self._silent[connection] = time.monotonic()
            return True

    def _close_silent(self) -> bool:
        """Close the connection that has sent nothing for the longest (under the lock); its
        thread ends and gives its place back. One whose request is arriving is left alone."""
        for connection in sorted(self._silent, key=self._silent.__getitem__):
            if _has_input(connection):
                continue  # its reader takes it out of `_silent`
            del self._silent[connection]
            self._closed_for_room.add(connection)
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            return True
        return False

    def await_request(self, connection: socket.socket, seconds: float) -> bool:
        """Wait up to `seconds` for the first byte of a request on `connection` (TimeoutError
        past them), which may meanwhile be closed to make room: False when it was."""
        with self._connection_ended:
            if connection in self._closed_for_room:
                return False
            self._silent.setdefault(connection, time.monotonic())
        try:
            connection.settimeout(seconds)
            connection.recv(1, socket.MSG_PEEK)  # b"" once closed, by either end
        finally:
            with self._connection_ended:
                kept = self._silent.pop(connection, None) is not None
        return kept

    def take_answer_slot(self) -> bool:
        """Wait up to `slot_wait_seconds` for one of the `max_answers` slots; False (logged
        once) when none freed in time."""
        deadline = time.monotonic() + self._limits.slot_wait_seconds
        with self._slot_freed:
            while self._answering >= self._limits.max_answers:
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    self._warn_busy()
                    return False
                self._slot_freed.wait(left)
            self._busy = False
            self._answering += 1
            return True

    def _warn_full(self) -> None:
        """Once, until a new connection is let in again (under the lock)."""
        if not self._full:
            self._full = True
            logger.warning(
                "%d connections open, none silent: closing new ones at once",
                self._limits.max_connections,
            )

    def _warn_busy(self) -> None:
        """Once, until a request gets an answer's slot again (under the lock)."""
        if not self._busy:
            self._busy = True
            logger.warning(
                "%d answers under way for %gs: answering 503 to new requests",
                self._limits.max_answers,
                self._limits.slot_wait_seconds,
            )

    def answered(self) -> None:
        with self._slot_freed:
            self._answering -= 1
            self._slot_freed.notify()

    def _ended(self, connection: socket.socket) -> None:
        with self._connection_ended:
            self._open -= 1
            self._silent.pop(connection, None)
            self._closed_for_room.discard(connection)
            self._connection_ended.notify()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._ended(request)

    def shutdown(self) -> None:
        with self._slot_freed:
            self._closing = True
            self._slot_freed.notify_all()
            self._connection_ended.notify_all()
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away is routine; anything else is a bug, logged (not printed)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("connection from %s ended early", client_address[0], exc_info=True)
        else:
            logger.exception("error while serving %s", client_address[0])


def _has_input(connection: socket.socket) -> bool:
    """Whether bytes (or the client's close) wait to be read on `connection`, or it is closed
    already, without waiting: a non-blocking recv waits for the socket's timeout (CPython
    polls first)."""
    if connection.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    return bool(poller.poll(0))


def _without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and (port.isdigit() or not port) and ":" not in name else host


def _host_name(name: str) -> str:
    """As names compare: any case, without the root's dot or an IPv6 address's brackets."""
    return name.lower().rstrip(".").removeprefix("[").removesuffix("]")


def serve(
    runs_dir: Path,
    host: str,
    port: int,
    stop: threading.Event,
    output: Path | None = None,
    *,
    allowed_hosts: Iterable[str] = (),
    cache_bytes: int = CACHE_BYTES,
    catalog: CatalogServer | None = None,
) -> None:
    """Serve until `stop` is set; `output`: the daemon's --output, where the reports of runs
    in folders it could not write are; `allowed_hosts`: names (besides localhost and its
    address) a request's Host may give; `cache_bytes`: the runs kept for the charts. Raises
    ServeError, one line, when it cannot listen."""
    if not runs_dir.is_dir():
        raise RunDirectoryError(runs_dir, "is not a directory")
    # A host from a config file can hold a line break: shown quoted, the message stays one line.
    address = f"{host}:{port}" if str(host).isprintable() else f"{host!r}:{port}"
    if not 0 <= port <= 65535:
        raise ServeError(f"cannot listen on {address}: the port must be 0 to 65535")
    if output is not None and not output.is_dir():
        raise RunDirectoryError(output, "is not a directory (--output)")
    site = RunsSite(runs_dir, output, cache_bytes, catalog)
    try:
        server = RunsServer((host, port), site, allowed_hosts=allowed_hosts)
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
