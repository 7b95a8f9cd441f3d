"""What a W&B log's records say: its `wandb.log` scalars as long rows (`History`), and the
run's name, config, summary and end (`Meta`).

A history record is one `wandb.log` call: `_step` (or the step the user passed), `_timestamp`
(the wall time), `_runtime` and each logged key with its value as JSON. A number is a row of its
key at the record's step, or at the value of the key's step metric in the same record where
`define_metric` named one (a later definition applies to the records after it). A dictionary
is flattened (`a.b`); media (a dictionary with `_type`: images, tables, histograms) and
anything else that is not a number are left out and named, once per key. `_timestamp` is the
row's wall time, not a series; system metrics are records of their own, left out and counted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import pyarrow as pa

from . import longform
from .wandb_log import HISTORY, METRIC, STATS, UNREAD_KINDS, Codec, kind_of

STEP_KEY, TIME_KEY = "_step", "_timestamp"
TYPE_PART = "._type"  # the last part of a media value's type item
TYPE_BYTES = b"_type"  # in a record that may hold one
MAX_FLAT_DEPTH = 8  # levels of a logged dictionary flattened into names
MAX_NOTES = 20  # keys named as not read, per run
MAX_CONFIG_BYTES = 2**20  # a config value's JSON longer than this is left out
MAX_SUMMARY_KEYS = 1000  # kept in the record (per-feature logging makes thousands)


@dataclass
class StepMetrics:
    """define_metric's step metrics: by name, and by glob (`train/*`), the first match wins."""

    names: dict[str, str] = field(default_factory=dict)
    globs: list[tuple[str, str]] = field(default_factory=list)
    _found: dict[str, str | None] = field(default_factory=dict)

    def add(self, metric: Any) -> None:
        if not metric.step_metric:
            return
        if metric.name:
            self.names[metric.name] = metric.step_metric
        elif metric.glob_name:
            self.globs.append((metric.glob_name, metric.step_metric))
        self._found.clear()

    def of(self, key: str) -> str | None:
        if key not in self._found:
            found = self.names.get(key)
            if found is None:
                found = next((step for glob, step in self.globs if fnmatchcase(key, glob)), None)
            self._found[key] = found
        return self._found[key]

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "globs": [list(pair) for pair in self.globs]}

    @classmethod
    def from_json(cls, document: Any) -> StepMetrics:
        names = document["names"]
        globs = document["globs"]
        if not isinstance(names, dict) or not isinstance(globs, list):
            raise TypeError("not step metrics")
        metrics = cls({str(k): str(v) for k, v in names.items()})
        metrics.globs = [(str(glob), str(step)) for glob, step in globs]
        return metrics


class History:
    """The long rows of the history records fed to it, in the order written."""

    def __init__(self, codec: Codec, steps: StepMetrics, notes: dict[str, str]) -> None:
        self.codec = codec
        self.steps = steps
        self.notes = notes  # key -> why it is not read (media, text), kept across reads
        self.system_records = 0
        self.undecodable = 0
        self._names: list[str] = []  # series, numbered in order of first appearance
        self._codes: dict[str, int] = {}
        self._series: list[int] = []  # per row: its series' number
        self._values: list[float] = []
        # Per run of rows at one step and wall time (a history record's, or one row's):
        self._run_steps: list[int] = []
        self._run_walls: list[float] = []
        self._run_rows: list[int] = []

    def feed(self, record: bytes) -> None:
        kind = kind_of(record)
        if kind == HISTORY:
            self._history(record)
        elif kind == STATS:
            self.system_records += 1
        elif kind == METRIC:
            decoded = self._decode(record)
            if decoded is not None:
                self.steps.add(decoded.metric)

    def _decode(self, record: bytes) -> Any:
        try:
            return self.codec.record.FromString(record)
        except self.codec.decode_error:
            self.undecodable += 1
            return None

    def _history(self, data: bytes) -> None:
        """One `wandb.log` call's rows: the one per-record loop of a read, kept short."""
        record = self._decode(data)
        if record is None:
            return
        history = record.history
        media = _media(history) if TYPE_BYTES in data else {}
        wall = math.nan
        numbers: dict[str, float] = {}
        for item in history.item:
            nested = item.nested_key  # W&B's writer uses one part: taken, not joined
            key = item.key or (nested[0] if len(nested) == 1 else ".".join(nested))
            if media and _within(key, media):
                continue
            text = item.value_json
            try:
                number = float(text)
            except ValueError:
                self._other(key, text, numbers)
                continue
            if key == TIME_KEY:
                wall = number
            elif key != STEP_KEY:
                numbers[key] = number
        for prefix, kind in media.items():
            self._note(prefix, f"W&B media ({_json(kind)}), not a number")
        if not numbers:
            return
        step = history.step.num
        if self.steps.names or self.steps.globs:
            self._by_step_metric(numbers, step, wall)
            return
        codes = self._codes
        self._series.extend([codes[key] if key in codes else self._code(key) for key in numbers])
        self._values.extend(numbers.values())
        self._run_steps.append(step)
        self._run_walls.append(wall)
        self._run_rows.append(len(numbers))

    def _by_step_metric(self, numbers: dict[str, float], step: int, wall: float) -> None:
        """Rows one by one, each at its step metric's value where it has one."""
        for key, number in numbers.items():
            at = step
            metric = self.steps.of(key)
            if metric is not None:
                by = numbers.get(metric)
                if by is not None and math.isfinite(by) and by == int(by):
                    at = int(by)
            self._series.append(self._codes[key] if key in self._codes else self._code(key))
            self._values.append(number)
            self._run_steps.append(at)
            self._run_walls.append(wall)
            self._run_rows.append(1)

    def _code(self, key: str) -> int:
        self._codes[key] = len(self._names)
        self._names.append(key)
        return self._codes[key]

    def _other(self, key: str, text: str, numbers: dict[str, float]) -> None:
        """A value that is not a JSON number: a dictionary's numbers, or a note."""
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            self._note(key, "not JSON")
            return
        if isinstance(value, dict) and "_type" not in value:
            _flatten(key, value, numbers, self._note, 1)
        elif isinstance(value, dict):
            self._note(key, f"W&B media ({value['_type']}), not a number")
        else:
            self._note(key, f"a {type(value).__name__}, not a number")

    def _note(self, key: str, why: str) -> None:
        if key not in self.notes and len(self.notes) < MAX_NOTES:
            self.notes[key] = why

    def table(self) -> pa.Table:
        rows = np.array(self._run_rows, np.int64)
        names = pa.array(self._names, pa.string())
        codes = pa.array(np.array(self._series, np.int32))
        return pa.table(
            [
                pa.DictionaryArray.from_arrays(codes, names).cast(pa.string()),
                pa.array(np.repeat(np.array(self._run_steps, np.int64), rows)),
                pa.array(np.repeat(np.array(self._run_walls, np.float64), rows)),
                pa.array(np.array(self._values, np.float64)),
            ],
            schema=longform.LONG_SCHEMA,
        )


def _media(history: Any) -> dict[str, str]:
    """The media values of a history record: their keys, and their types' JSON."""
    found = {}
    for item in history.item:
        key = _key(item)
        if key.endswith(TYPE_PART):
            found[key[: -len(TYPE_PART)]] = item.value_json
    return found


def _key(item: Any) -> str:
    """An item's key: `key`, or its `nested_key` parts joined with dots (W&B's Go writer uses
    one part; joining a one-part list costs three times as much as taking it)."""
    nested = item.nested_key
    return item.key or (nested[0] if len(nested) == 1 else ".".join(nested))


def _within(key: str, media: dict[str, str]) -> bool:
    """Whether `key` is a part of a media value (W&B logs `weights` as `weights._type`,
    `weights.bins`, ...)."""
    return any(key == prefix + TYPE_PART or key.startswith(prefix + ".") for prefix in media)


def _flatten(
    prefix: str, value: dict[str, Any], numbers: dict[str, float], note: Any, depth: int
) -> None:
    for name, inner in value.items():
        key = f"{prefix}.{name}"
        if isinstance(inner, bool) or inner is None:
            note(key, "not a number")
        elif isinstance(inner, int | float):
            numbers[key] = float(inner)
        elif isinstance(inner, dict) and "_type" not in inner and depth < MAX_FLAT_DEPTH:
            _flatten(key, inner, numbers, note, depth + 1)
        else:
            note(key, "not a number")


@dataclass
class Meta:
    """What a log records of its run besides the history."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    host: str = ""
    started_at: float | None = None  # POSIX seconds
    resumed: bool = False
    exit_code: int | None = None  # None: no exit record yet
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def feed(self, data: bytes, codec: Codec) -> None:
        """One record, of any kind; history and the kinds in UNREAD_KINDS are not decoded."""
        kind = kind_of(data)
        if kind == HISTORY or kind in UNREAD_KINDS:
            return
        try:
            record = codec.record.FromString(data)
        except codec.decode_error:
            return
        which = record.WhichOneof("record_type")
        if which == "run":
            self._run(record.run)
        elif which == "config":
            self._config(record.config)
        elif which == "summary":
            for item in record.summary.update:
                key = _key(item)
                if key.startswith("_") or (
                    key not in self.summary and len(self.summary) >= MAX_SUMMARY_KEYS
                ):
                    continue
                value = _json(item.value_json)
                if not isinstance(value, list | dict) and "._" not in key:  # no media
                    self.summary[key] = value
        elif which == "exit":
            self.exit_code = record.exit.exit_code

    def _run(self, run: Any) -> None:
        self.run_id = run.run_id or self.run_id
        self.project = run.project or self.project
        self.entity = run.entity or self.entity
        self.name = run.display_name or self.name
        self.group = run.run_group or self.group
        self.host = run.host or self.host
        self.resumed = self.resumed or run.resumed
        if run.HasField("start_time") and run.start_time.seconds > 0:
            self.started_at = run.start_time.seconds + run.start_time.nanos / 1e9
        self._config(run.config)

    def _config(self, config: Any) -> None:
        for item in config.update:
            key = _key(item)
            if key != "_wandb" and len(item.value_json) <= MAX_CONFIG_BYTES:
                self.config[key] = _json(item.value_json)
        for item in config.remove:
            self.config.pop(_key(item), None)


def _json(text: str) -> Any:
    """A value's JSON, or its text when it is not JSON; NaN and infinities, at any depth, as
    text, which run.json (strict JSON) can hold."""
    try:
        return json.loads(text, parse_constant=str)
    except (ValueError, RecursionError):
        return text
