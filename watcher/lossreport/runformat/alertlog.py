"""The run's alert log, `RUN/.lossreport-alerts.json`: the alerts the daemon raised while the
run trained, each once. A restarted daemon reads it so it never raises one again, and the
report and the runs index show it.

It holds plain JSON documents (the alerts part gives them their meaning); like every record
lossreport keeps in a run, anything unexpected in it reads as "no alerts yet".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import storage
from ..errors import RunDirectoryError
from .layout import ALERTS_FILE

MAX_ALERTS = 1000  # a run raises a handful (once per rule); more is someone else's file


def read_alert_log(run_dir: Path) -> list[dict[str, Any]]:
    """The alerts raised for the run, oldest first; [] when there is no usable log."""
    return storage.read_json_or(run_dir / ALERTS_FILE, storage.MAX_MARKER_BYTES, _alerts, [])


def _alerts(document: Any) -> list[dict[str, Any]]:
    alerts = document["alerts"]
    if not isinstance(alerts, list):
        raise TypeError("alerts")
    return [_entry(item) for item in alerts[:MAX_ALERTS] if isinstance(item, dict)]


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    """The fields readers use and no other, each of its type whatever a hand edit left:
    `rule`, `detail` and `detected_at` text, `loss` text or None, `step` an int or None,
    `value` a finite number, "nan"/"inf"/"-inf" text, or None (strict JSON, for the summary)."""
    step, loss, value = item.get("step"), item.get("loss"), item.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    return {
        "rule": str(item.get("rule", "")),
        "loss": None if loss is None else str(loss),
        "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
        "value": value
        if isinstance(value, int | float | str) and not isinstance(value, bool)
        else None,
        "detail": str(item.get("detail", "")),
        "detected_at": str(item.get("detected_at", "")),
    }


def append_alert_log(run_dir: Path, alerts: list[dict[str, Any]]) -> None:
    """Add `alerts` to the run's log (replaced whole, in the run folder opened without
    following a link). Raises RunDirectoryError when it cannot be written."""
    document = {"alerts": [*read_alert_log(run_dir), *alerts][:MAX_ALERTS]}
    try:
        with storage.opened_dir(run_dir) as run_fd:
            data = json.dumps(document, indent=1).encode()
            storage.atomic_write(run_dir / ALERTS_FILE, data, dir_fd=run_fd)
    except OSError as exc:
        raise RunDirectoryError(run_dir, f"cannot record its alerts ({exc})") from exc
