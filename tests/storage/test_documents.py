"""lossreport's own JSON records, read as "none" whenever they are not what it wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lossreport import storage


def _count(document: Any) -> int:
    return int(document["count"])


def test_a_good_document_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_text('{"count": 3}')
    assert storage.read_json_or(tmp_path / "doc.json", 100, _count, -1) == 3


@pytest.mark.parametrize(
    "text",
    ["", "not json", '{"count": "three"}', '{"other": 1}', "[1, 2]", "[" * 100_000, "\xff"],
)
def test_anything_unexpected_reads_as_the_fallback(tmp_path: Path, text: str) -> None:
    (tmp_path / "doc.json").write_bytes(text.encode("latin-1"))
    assert storage.read_json_or(tmp_path / "doc.json", 10**6, _count, -1) == -1


def test_missing_too_large_linked_or_not_a_file_reads_as_the_fallback(tmp_path: Path) -> None:
    assert storage.read_json_or(tmp_path / "missing.json", 100, _count, -1) == -1
    (tmp_path / "big.json").write_text('{"count": 3}' + " " * 100)
    assert storage.read_json_or(tmp_path / "big.json", 50, _count, -1) == -1
    dummy = tmp_path / "dummy"
    dummy.mkdir()
    (dummy / "target.json").write_text('{"count": 3}')
    (tmp_path / "link.json").symlink_to(dummy / "target.json")
    assert storage.read_json_or(tmp_path / "link.json", 100, _count, -1) == -1
    os.mkfifo(tmp_path / "fifo.json")  # opened without blocking, never read
    assert storage.read_json_or(tmp_path / "fifo.json", 100, _count, -1) == -1
    assert storage.read_json_or(dummy, 100, _count, -1) == -1


def test_a_lone_surrogate_escape_reads_as_the_replacement_character() -> None:
    """`"\\ud800"` is valid ASCII JSON and half a character: UTF-8, SQLite and the chart
    engine refuse it, so one run's name stopped the daemon's catalog writes."""
    data = rb'{"model\ud800": ["tiny\udcffmodel", "\ud83d\ude00", "plain"]}'
    assert storage.load_json(data) == {"model\ufffd": ["tiny\ufffdmodel", "\U0001f600", "plain"]}
    (document,) = storage.load_json(data).values()
    assert all(text.encode() for text in document)  # each one UTF-8 now


def test_numbers_no_float_holds_can_be_kept_as_written() -> None:
    """`1e400` reads as inf and NaN as nan, which strict JSON (the summary, the page) refuses:
    a config value keeps the text it was written as."""
    data = b'{"lr": 1e400, "wd": -1e400, "seed": NaN, "beta": Infinity, "eps": 1e-8, "n": 3}'
    assert storage.load_json(data, numbers_as_text=True) == {
        "lr": "1e400", "wd": "-1e400", "seed": "NaN", "beta": "Infinity", "eps": 1e-8, "n": 3
    }  # fmt: skip
    assert storage.load_json(data)["lr"] == float("inf")  # as Python reads it, where not asked
