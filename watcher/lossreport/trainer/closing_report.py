"""The report at a run's close, `start_run(report_on_close=...)`: the feature document's "graphs
are generated automatically when training ends", for a trainer that no daemon follows.

The render runs in a child process, `python -m lossreport render RUN`: the chart engine is never
imported into the training process, its memory (150 to 300 MB) is given back when the child
exits, and a crash in it cannot take the trainer down. The child prints the document's console
block; it is relayed to this process's stdout, so a notebook shows it in the cell.

`"auto"` leaves the report to a live `lossreport watch` daemon that follows the runs directory
(it says so in a presence file, runformat/presence.py), so a cluster does no double work.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal, TextIO

from .. import runformat

logger = logging.getLogger(__name__)

AUTO: Literal["auto"] = "auto"
ReportOnClose = bool | Literal["auto"]
# Read by "auto" before it looks for a daemon: a cluster's or a test suite's default.
ENVIRONMENT_VARIABLE = "LOSSREPORT_REPORT_ON_CLOSE"
_YES, _NO = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
# A render that takes longer has hung: a 1M-step run renders in seconds.
RENDER_TIMEOUT_SECONDS = 600.0


def checked_setting(value: object) -> ReportOnClose:
    """`value` if it is a valid `report_on_close`; ValueError otherwise (at `start_run`, not at
    the end of a long training)."""
    if value is True or value is False:
        return value
    if value == AUTO:  # a string from a config file or argv, not this constant itself
        return AUTO
    raise ValueError(f"report_on_close must be True, False or 'auto', got {value!r}")


def wanted(setting: ReportOnClose, runs_dir: Path) -> bool:
    """Whether the closing run should render its report here, now."""
    if setting != AUTO:
        return bool(setting)
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE, AUTO).strip().lower()
    if from_environment in _YES | _NO:
        return from_environment in _YES
    if from_environment != AUTO:
        logger.warning(
            "ignoring %s=%r: expected one of 1, 0, true, false, auto",
            ENVIRONMENT_VARIABLE,
            from_environment,
        )
    daemon = runformat.live_daemon(runs_dir)
    if daemon is None:
        return True
    logger.info(
        "%s: the report is left to the lossreport watch daemon following it (host %s, pid %d)",
        runs_dir,
        daemon.host,
        daemon.pid,
    )
    return False


def render_in_child(run_dir: Path | str) -> bool:
    """Render `run_dir` in a child process and relay what it prints. Never raises for a failed
    render: the run is finished whatever happens to its report, which `lossreport render` (or
    a daemon) can still make. Returns whether the report was rendered."""
    try:
        returncode, out, err = _run_child(run_dir)
    except subprocess.TimeoutExpired:
        reason = f"the render took longer than {RENDER_TIMEOUT_SECONDS:.0f} s and was stopped"
    except OSError as exc:
        reason = f"cannot start {sys.executable or 'python'} ({exc})"
    else:
        _relay(out, sys.stdout)
        if returncode == 0:
            _relay(err, sys.stderr)  # its warnings, such as inputs it skipped
            return True
        logger.debug("%s: the render's error output:\n%s", run_dir, err)
        lines = [line for line in err.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"the render exited with status {returncode}"
    note = f"Loss report not rendered: {reason}. Render it with: lossreport render {run_dir}"
    logger.error("%s: %s", run_dir, note)
    _relay(note + "\n", sys.stdout)
    return False


def _relay(text: str, stream: TextIO) -> None:
    if text:
        stream.write(text)
        stream.flush()


def _run_child(run_dir: Path | str) -> tuple[int, str, str]:
    """`python -m lossreport render RUN` in a session of its own, so that on a timeout or a
    Ctrl-C here the child and its chart-drawing helper are stopped together."""
    if not sys.executable:  # an embedded interpreter that cannot name itself
        raise OSError("no Python executable (sys.executable is empty)")
    command = [sys.executable, "-m", "lossreport", "render", str(run_dir)]
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_environment(),
        start_new_session=True,
    ) as child:
        try:
            out, err = child.communicate(timeout=RENDER_TIMEOUT_SECONDS)
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
        return child.returncode, out, err


def _child_environment() -> dict[str, str]:
    """This process's environment, with this very lossreport first on the path: the trainer may
    have imported it from a folder that the child would not find by itself."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": package_parent if not path else f"{package_parent}{os.pathsep}{path}",
    }
