"""Every name in a run directory, and where things are: the one module that knows the layout.

```
RUNS_DIR/
  RUN/                              a run: run.json and/or losses/ (record.py, shards.py)
    run.json
    losses/part-NNNNNN[-rankR][-wTOKEN].parquet
    losses/cleared/STAMP/*.parquet  shards set aside by clear_loss_history(), not read
    loss_graphs/                    the renderer's output
      .lossreport-rendered.json     the render marker (marker.py)
    .lossreport-render.lock         held while a renderer writes loss_graphs/
    .loss_graphs.new-*, .old-*      a render's staging folders
    .lossreport-mailed.json         the emails (and webhook posts) sent for the run
    .lossreport-alerts.json         the alerts raised while it trained (alertlog.py)
    .lossreport-cache/              what a source converted from another tool's logs
  exp1/lightning_logs/version_3/    another tool's run, found at any depth (sources/)
  .lossreport/outbox/*.eml          emails waiting to be sent
  index.html                        the runs index the daemon keeps
  .lossreport-daemon.json           a live daemon's presence and heartbeat (presence.py)
```

Names starting with `.` are lossreport's own (temp files, markers, locks); writers never create
them. docs/run-directory-format.md is the contract other writers follow.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
from collections.abc import Container, Iterator, Sequence
from pathlib import Path

from .. import storage
from ..errors import RunDirectoryError, UnsafePathError

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOSSES_DIR = "losses"
CLEARED_DIR = "cleared"  # in losses/: one folder per clear_loss_history(), named by its time
GRAPHS_DIR = "loss_graphs"
MARKER = ".lossreport-rendered.json"  # in loss_graphs/: what the last render saw (marker.py)
LOCK_FILE = ".lossreport-render.lock"
STAGE_PREFIXES = (f".{GRAPHS_DIR}.new-", f".{GRAPHS_DIR}.old-")  # a render's new and old folders
SENT_FILE = ".lossreport-mailed.json"
# On an object store: which daemon renders the run now (storage/lease.py), and in a daemon's
# mirror, who it is: a daemon restarted on the same mirror takes its leases back at once.
LEASE_FILE = ".lossreport-lease.json"
LEASE_OWNER_FILE = ".lossreport-lease-owner"
ALERTS_FILE = ".lossreport-alerts.json"  # the alerts raised while the run trained (alertlog.py)
# What a source has converted from another tool's logs, kept so it is parsed once (sources/).
CACHE_DIR = ".lossreport-cache"
# How deep under the runs directory runs are looked for (`runs/exp1/lightning_logs/version_3`
# is 3): deep enough for any tool's layout, and a bound on a walk of a tree someone else owns.
MAX_RUN_DEPTH = 16
MAX_RUN_KEY_LENGTH = 1024
# In the runs directory
OUTBOX_DIR = Path(".lossreport") / "outbox"
INDEX_FILE = "index.html"
CATALOG_DIR = ".lossreport-catalog"  # the runs catalog (catalog/), readable by `serve` users
CATALOG_FILE = "runs.sqlite"
PRESENCE_FILE = ".lossreport-daemon.json"
# What no run directory may be called: the runs directory's own files (a run folder named
# index.html would keep the daemon from writing the index) and a run's (a folder named
# loss_graphs is never scanned; one named run.json or losses makes the runs directory itself
# look like a run). Compared without case: some filesystems ignore it. Hidden names are
# lossreport's too (is_walked).
RESERVED_NAMES = frozenset(
    {INDEX_FILE, CATALOG_DIR, CATALOG_FILE, RUN_FILE, LOSSES_DIR, GRAPHS_DIR}
)

# Shard columns
STEP = "step"
WALL_TIME = "wall_time"
RESERVED_COLUMNS = frozenset({STEP, WALL_TIME})

# run.json statuses
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = frozenset({RUNNING, COMPLETED, FAILED})
FINISHED_STATUSES = frozenset({COMPLETED, FAILED})
# What readers show besides those: a running run whose heartbeat is old, and a run whose
# run.json cannot be read.
STALLED = "stalled"
UNKNOWN = "unknown"

_SHARD_RE = re.compile(r"^part-(\d{6,})(?:-rank(\d+))?(?:-w([0-9A-Za-z]{1,32}))?\.parquet$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME_LENGTH = 100


def clean_name(text: str) -> str:
    """Make `text` safe as one path component on any filesystem (no separators, no leading dot).

    Written by hand rather than adding a dependency: one regex covers what file names need here.
    """
    cleaned = _UNSAFE_CHARS.sub("_", text).strip("._-")[:_MAX_NAME_LENGTH]
    return cleaned or "unnamed"


def looks_like_run(path: Path) -> bool:
    """A real directory (not a symlink to one) holding something named run.json or losses
    (a run whose run.json was lost still has its shards). What those are is checked when read.
    """
    return storage.is_real_dir(path) and (
        storage.lexists(path / RUN_FILE) or storage.lexists(path / LOSSES_DIR)
    )


def is_run_name(name: str) -> bool:
    """A name that can only mean a run inside the runs directory: its path there, `/`-separated
    (`exp1/lightning_logs/version_3`), each part a plain name that is neither hidden nor ours."""
    if not name or "\0" in name or len(name) > MAX_RUN_KEY_LENGTH:
        return False
    parts = name.split("/")
    return len(parts) <= MAX_RUN_DEPTH and all(is_walked(part) for part in parts)


def is_reserved(name: str) -> bool:
    """Whether a run directory may not be called `name` (RESERVED_NAMES, any hidden name)."""
    return name.startswith(".") or name.casefold() in _RESERVED_FOLDED


_RESERVED_FOLDED = frozenset(name.casefold() for name in RESERVED_NAMES)


def is_walked(name: str) -> bool:
    """Whether a folder named `name` may hold runs or their inputs: not hidden (lossreport's
    own, and other tools' caches), not a report, and a name in UTF-8 (`is_text`)."""
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and name != GRAPHS_DIR
        and is_text(name)
    )


def is_text(name: str) -> bool:
    """Whether a file name is UTF-8. One that is not (any user of a shared tree can make it)
    reaches Python as lone surrogates, which the catalog, a page, a mail or a chart can neither
    store nor show: its one run stopped the daemon's catalog writes."""
    return storage.clean_text(name) == name  # ASCII: at once


def list_folders(runs_dir: Path) -> list[Path]:
    """The folders directly inside `runs_dir` that may be runs or hold runs: hidden ones and
    loss_graphs/ are not walked, and symlinks are never entered. Raises OSError when `runs_dir`
    cannot be listed."""
    return [runs_dir / name for name in list_folder_names(runs_dir)]


def list_folder_names(runs_dir: Path) -> list[str]:
    """`list_folders`, by name: no Path made for each of a flat tree's 100,000 runs. A
    folder whose name is not UTF-8 is left out (`is_text`), and logged once a name."""
    names = []
    with os.scandir(runs_dir) as entries:
        for entry in entries:
            if is_walked(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
            elif (
                not is_text(entry.name)
                and entry.name not in _logged_not_utf8
                and entry.is_dir(follow_symlinks=False)
            ):
                _log_not_utf8(runs_dir, entry.name)
    return names


def _log_not_utf8(runs_dir: Path, name: str) -> None:
    if len(_logged_not_utf8) >= _MOST_LOGGED_NOT_UTF8:
        _logged_not_utf8.clear()
    _logged_not_utf8.add(name)
    logger.warning(
        "%s: its name is not UTF-8, so it is not read as a run; rename it to report it",
        storage.clean_text(os.path.join(runs_dir, name)),
        extra={"event": "name_not_utf8"},
    )


_MOST_LOGGED_NOT_UTF8 = 1000  # names logged already (a scan comes every few minutes)
_logged_not_utf8: set[str] = set()


def watched_parts(parts: Sequence[str]) -> bool:
    """Whether a change at `parts` (a path relative to the runs directory) can be a change to
    some run's inputs: anything but lossreport's own files and folders (hidden names, reports),
    temp files of shards, and paths deeper than runs are looked for."""
    if not parts or parts[0] == ".." or len(parts) > MAX_RUN_DEPTH + 3:
        return False
    return all(is_walked(part) for part in parts)


def holds_inputs(parts: Sequence[str]) -> bool:
    """Whether the folder at `parts` (relative to the runs directory, `()` for itself) can hold
    runs or their inputs, for a poller: any folder down to the depth runs are looked for (and
    three more: an MLflow metric named `a/b/c`), except lossreport's own."""
    return len(parts) <= MAX_RUN_DEPTH + 3 and all(is_walked(part) for part in parts)


def is_mirrored(parts: Sequence[str], reports: bool = False) -> bool:
    """Whether a daemon's local mirror of an object store copies down the object at `parts`
    (its path under the watched prefix): runs' inputs and render markers; not reports,
    lossreport's own files, shards set aside by clear_loss_history(), or an index.html beside
    the runs (the daemon's own is there). With `reports`, for a server that shows them, the
    reports' files too."""
    if tuple(parts) == (INDEX_FILE,):
        return False
    if len(parts) >= 3 and parts[-2] == GRAPHS_DIR:
        wanted = parts[-1] == MARKER or (reports and not parts[-1].startswith("."))
        return wanted and holds_inputs(parts[:-2])
    for above, below in itertools.pairwise(parts):
        if (above, below) == (LOSSES_DIR, CLEARED_DIR):
            return False
    return watched_parts(parts)


MIRROR_RULES = storage.mirror.MirrorRules(is_mirrored, GRAPHS_DIR, MARKER)
# `lossreport serve` on a store shows the reports the daemons wrote back there.
BROWSE_MIRROR_RULES = storage.mirror.MirrorRules(
    functools.partial(is_mirrored, reports=True), GRAPHS_DIR, MARKER
)


def shard_name(seq: int, rank: int | None = None, writer: str | None = None) -> str:
    """`part-NNNNNN[-rankR][-wTOKEN].parquet`: TOKEN keeps concurrent writers' names apart."""
    suffix = ("" if rank is None else f"-rank{rank}") + ("" if writer is None else f"-w{writer}")
    return f"part-{seq:06d}{suffix}.parquet"


def parse_shard_name(name: str) -> tuple[int, int | None] | None:
    """(sequence number, rank or None) for a shard file name, or None for anything else."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def iter_shards(run_dir: Path, skip: Container[str] = ()) -> Iterator[tuple[int, int | None, Path]]:
    """Every complete shard of a run, in write order. Hidden temp files never match. Names in
    `skip` (shards a reader has read already) are passed over before any other work, so a
    reader that keeps them pays for the new shards, not for the run's length."""
    losses = run_dir / LOSSES_DIR
    if storage.lexists(losses) and not storage.is_real_dir(losses):
        raise UnsafePathError(losses, f"is {storage.kind_of(losses)}, not a folder; not read")
    try:
        entries = list(os.scandir(losses))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunDirectoryError(losses, f"cannot be listed ({exc.strerror or exc})") from exc
    # Write order: sequence number, then rank (none first), then writer token (none first, then
    # ASCII): concurrent writers' shards of one number have no true order, only a fixed one.
    found = []
    for entry in entries:
        if entry.name in skip:
            continue
        match = _SHARD_RE.match(entry.name)
        if match is not None:
            seq, rank, writer = match.groups()
            found.append((int(seq), -1 if rank is None else int(rank), writer or "", entry.path))
    for seq, rank, _writer, path in sorted(found):
        yield seq, None if rank == -1 else rank, Path(path)
