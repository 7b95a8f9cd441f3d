"""The unit of work the daemon hands to a worker process: render one run, record it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .runstate import RenderedMarker, read_marker, write_marker


def warm_up() -> None:
    """Make a new worker as quick as a used one: load the renderer and draw a small chart."""
    import numpy as np

    from . import charts, vega
    from .history import LossSeries
    from .render import render_run  # noqa: F401  (imported for its import cost, now)
    from .stats import loss_stats

    series = LossSeries("warm_up", np.arange(100), np.linspace(1.0, 0.1, 100))
    vega.render(charts.loss_chart(series, loss_stats(series), "warm-up"))


def render_job(run_dir: Path, status: str, fingerprint: str) -> tuple[dict[str, Any], bool]:
    """Render `run_dir` as `status` and record `fingerprint`.

    Returns the run's runs-index entry, and False if another daemon had rendered these very
    inputs already. Raises RunBusy when another process holds the run.
    """
    from .render import render_run  # here, so the daemon's own process never loads the charts

    done = read_marker(run_dir)
    if done is not None and (done.fingerprint, done.status) == (fingerprint, status):
        return done.entry, False
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
    return entry, True
