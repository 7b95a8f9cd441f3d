"""run.json: the `RunRecord` a trainer writes and every reader checks, and how its times read."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import storage
from ..clock import utc_now
from ..errors import MalformedRunFileError, RunDirectoryError, UnsafePathError
from .layout import RUN_FILE, RUNNING, STATUSES

FORMAT = "lossreport.run/1"
MAX_RUN_FILE_DEPTH = 32  # config nesting deeper than this makes run.json malformed
# A lossreport trainer refreshes heartbeat_at with every shard, and this often when it has
# nothing to write: a reader may take a heartbeat older than twice this for a silent writer.
IDLE_HEARTBEAT_SECS = 30.0


def parse_time(text: str) -> datetime:
    """Parse a run.json timestamp; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class RunRecord:
    """The contents of run.json."""

    run_id: str
    model: str
    hook: str
    architecture: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    status: str = RUNNING
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    heartbeat_at: str = field(default_factory=utc_now)
    host: str = ""
    pid: int = 0
    error: str | None = None

    def to_json(self) -> str:
        doc = {"format": FORMAT, **asdict(self)}
        # default=str keeps config values such as torch.dtype or Path readable instead of failing.
        return json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n"


RUN_FILE_MISSING = "missing"  # read_run_file's reason when there is no run.json


def write_run_file(run_dir: storage.RunLocation, record: RunRecord) -> None:
    """Replace run.json whole: a reader sees the old record or the new one."""
    storage.folder_at(run_dir).replace(RUN_FILE, record.to_json().encode())


def read_run_file(run_dir: storage.RunLocation) -> RunRecord:
    """Read and check run.json; raises MalformedRunFileError naming what is wrong."""
    folder = storage.folder_at(run_dir)
    return _checked_record(
        folder.where(RUN_FILE), lambda: folder.read(RUN_FILE, storage.MAX_RUN_FILE_BYTES)
    )


def read_run_file_stated(run_dir: Path) -> tuple[RunRecord, os.stat_result]:
    """`read_run_file` of a run folder on a filesystem, and the stat of the run.json read
    (storage.read_stated): a reader that stated it before can tell whether it read that
    version, or one that replaced it since."""
    path = run_dir / RUN_FILE
    stated: list[os.stat_result] = []

    def read() -> bytes:
        data, found = storage.read_stated(path, storage.MAX_RUN_FILE_BYTES)
        stated.append(found)
        return data

    return _checked_record(path, read), stated[0]


def _checked_record(path: Path | str, read: Callable[[], bytes]) -> RunRecord:
    try:
        data = read()
        doc = storage.load_json(data, numbers_as_text=True)
    except FileNotFoundError:
        raise MalformedRunFileError(path, RUN_FILE_MISSING) from None
    except UnsafePathError as exc:
        raise MalformedRunFileError(path, exc.reason) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRunFileError(path, f"not valid JSON ({exc})") from exc
    except RecursionError:
        raise MalformedRunFileError(path, "nested too deeply to read") from None
    except OSError as exc:
        raise RunDirectoryError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # an integer of thousands of digits, and the like
        raise MalformedRunFileError(path, f"not readable JSON ({exc})") from exc
    # Nested no deeper than it has brackets: most run.json files have a few, and are not walked
    shallow = data.count(b"{") + data.count(b"[") <= MAX_RUN_FILE_DEPTH
    if not shallow and _depth_exceeds(doc, MAX_RUN_FILE_DEPTH):
        raise MalformedRunFileError(path, f"nested deeper than {MAX_RUN_FILE_DEPTH} levels")
    if not isinstance(doc, dict):
        raise MalformedRunFileError(path, "expected a JSON object")
    if doc.get("format") != FORMAT:
        raise MalformedRunFileError(path, f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    for name in ("run_id", "status", "started_at"):
        if not isinstance(doc.get(name), str):
            raise MalformedRunFileError(path, f"field {name!r} must be a string")
    if doc["status"] not in STATUSES:
        raise MalformedRunFileError(
            path, f"status {doc['status']!r} is not one of {sorted(STATUSES)}"
        )
    for name in ("started_at", "finished_at", "heartbeat_at"):
        value = doc.get(name)
        if value is None and name != "started_at":
            continue
        try:
            parse_time(value if isinstance(value, str) else "")
        except ValueError:
            raise MalformedRunFileError(path, f"field {name!r} is not an ISO 8601 time") from None
    config = doc.get("config")
    pid = doc.get("pid")
    return RunRecord(
        run_id=doc["run_id"],
        model=_text(doc.get("model"), "unknown-model"),
        hook=_text(doc.get("hook"), "unknown-hook"),
        architecture=None if doc.get("architecture") is None else str(doc["architecture"]),
        config=config if isinstance(config, dict) else {},
        status=doc["status"],
        started_at=doc["started_at"],
        finished_at=doc.get("finished_at"),
        heartbeat_at=doc.get("heartbeat_at") or doc["started_at"],
        host=_text(doc.get("host"), ""),
        pid=pid if isinstance(pid, int) else 0,
        error=None if doc.get("error") is None else str(doc["error"]),
    )


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests deeper than `limit` (walked without recursion, so
    that later code, which does recurse, never meets a document deep enough to overflow)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return False


def _text(value: Any, default: str) -> str:
    return default if value is None else str(value)
