"""The run's alert log: appended whole, never written through a link, and read as empty (or
cleaned) whatever a run's owner leaves in it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lossreport import runformat
from lossreport.errors import RunDirectoryError
from tests.support.deadline import fails_if_blocked


def _run(runs_dir: Path) -> Path:
    run_dir = runs_dir / "r"
    run_dir.mkdir()
    return run_dir


def test_alerts_are_appended_in_order(runs_dir: Path) -> None:
    run_dir = _run(runs_dir)
    runformat.append_alert_log(run_dir, [{"rule": "non-finite", "step": 7, "detail": "d"}])
    runformat.append_alert_log(run_dir, [{"rule": "stalled", "step": None, "detail": "e"}])
    assert [entry["rule"] for entry in runformat.read_alert_log(run_dir)] == [
        "non-finite",
        "stalled",
    ]


def test_a_hand_edited_log_is_read_with_each_field_of_its_type(runs_dir: Path) -> None:
    run_dir = _run(runs_dir)
    entries = [{"rule": 3, "step": "7", "loss": ["x"], "value": {}, "detail": None}, "junk"]
    (run_dir / runformat.ALERTS_FILE).write_text(json.dumps({"alerts": entries}))
    (entry,) = runformat.read_alert_log(run_dir)
    assert (entry["rule"], entry["step"], entry["loss"], entry["value"]) == (
        "3",
        None,
        "['x']",
        None,
    )
    (run_dir / runformat.ALERTS_FILE).write_text('{"alerts": [{"value": NaN, "extra": [1]}]}')
    (entry,) = runformat.read_alert_log(run_dir)
    assert entry["value"] == "nan" and "extra" not in entry  # strict JSON for the summary
    for junk in ("", "[]", '{"alerts": 1}'):
        (run_dir / runformat.ALERTS_FILE).write_text(junk)
        assert runformat.read_alert_log(run_dir) == []


def test_a_log_that_is_a_link_or_a_fifo_is_never_read_through_nor_written_through(
    runs_dir: Path, tmp_path: Path
) -> None:
    run_dir = _run(runs_dir)
    dummy = tmp_path / "dummy.json"
    dummy.write_text(json.dumps({"alerts": [{"rule": "forged"}]}))
    (run_dir / runformat.ALERTS_FILE).symlink_to(dummy)
    assert runformat.read_alert_log(run_dir) == []
    with pytest.raises(RunDirectoryError, match="is a symbolic link; left untouched"):
        runformat.append_alert_log(run_dir, [{"rule": "non-finite"}])
    assert json.loads(dummy.read_text()) == {"alerts": [{"rule": "forged"}]}  # untouched
    (run_dir / runformat.ALERTS_FILE).unlink()
    os.mkfifo(run_dir / runformat.ALERTS_FILE)
    with fails_if_blocked(10):
        assert runformat.read_alert_log(run_dir) == []
