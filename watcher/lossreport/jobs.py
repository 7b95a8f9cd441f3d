"""The unit of work the daemon hands to a worker process: render one run, record it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .render import render_run
from .runstate import RenderedMarker, read_marker, write_marker


def render_job(run_dir: Path, status: str, fingerprint: str) -> dict[str, Any]:
    """Render `run_dir` as `status` and record `fingerprint`; returns its runs-index entry.

    Raises RunBusy when another process (another daemon on a shared directory) holds the run.
    """
    done = read_marker(run_dir)
    if done is not None and (done.fingerprint, done.status) == (fingerprint, status):
        return done.entry  # another daemon rendered these very inputs a moment ago
    result = render_run(run_dir, status=status, wait=False)
    entry = {
        "run_id": run_dir.name,
        "status": status,
        "model": result.stats["model_name"],
        "hook": result.stats["hook_name"],
        "architecture": result.run_architecture,
        "steps": result.stats["total_steps"],
        "final": {name: loss["final"] for name, loss in result.stats["losses"].items()},
        "problems": len(result.problems),
        "report": str(result.report.relative_to(run_dir.parent)),
        "rendered_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_marker(run_dir, RenderedMarker(fingerprint, status, entry))
    return entry
