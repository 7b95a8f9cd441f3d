"""Object stores speaking the S3 protocol (AWS S3, MinIO, Ceph, R2, GCS's interoperability
endpoint), through pyarrow's filesystem, which is the AWS SDK for C++.

Credentials, region and endpoint come from the SDK's standard chain and nowhere else:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and the files under
~/.aws, web-identity tokens (Kubernetes), instance roles; AWS_ENDPOINT_URL (or
AWS_ENDPOINT_URL_S3) points it at a store other than AWS. lossreport never takes them in code
or on a command line.

What the protocol gives, and what the run format relies on: a PUT makes an object appear whole
or not at all, and replaces it whole; there is no rename, so a shard is written once under a
name no other writer uses; a listing returns each object's size and time of last write, which
is how a poller skips what did not change.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from typing import TypeVar

import pyarrow.fs as pafs

from ..errors import InvalidInputError, MalformedRunFileError

SCHEME = "s3://"
# A request that connects but is then answered by nobody gives up after this long; the SDK
# retries a failed request (a 5xx, a reset, a timeout) up to MAX_ATTEMPTS times, backing off.
# LOSSREPORT_S3_TIMEOUT (seconds) sets the second for a store known to be slow.
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
TIMEOUT_VARIABLE = "LOSSREPORT_S3_TIMEOUT"
MAX_ATTEMPTS = 3
# A trainer's start and a daemon's start wait this long for a store that cannot be reached (a
# restart, a blip), rather than failing a job for a few seconds' outage.
START_PATIENCE_SECONDS = 60.0
T = TypeVar("T")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


logger = logging.getLogger(__name__)


def is_store_url(text: str) -> bool:
    return text.startswith(SCHEME)


@dataclass(frozen=True)
class StoreUrl:
    """`s3://bucket/key`: a bucket and a key prefix without leading or trailing '/'."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        """Raises InvalidInputError naming the URL when it is not a plain `s3://bucket/path`:
        no empty, '.' or '..' parts, no query, no control characters."""
        if not is_store_url(text):
            raise InvalidInputError(f"{text!r}: not an s3:// URL")
        bucket, _, key = text[len(SCHEME) :].partition("/")
        if not _BUCKET_RE.fullmatch(bucket):
            raise InvalidInputError(f"{text!r}: {bucket!r} is not a bucket name")
        parts = key.rstrip("/").split("/") if key.rstrip("/") else []
        for part in parts:
            if part in ("", ".", "..") or not part.isprintable() or "?" in part or "#" in part:
                raise InvalidInputError(f"{text!r}: {part!r} cannot be part of a run's path")
        return cls(bucket, "/".join(parts))

    @property
    def path(self) -> str:
        """The `bucket/key` form pyarrow's filesystem takes."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def child(self, name: str) -> StoreUrl:
        return StoreUrl(self.bucket, f"{self.key}/{name}" if self.key else name)

    def __str__(self) -> str:
        return SCHEME + self.path


def request_timeout() -> float:
    """REQUEST_TIMEOUT_SECONDS, or LOSSREPORT_S3_TIMEOUT's seconds (InvalidInputError naming
    the variable when it is not a positive number)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return REQUEST_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise InvalidInputError(f"{TIMEOUT_VARIABLE}={text!r}: not a positive number of seconds")
    return seconds


def endpoint() -> str | None:
    """The AWS SDKs' endpoint variables, which pyarrow's constructor does not read itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@cache
def filesystem() -> pafs.S3FileSystem:
    """One client per process (pyarrow's is thread-safe), configured only by the standard
    chain, with timeouts: a store that hangs must not hold a flush or a poll forever."""
    url = endpoint()
    scheme, _, host = url.partition("://") if url else ("https", "", None)
    return pafs.S3FileSystem(
        endpoint_override=host.rstrip("/") if host else None,
        scheme=scheme,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        request_timeout=request_timeout(),
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
    )


@contextmanager
def _explained(path: str) -> Iterator[None]:
    """The SDK's error, and what to do about the one people meet first."""
    try:
        yield
    except OSError as exc:
        if "ACCESS_DENIED" in str(exc) or "InvalidAccessKeyId" in str(exc):
            raise PermissionError(
                13,
                "access denied: the store refused these credentials (AWS_ACCESS_KEY_ID, "
                "AWS_PROFILE or the instance role)",
                SCHEME + path,
            ) from exc
        raise


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the store could not be reached or answered with an error of its own
    (a 5xx, a timeout, a refused connection), rather than refusing: bad credentials, no bucket,
    no such object, a malformed document."""
    if not isinstance(exc, OSError):
        return False
    refusals = PermissionError | FileNotFoundError | MalformedRunFileError
    # The refusal may be `exc` (access denied, raised from the SDK's error) or its cause (a
    # RunDirectoryError raised from it): either way, asking again gets the same answer.
    return not (isinstance(exc, refusals) or isinstance(exc.__cause__, refusals))


def patiently(action: Callable[[], T], where: str) -> T:
    """`action()`, tried again with backoff for up to START_PATIENCE_SECONDS while the store
    is `unreachable`; anything else is raised at once."""
    deadline = time.monotonic() + START_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            return action()
        except OSError as exc:
            if not unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: the store cannot be reached, trying again: %s", where, exc)
        time.sleep(delay)  # a start waits; nothing else is held up meanwhile
        delay = min(delay * 2, 8.0)


def info(path: str) -> pafs.FileInfo:
    with _explained(path):
        return filesystem().get_file_info(path)


def bucket_exists(bucket: str) -> bool:
    return bool(info(bucket).type != pafs.FileType.NotFound)


def put(path: str, data: bytes) -> None:
    """One object, whole: pyarrow uploads small objects in one PUT and large ones in parts that
    the store assembles only when the last is sent, so a reader never sees half of it. Its
    Content-Type is set from its name, so a report opens as a page in a browser."""
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    metadata = {"Content-Type": kind}
    with (
        _explained(path),
        filesystem().open_output_stream(path, compression=None, metadata=metadata) as out,
    ):
        out.write(data)


def get(path: str, limit: int) -> bytes:
    """The object at `path`, refused (OSError) when larger than `limit`: two requests, the
    SDK's HEAD for the size, then the GET. Never decompressed, whatever its name."""
    with _explained(path), filesystem().open_input_file(path) as handle:
        size = handle.size()
        if size > limit:
            raise OSError(f"{SCHEME}{path}: {size} bytes, more than the {limit} allowed")
        return bytes(handle.read())


def listing(url: StoreUrl, recursive: bool) -> list[pafs.FileInfo]:
    """Every object under `url` (none when nothing is there): one paged LIST request per 1,000
    objects, each with its size and time of last write."""
    selector = pafs.FileSelector(url.path, allow_not_found=True, recursive=recursive)
    with _explained(url.path):
        found: list[pafs.FileInfo] = filesystem().get_file_info(selector)
    return found


class ObjectFolder:
    """A run folder on an object store: a key prefix. Its operations are whole-object PUTs
    and GETs; see the run-directory format document for what is atomic there."""

    def __init__(self, url: StoreUrl) -> None:
        self.url = url

    def __str__(self) -> str:
        return str(self.url)

    def where(self, name: str) -> str:
        return str(self.url.child(name))

    def create(self, name: str, data: bytes) -> None:
        """Refuses a name already there. pyarrow cannot ask the store to refuse it in the same
        request, so two writers choosing one name in the same instant are kept apart only by
        the writer token in a shard's name (a 1 in 2**32 clash)."""
        path = self.url.child(name).path
        if info(path).type != pafs.FileType.NotFound:
            raise FileExistsError(17, "exists; not replaced", SCHEME + path)
        put(path, data)

    def replace(self, name: str, data: bytes) -> None:
        put(self.url.child(name).path, data)

    def read(self, name: str, limit: int) -> bytes:
        return get(self.url.child(name).path, limit)

    def files(self, folder: str) -> list[str]:
        found = listing(self.url.child(folder), recursive=False)
        return [PurePosixPath(item.path).name for item in found if item.type == pafs.FileType.File]

    def move(self, names: Sequence[str], source: str, target: str) -> None:
        """There is no rename: each object is copied, then the original deleted; a failure in
        between leaves it in both places, never in neither."""
        for name in names:
            filesystem().move(
                self.url.child(f"{source}/{name}").path, self.url.child(f"{target}/{name}").path
            )

    def prepare(self, subfolder: str) -> None:
        """One request for the bucket: a wrong endpoint, a missing bucket or credentials the
        store refuses fail here, before anything is written. A store has no folders to make."""
        if not bucket_exists(self.url.bucket):
            raise FileNotFoundError(2, "no such bucket", SCHEME + self.url.bucket)
