"""The commands' side of runs on an object store: an `s3://` argument becomes a local mirror
(storage/mirror.py) that the daemon, the renderer and the server read as any runs folder."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .. import runformat, storage
from ..errors import InvalidInputError, RunDirectoryError
from ..storage import s3
from ..storage.mirror import Mirror, MirrorRules

logger = logging.getLogger(__name__)
# A poll lists the whole prefix, a LIST request per 1,000 objects: about 100 for 10,000 runs,
# a few seconds on AWS, and at AWS's price for LIST requests about $1.50 a day every 30 s.
POLL_SECONDS = 30.0


def location(text: str) -> Path | str:
    """argparse's type for a runs argument: an `s3://` URL is kept as text (and checked),
    anything else is a local path."""
    if s3.is_store_url(text):
        return str(s3.StoreUrl.parse(text))
    return Path(text)


def default_mirror_root(url: s3.StoreUrl) -> Path:
    """$XDG_CACHE_HOME/lossreport/s3/BUCKET/PREFIX (~/.cache by default): the service
    account's own, kept between runs of the daemon."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lossreport" / "s3" / url.bucket / url.key


def synced_mirror(
    text: str,
    root: Path | None = None,
    *,
    empty_ok: bool = False,
    rules: MirrorRules = runformat.MIRROR_RULES,
) -> Mirror:
    """A mirror of the runs at the URL `text`, synced once. Raises RunDirectoryError naming the
    URL when the store cannot be listed (a wrong endpoint, bad credentials, no bucket), or
    holds nothing there unless `empty_ok` (a daemon waiting for its first run): then nothing
    has been written anywhere but the local mirror folder."""
    url = s3.StoreUrl.parse(text)
    root = root if root is not None else default_mirror_root(url)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InvalidInputError(f"{root}: cannot hold the mirror of {url} ({exc})") from exc
    mirror = Mirror(url, root, rules)
    try:
        if not s3.patiently(lambda: s3.bucket_exists(url.bucket), str(url)):
            raise RunDirectoryError(str(url), f"there is no bucket {url.bucket!r}")
        result = s3.patiently(mirror.sync, str(url))
    except RunDirectoryError:
        raise
    except OSError as exc:
        raise RunDirectoryError(str(url), f"cannot be listed: {exc}") from exc
    if result.listed == 0 and not empty_ok:
        raise RunDirectoryError(str(url), "holds no objects (a wrong bucket or prefix?)")
    logger.info(
        "%s: mirrored %d objects into %s in %.2fs",
        url,
        result.fetched,
        root,
        result.seconds,
        extra={"event": "mirrored", "objects": result.fetched},
    )
    return mirror


def _lease_owner(root: Path) -> str:
    """Who the daemon on the mirror `root` is, kept there: restarted (systemd, a crash), it is
    the same daemon and takes back its leases, instead of waiting --lease for them to expire."""
    from ..storage.lease import new_owner

    path = root / runformat.LEASE_OWNER_FILE
    try:
        return storage.read_bytes(path, 256).decode().strip() or new_owner()
    except (OSError, UnicodeDecodeError):
        owner = new_owner()
        storage.atomic_write(path, owner.encode())
        return owner


class Poller(threading.Thread):
    """Syncs `mirror` every `interval` seconds until `stop` is set. A store that is down is
    logged once when it goes and once when it is back; the daemon keeps rendering what it has."""

    def __init__(self, mirror: Mirror, interval: float, stop: threading.Event) -> None:
        super().__init__(name="lossreport-store-poller", daemon=True)
        self.mirror = mirror
        self.interval = interval
        self.stop = stop
        self.polls = 0

    def run(self) -> None:
        failing = False
        while not self.stop.wait(self.interval):
            try:
                result = self.mirror.sync()
            except Exception as exc:  # whatever the store does, the poller goes on
                if not failing:
                    logger.error(
                        "%s: cannot be listed, retrying every %.1fs: %s",
                        self.mirror.url,
                        self.interval,
                        exc,
                        extra={"event": "store_unreachable"},
                    )
                failing = True
                continue
            self.polls += 1
            if failing:
                logger.info("%s: listed again", self.mirror.url, extra={"event": "store_back"})
                failing = False
            logger.debug(
                "%s: %d objects listed, %d fetched, %d removed in %.2fs",
                self.mirror.url,
                result.listed,
                result.fetched,
                result.removed,
                result.seconds,
            )


def store_remote(
    mirror: Mirror, lease_seconds: float, publish: bool, retry: float
) -> storage.mirror.StoreRemote:
    """Leases for the daemon on `mirror`'s store (boto3, the `s3` extra), checked now."""
    from ..storage.lease import Leases

    logging.getLogger("botocore").setLevel(logging.WARNING)  # else a line per client made
    owner = _lease_owner(mirror.root)
    leases = Leases(mirror.url, runformat.LEASE_FILE, lease_seconds, owner)
    try:
        s3.patiently(leases.check, str(mirror.url))
    except Exception as exc:  # botocore's errors are many and not OSErrors
        raise RunDirectoryError(str(mirror.url), f"cannot write a lease there: {exc}") from exc
    return storage.mirror.StoreRemote(mirror, leases, publish, retry)
