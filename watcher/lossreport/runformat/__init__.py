"""The run-directory format, `lossreport.run/1`: the only code that knows its names and layout.

A run directory holds `run.json` (metadata and status, always replaced atomically) and
`losses/part-NNNNNN[-rankR][-wTOKEN].parquet` shards; the renderer adds `loss_graphs/`. The
trainer writes through here, and the native source (sources/native.py) reads through here.
docs/run-directory-format.md is the contract other writers can implement.

- layout.py: every name (files, folders, statuses, columns) and where things are
- record.py: run.json (`RunRecord`) and its timestamps
- shards.py: loss shards, written and read back into one table (`LossData`)
- marker.py: the render marker in `loss_graphs/`
- presence.py: a live daemon's presence file in the runs directory
- alertlog.py: the alerts raised while a run trained
- homes.py: where lossreport keeps its files for a run (beside it, or under --output)
"""

from ..clock import utc_now
from .alertlog import append_alert_log, read_alert_log
from .homes import Homes
from .layout import (
    ALERTS_FILE,
    BROWSE_MIRROR_RULES,
    CACHE_DIR,
    CATALOG_DIR,
    CATALOG_FILE,
    CLEARED_DIR,
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    GRAPHS_DIR,
    INDEX_FILE,
    LEASE_FILE,
    LEASE_OWNER_FILE,
    LOCK_FILE,
    LOSSES_DIR,
    MARKER,
    MAX_RUN_DEPTH,
    MIRROR_RULES,
    OUTBOX_DIR,
    PRESENCE_FILE,
    RESERVED_COLUMNS,
    RUN_FILE,
    RUNNING,
    SENT_FILE,
    STAGE_PREFIXES,
    STALLED,
    STATUSES,
    STEP,
    UNKNOWN,
    WALL_TIME,
    clean_name,
    holds_inputs,
    is_run_name,
    is_walked,
    iter_shards,
    list_folders,
    looks_like_run,
    parse_shard_name,
    shard_name,
    watched_parts,
)
from .marker import RenderedMarker, read_marker, write_marker
from .presence import DaemonPresence, live_daemon, remove_presence, write_presence
from .record import (
    FORMAT,
    IDLE_HEARTBEAT_SECS,
    MAX_RUN_FILE_DEPTH,
    RUN_FILE_MISSING,
    RunRecord,
    parse_time,
    read_run_file,
    write_run_file,
)
from .shards import (
    LossData,
    next_shard_seq,
    read_losses,
    read_shard,
    set_aside_shards,
    write_shard,
)

__all__ = [
    "ALERTS_FILE",
    "BROWSE_MIRROR_RULES",
    "CACHE_DIR",
    "CATALOG_DIR",
    "CATALOG_FILE",
    "CLEARED_DIR",
    "COMPLETED",
    "FAILED",
    "FINISHED_STATUSES",
    "FORMAT",
    "GRAPHS_DIR",
    "IDLE_HEARTBEAT_SECS",
    "INDEX_FILE",
    "LEASE_FILE",
    "LEASE_OWNER_FILE",
    "LOCK_FILE",
    "LOSSES_DIR",
    "MARKER",
    "MAX_RUN_DEPTH",
    "MAX_RUN_FILE_DEPTH",
    "MIRROR_RULES",
    "OUTBOX_DIR",
    "PRESENCE_FILE",
    "RESERVED_COLUMNS",
    "RUNNING",
    "RUN_FILE",
    "RUN_FILE_MISSING",
    "SENT_FILE",
    "STAGE_PREFIXES",
    "STALLED",
    "STATUSES",
    "STEP",
    "UNKNOWN",
    "WALL_TIME",
    "DaemonPresence",
    "Homes",
    "LossData",
    "RenderedMarker",
    "RunRecord",
    "append_alert_log",
    "clean_name",
    "holds_inputs",
    "is_run_name",
    "is_walked",
    "iter_shards",
    "list_folders",
    "live_daemon",
    "looks_like_run",
    "next_shard_seq",
    "parse_shard_name",
    "parse_time",
    "read_alert_log",
    "read_losses",
    "read_marker",
    "read_run_file",
    "read_shard",
    "remove_presence",
    "set_aside_shards",
    "shard_name",
    "utc_now",
    "watched_parts",
    "write_marker",
    "write_presence",
    "write_run_file",
    "write_shard",
]
