"""Other tools' small config documents (Lightning's hparams.yaml, MLflow's meta.yaml, the
Hugging Face config.json), read safely and made plain.

YAML is read with PyYAML's safe loader, so no tag can make it build an object or run code.
Lightning writes hparams with `yaml.dump`, which tags values it cannot represent plainly
(`!!python/object/apply:pathlib.PosixPath`, `!!python/tuple`, argparse namespaces): the safe
loader refuses the whole file for one such value, so those tags are read as the plain data
under them instead (a call as text, an object as its attributes). Whatever is read becomes a
JSON-safe value (`json_safe`): the report writes its config with `allow_nan=False`, and a
document with anchors can expand exponentially when copied, so depth and size are bounded.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from .. import storage
from ..errors import MalformedRunFileError, UnsafePathError

MAX_YAML_BYTES = 2**20
MAX_DEPTH = 32  # nested deeper: shown as a placeholder
MAX_ITEMS = 100_000  # values copied from one document; beyond them: a placeholder

_YAML_TAG = "tag:yaml.org,2002:"
_PYTHON_TAG = _YAML_TAG + "python/"
_CALL_TAGS = ("object/apply:", "object/new:")
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _PlainLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader, reading unknown tags as the plain data they tag."""


def _untagged(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> Any:
    """The value under a tag the safe loader does not know, as plain data: no object built."""
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    name = tag.removeprefix(_PYTHON_TAG)
    if name == "tuple" or name.startswith("object:"):
        return value  # a tuple as a list, an object as its attributes
    if name.startswith(("name:", "module:")):
        return name.partition(":")[2]
    for call in _CALL_TAGS:
        if name.startswith(call):
            if isinstance(value, dict):  # the long form: args, kwds, state
                value = value.get("state") or value.get("args") or value
            arguments = value if isinstance(value, list) else [value]
            return f"{name.removeprefix(call)}({', '.join(repr(arg) for arg in arguments)})"
    shown = tag.replace(_YAML_TAG, "!!", 1) if tag.startswith(_YAML_TAG) else tag
    return f"{shown} {value}" if value not in ("", None) else shown


_PlainLoader.add_multi_constructor("", _untagged)


def read_yaml_mapping(path: Path, limit: int = MAX_YAML_BYTES) -> dict[str, Any]:
    """The mapping YAML file `path` holds, made JSON-safe; {} for an empty file.

    Raises FileNotFoundError when it is missing, MalformedRunFileError (naming the file and
    why) when it is a link, a FIFO, too large, not YAML or not a mapping."""
    data = _read(path, limit)
    try:
        document = yaml.load(data, Loader=_PlainLoader)  # a safe loader: see _PlainLoader
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise MalformedRunFileError(path, f"not valid YAML ({reason})") from exc
    except RecursionError:
        raise MalformedRunFileError(path, "nested too deeply to read") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise MalformedRunFileError(path, f"holds a {type(document).__name__}, not a mapping")
    plain = json_safe(document)
    assert isinstance(plain, dict)
    return plain


def _read(path: Path, limit: int) -> bytes:
    try:
        return storage.read_bytes(path, limit)
    except FileNotFoundError:
        raise
    except UnsafePathError as exc:  # a link, a FIFO, a folder, too large
        raise MalformedRunFileError(path, exc.reason) from exc
    except OSError as exc:
        raise MalformedRunFileError(path, f"cannot be read ({exc.strerror or exc})") from exc


def json_safe(value: Any) -> Any:
    """`value` as strings, finite numbers, bools, None, lists and string-keyed dicts only:
    non-finite floats, dates and anything else as text, at most MAX_DEPTH deep and MAX_ITEMS
    values in all (a YAML alias is copied each time it is used)."""
    budget = [MAX_ITEMS]
    return _plain(value, 0, budget)


def _plain(value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        return "(left out: too many values)"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"({len(value):,} bytes)"
    if isinstance(value, dict | list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            return "(left out: nested too deeply)"
        if isinstance(value, dict):
            return {str(key): _plain(item, depth + 1, budget) for key, item in value.items()}
        return [_plain(item, depth + 1, budget) for item in value]
    return str(value)
