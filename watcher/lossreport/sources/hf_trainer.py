"""Hugging Face Trainer output folders: `trainer_state.json`, whose `log_history` holds every
value the Trainer logged.

The Trainer writes `checkpoint-N/trainer_state.json` at each save while it trains, and the
top-level `trainer_state.json` only when `save_state()` is called (usually after training).
So the state read is the top-level one, unless the highest checkpoint's is newer (training
resumed in the same folder after a `save_state()`); when that one cannot be read (it is being
written, or is damaged) the next one is, and the damaged one is named.

Every number in a `log_history` entry but `step` and `epoch` is a series: the losses,
`learning_rate`, `grad_norm`, the eval metrics and the final summary (`train_loss`,
`train_runtime`, `total_flos`...), as logged; `--exclude-series` drops what is not a loss.
The config is the model's `config.json`; `training_args.bin` is a pickle and is never read.
A run is completed once the state's `global_step` reaches its `max_steps`; until then it
is running, and taken as finished after a silence (a run stopped early records no end).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import storage
from ..errors import MalformedRunFileError, ReadBudgetError, UnsafePathError
from ..runformat import COMPLETED, RESERVED_COLUMNS, RUNNING, LossData, RunRecord
from . import longform, widecache
from .base import Inputs
from .yamlfile import json_safe

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
CACHE_FOLDER = "hf-trainer"  # the last read's table (widecache.read_whole)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
NOT_SERIES = frozenset({"step", "epoch"})
MAX_STATE_BYTES = 256 * 2**20
MAX_CONFIG_BYTES = 16 * 2**20
# What parsed JSON takes in Python objects (storage.budget), measured: about 4 bytes per byte
# of a Trainer's state and some 200 per object; a float in a list takes 8 per byte, at most.
JSON_BYTES_PER_BYTE = 8
JSON_BYTES_PER_OBJECT = 200
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SILENCE_RULE = longform.silence_rule("Hugging Face Trainer states")


@dataclass(frozen=True)
class _State:
    """One trainer_state.json: where it is (`name`: relative to the run) and its stat."""

    name: str
    stat: longform.FileStat

    @property
    def key(self) -> str:
        return f"{self.name}:{self.stat.size}:{self.stat.mtime_ns}"


class HfTrainerSource:
    name = "hf-trainer"
    label = "Hugging Face Trainer state"
    nests_runs = False

    def is_run(self, path: Path) -> bool:
        """A real folder, not itself a checkpoint, with a regular trainer_state.json in it or
        in a checkpoint-N folder of it."""
        if CHECKPOINT.match(path.name) or not storage.is_real_dir(path):
            return False
        return bool(_states(path)[0])

    def inputs(self, run_dir: Path) -> Inputs:
        """The state to read, by name, size and time (and the preferred one, if that cannot
        be read); its steps decide the status. A state is parsed once per version of it."""
        states, _ = _states(run_dir)
        if not states:
            return Inputs("", RUNNING, None, SILENCE_RULE, silence_finishes=True)
        used, steps = _first_readable(states)
        assert used is not None
        keys = list(dict.fromkeys((states[0].key, used.key)))
        status, rule = _status(steps)
        return Inputs(
            "|".join(keys),
            status,
            longform.last_written([used.stat]),
            rule,
            silence_finishes=status == RUNNING,
        )

    def read_record(self, run_dir: Path) -> RunRecord:
        """config.json (beside the state, else in the run folder or its highest checkpoint)
        as the config, the model named by its `_name_or_path` or `model_type`; the run by
        its output folder (the Trainer's default run_name: training_args.bin, which holds
        the one given, is a pickle and never read). Raises MalformedRunFileError for a
        config.json that cannot be read."""
        states, _ = _states(run_dir)
        used, steps = _first_readable(states)
        highest = next((state for state in states if state.name != STATE_FILE), None)
        folders = [(run_dir / state.name).parent for state in (used, highest) if state]
        config = _read_config([*folders[:1], run_dir, *folders[1:]])
        status, _ = _status(steps)
        heartbeat = longform.last_written([used.stat]) if used else None
        record = longform.record_from(
            run_dir,
            config,
            status=status,
            started_at=longform.first_written([state.stat for state in states]),
            heartbeat_at=heartbeat,
            finished_at=heartbeat if status == COMPLETED else None,
        )
        texts = [config.get(key) for key in longform.MODEL_KEYS]
        named = any(isinstance(text, str) and text.strip() for text in texts)
        model_type = config.get("model_type")
        if not named and isinstance(model_type, str) and model_type.strip():
            record = replace(record, model=model_type.strip())  # no _name_or_path: the type
        architectures = config.get("architectures")
        if record.architecture is None and isinstance(architectures, list) and architectures:
            record = replace(record, architecture=str(architectures[0]))
        return record

    def read_losses(self, run_dir: Path, cache: Path | None = None) -> LossData:
        """Every number of the state's log_history, read whole (the Trainer rewrites the file
        whole), within the run's read budget; while no state changed, the last read's
        table, kept in `cache` (widecache.read_whole). A state that cannot be read (or not
        within the budget) is named and the next one read."""
        states, skipped = _states(run_dir)
        files = [(state.name, state.stat) for state in states]
        return widecache.read_whole(
            cache, CACHE_FOLDER, files, lambda: _read(run_dir, states, list(skipped)), skipped
        )


def _read(run_dir: Path, states: list[_State], skipped: list[str]) -> LossData:
    """The first of `states` that can be read, whole."""
    budget = storage.ReadBudget()
    for state in states:
        path = run_dir / state.name
        try:
            document = _read_state(path, budget)
        except (OSError, MalformedRunFileError) as exc:
            logger.warning("%s", exc)
            skipped.append(str(exc))
            continue
        if state is not states[0]:
            skipped.append(f"{path}: read instead, as the newer state could not be")
        data = longform.wide_data(_long_rows(path, document, skipped), skipped)
        return replace(data, over_budget=budget.refused)
    if not states:
        skipped.append(f"{run_dir}: no {STATE_FILE} to read")
    return LossData(longform.empty_wide(), skipped, budget.refused)


def _states(run_dir: Path) -> tuple[list[_State], list[str]]:
    """The run's regular trainer_state.json files, the one to read first, then the top-level
    one, then the checkpoints' from the highest down; and what was found in their place
    (links, FIFOs), named."""
    problems: list[str] = []
    top = _state_at(run_dir, STATE_FILE, problems)
    checkpoints: list[tuple[int, _State]] = []
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                match = CHECKPOINT.match(entry.name)
                if match is None:
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    what = storage.kind_of(Path(entry.path))
                    problems.append(f"{entry.path}: is {what}; not followed or read")
                    continue
                found = _state_at(run_dir, f"{entry.name}/{STATE_FILE}", problems)
                if found is not None:
                    checkpoints.append((int(match[1]), found))
    except OSError:
        pass
    ordered = [state for _, state in sorted(checkpoints, key=lambda item: -item[0])]
    if top is None:
        return ordered, problems
    if ordered and ordered[0].stat.mtime_ns > top.stat.mtime_ns:
        return [ordered[0], top, *ordered[1:]], problems
    return [top, *ordered], problems


def _first_readable(states: list[_State]) -> tuple[_State | None, tuple[int, int] | None]:
    """The first state whose steps can be read, with them; else the first, without."""
    for state in states:
        steps = _steps_of(state)
        if steps is not None:
            return state, steps
    return (states[0] if states else None), None


def _state_at(run_dir: Path, name: str, problems: list[str]) -> _State | None:
    path = run_dir / name
    stat = longform.stat_file(path)
    if stat is None:
        if storage.lexists(path):
            problems.append(f"{path}: is {storage.kind_of(path)}; not followed or read")
        return None
    return _State(name, stat)


def _read_state(path: Path, budget: storage.ReadBudget | None = None) -> dict[str, Any]:
    """A trainer_state.json document with a log_history list; MalformedRunFileError (or
    storage's OSError) naming why not. What parsing it takes is estimated first and charged
    to `budget` (by default a fresh one): ReadBudgetError when it does not fit."""
    document = _read_json(path, MAX_STATE_BYTES, budget or storage.ReadBudget())
    if not isinstance(document, dict) or not isinstance(document.get("log_history"), list):
        raise MalformedRunFileError(path, "not a Trainer state: no log_history list")
    return document


def _read_json(path: Path, limit: int, budget: storage.ReadBudget | None = None) -> Any:
    """The JSON document in `path`; with a `budget`, charged what its Python objects take
    (estimated from its bytes and braces) before it is parsed."""
    try:
        if budget is None:
            data = storage.read_bytes(path, limit)
        else:
            data = budget.read_file(path, limit)
            parsed = len(data) * JSON_BYTES_PER_BYTE + data.count(b"{") * JSON_BYTES_PER_OBJECT
            budget.charge(path, parsed, "once parsed")
        return json.loads(data)
    except ReadBudgetError:
        raise
    except UnsafePathError as exc:
        raise MalformedRunFileError(path, exc.reason) from exc
    # ValueError: JSONDecodeError, or an integer over Python's 4300 digits
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRunFileError(path, f"not valid JSON ({exc})") from exc
    except RecursionError:
        raise MalformedRunFileError(path, "nested too deeply to read") from None


@lru_cache(maxsize=4096)
def _steps_at(path: Path, version: tuple[int, int, int]) -> tuple[int, int] | None:
    """(global_step, max_steps) of one version (inode, size, time) of a state: a daemon asks
    every few seconds, and a long run's state is megabytes. None when it cannot be read."""
    try:
        document = _read_state(path)
    except (OSError, MalformedRunFileError):
        return None
    global_step, max_steps = document.get("global_step"), document.get("max_steps")
    return (
        global_step if type(global_step) is int else 0,
        max_steps if type(max_steps) is int else 0,
    )


def _steps_of(state: _State) -> tuple[int, int] | None:
    version = (state.stat.inode, state.stat.size, state.stat.mtime_ns)
    return _steps_at(state.stat.path, version)


def _status(steps: tuple[int, int] | None) -> tuple[str, str]:
    """The status and the rule that gave it."""
    if steps is not None:
        global_step, max_steps = steps
        if global_step >= max_steps > 0:
            return COMPLETED, f"Trainer state reached max_steps ({max_steps})"
    return RUNNING, SILENCE_RULE


def _read_config(folders: list[Path]) -> dict[str, Any]:
    """The first config.json found in `folders`, made JSON-safe; {} when there is none."""
    for folder in dict.fromkeys(folders):
        path = folder / CONFIG_FILE
        if not storage.lexists(path):
            continue
        try:
            document = _read_json(path, MAX_CONFIG_BYTES)
        except OSError as exc:
            if isinstance(exc, MalformedRunFileError):
                raise
            raise MalformedRunFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
        if not isinstance(document, dict):
            raise MalformedRunFileError(path, "not a model config: not a JSON object")
        plain = json_safe(document)
        assert isinstance(plain, dict)
        return plain
    return {}


def _long_rows(path: Path, document: dict[str, Any], skipped: list[str]) -> pa.Table:
    """log_history as long rows, in the order logged."""
    series: list[str] = []
    steps: list[int] = []
    values: list[float] = []
    no_step = 0
    too_large: list[int] = []  # entries whose step is beyond int64
    not_numbers: set[str] = set()
    reserved: set[str] = set()
    for index, entry in enumerate(document["log_history"]):
        step = entry.get("step") if isinstance(entry, dict) else None
        if type(step) is not int:
            no_step += 1
            continue
        if not INT64_MIN <= step <= INT64_MAX:
            too_large.append(index)
            continue
        for key, value in entry.items():
            if key in NOT_SERIES:
                continue
            if key in RESERVED_COLUMNS:
                reserved.add(key)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                not_numbers.add(key)
                continue
            try:
                number = float(value)
            except OverflowError:
                not_numbers.add(key)
                continue
            series.append(key)
            steps.append(step)
            values.append(number)
    if no_step:
        skipped.append(f"{path}: {no_step} log_history entries without a step skipped")
    if too_large:
        skipped.append(
            f"{path}: {len(too_large)} log_history entries with a step beyond int64 skipped "
            f"(first: entry {too_large[0]})"
        )
    if reserved:
        names = ", ".join(sorted(reserved))
        skipped.append(f"{path}: log_history keys left out, the report's own columns: {names}")
    if not_numbers:
        names = ", ".join(sorted(not_numbers))
        skipped.append(f"{path}: log_history keys that are not numbers left out: {names}")
    return longform.long_table(series, steps, [float("nan")] * len(steps), values)
