"""Leases on an object store: several daemons following one bucket never render a run at once.

A lease is a small object beside the run, `{"owner": ..., "expires": ...}`, written only by a
conditional PUT, which the store itself enforces: `If-None-Match: *` to take a free run,
`If-Match: <ETag>` to take over an expired lease or renew one's own. Of two daemons racing,
the store lets exactly one write succeed (AWS S3 since 2024, MinIO, Ceph RGW, R2; see
docs/run-directory-format.md). pyarrow's filesystem cannot send those headers, so this one
request goes through the AWS SDK for Python (boto3, the `s3` extra), which reads the same
standard chain of credentials and endpoint.

A store that ignores the headers would let two daemons both "win": `check()` finds out at
start-up by writing a probe object twice, and the daemon then says that the lease is advisory.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from . import s3

logger = logging.getLogger(__name__)

# A render takes seconds; the runs of a daemon that died are free again after this.
DEFAULT_LEASE_SECONDS = 600.0


def _client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidInputError(
            "watching an s3:// prefix needs boto3 for its leases: pip install 'lossreport[s3]'"
        ) from None
    config = Config(
        connect_timeout=s3.CONNECT_TIMEOUT_SECONDS,
        read_timeout=s3.request_timeout(),
        retries={"max_attempts": s3.MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.client("s3", config=config)


def new_owner() -> str:
    return f"{socket.gethostname()}:{secrets.token_hex(4)}"


class Leases:
    """Leases named `name` in each run folder under `url`, held as `owner`."""

    def __init__(
        self,
        url: s3.StoreUrl,
        name: str,
        seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
    ) -> None:
        """`owner`: who this daemon is (`new_owner()` by default); one that keeps it across
        restarts takes back at once the leases it held when it stopped."""
        self.url = url
        self.name = name
        self.seconds = seconds
        self.owner = owner or new_owner()
        self.enforced = True
        self._client = _client()

    def claim(self, run: str) -> bool:
        """True when this daemon holds `run`'s lease now (taken, taken over, or renewed).
        Raises OSError, naming the lease, when the store cannot be asked."""
        key = self.url.child(run).child(self.name).key
        return self._asking(key, lambda: self._claim(key))

    def _asking(self, key: str, request: Callable[[], bool]) -> bool:
        """`request()`, with botocore's errors as OSErrors naming the lease: PermissionError
        for a refusal (403), so that only an unreachable store is waited for."""
        from botocore.exceptions import BotoCoreError, ClientError  # there: _client() was made

        try:
            return request()
        except (BotoCoreError, ClientError) as exc:
            where = f"{s3.SCHEME}{self.url.bucket}/{key}"
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                raise PermissionError(13, f"lease refused: {exc}", where) from exc
            raise OSError(f"{where}: lease not taken: {exc}") from exc

    def _claim(self, key: str) -> bool:
        try:
            found = self._client.get_object(Bucket=self.url.bucket, Key=key)
        except self._client.exceptions.NoSuchKey:
            return self._put(key, IfNoneMatch="*")
        try:
            held = json.loads(found["Body"].read(4096))
            free = held["owner"] == self.owner or float(held["expires"]) < time.time()
        except (ValueError, KeyError, TypeError):  # not one of ours: taken over
            free = True
        if not free:
            return False
        return self._put(key, IfMatch=found["ETag"])

    def check(self) -> bool:
        """Whether the store refuses a conditional PUT that must fail; logs when it does not."""
        key = self.url.child(f".lossreport-lease-probe-{secrets.token_hex(6)}").key
        return self._asking(key, lambda: self._check(key))

    def _check(self, key: str) -> bool:
        try:
            first = self._put(key, IfNoneMatch="*")
            second = self._put(key, IfNoneMatch="*")
        finally:
            self._client.delete_object(Bucket=self.url.bucket, Key=key)
        self.enforced = first and not second
        if not self.enforced:
            logger.warning(
                "%s does not enforce conditional writes: leases are advisory, and two daemons "
                "following it may render one run at once; run one daemon per prefix",
                self.url,
                extra={"event": "lease_not_enforced"},
            )
        return self.enforced

    def _put(self, key: str, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        body = json.dumps({"owner": self.owner, "expires": time.time() + self.seconds})
        try:
            self._client.put_object(Bucket=self.url.bucket, Key=key, Body=body, **condition)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if code != "NotImplemented":
                raise
            # A store without conditional writes: `check` has said the lease is advisory.
            self._client.put_object(Bucket=self.url.bucket, Key=key, Body=body)
        return True
