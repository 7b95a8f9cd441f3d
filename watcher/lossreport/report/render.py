"""`render_run`: a pure function from a run directory to its `loss_graphs/` folder.

Everything is written into a hidden staging folder beside `loss_graphs/`, which then replaces
the old one with two renames, so a reader sees the old report or the new one, never a mix.
Broken inputs (a malformed run.json, corrupt shards) are reported in the output, not raised.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import runformat, sources, storage
from ..clock import utc_now, utc_time
from ..errors import (
    LossReportError,
    MalformedRunFileError,
    RunBusy,
    RunDirectoryError,
    UnsafePathError,
)
from ..runformat import LOCK_FILE, STAGE_PREFIXES, RenderedMarker
from ..sources import Source
from ..sources.base import quiet_status
from ..sources.series import SeriesFilter
from . import pages, stats
from .history import LossHistory, from_table
from .outputs import REPORT_FILE, OutputNames, write_charts, write_csv, write_json
from .pages import flat_config
from .shown import MAX_FULL_CHARS, listed, shortened
from .vega import ChartRenderer

logger = logging.getLogger(__name__)

OVERVIEW_POINTS = 60
NO_FILTER = SeriesFilter()
MAX_INDEX_ALERTS = 5  # a run raises each rule once: a handful at most


@dataclass
class RenderResult:
    """What one render wrote and what it had to skip."""

    run_dir: Path
    charts: list[Path]
    csv: Path
    summary: Path
    report: Path
    stats: dict[str, Any]
    run: dict[str, Any]  # run.json's fields, `status` as rendered, `duration`
    anomalies: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # raised while it trained
    combined_svg: str | None = None  # for pages and mail that draw the chart at their own size
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # small, for the index
    fingerprint: str = ""  # the inputs as the render found them, before reading them
    home: Path | None = None  # the folder holding loss_graphs/ (runformat.homes); run_dir if None

    @property
    def status(self) -> str:
        """The status the report shows (run.json's, or the one the render was given)."""
        return str(self.run["status"])

    @property
    def files(self) -> list[Path]:
        return [*self.charts, self.csv, self.summary, self.report]


@contextmanager
def render_lock(run_dir: Path, *, wait: float, root: Path | None = None) -> Iterator[int]:
    """One render of a run at a time, across processes and daemons on other hosts (flock,
    which Linux maps to POSIX locks on NFS). Waits up to `wait` seconds (`math.inf`: as long as
    it takes), then raises RunBusy.

    Yields a descriptor of the run directory (the folder that gets loss_graphs/), opened once
    without following a link: everything the render creates, moves or removes in the run goes
    through it, so an owner who swaps the folder for a link meanwhile only makes the render
    fail. With `root`, no folder between `root` and `run_dir` may be a link either.
    """
    with ExitStack() as held:
        try:
            if root is None:
                run_fd = held.enter_context(storage.opened_dir(run_dir))
            else:
                parts = run_dir.relative_to(root).parts
                run_fd = held.enter_context(storage.opened_beneath(root, parts))
            held.enter_context(
                storage.exclusive_lock(run_dir / LOCK_FILE, wait=wait, dir_fd=run_fd)
            )
        except RunBusy:
            raise RunBusy(run_dir) from None
        except UnsafePathError:
            raise
        except OSError as exc:
            raise RunDirectoryError(run_dir, f"cannot take the render lock ({exc})") from exc
        yield run_fd


def render_run(
    run_dir: str | os.PathLike[str],
    *,
    status: str | None = None,
    renderer: ChartRenderer | None = None,
    wait: bool | float = True,
    output: str | os.PathLike[str] | None = None,
    series: SeriesFilter = NO_FILTER,
) -> RenderResult:
    """Render `run_dir`'s report into `run_dir/loss_graphs/` (or `output/loss_graphs/`), and
    record the render in its marker, so a daemon does not render the same inputs again.

    Args:
        status: shown instead of run.json's status (the daemon passes "stalled").
        renderer: draws the charts; by default in this process.
        wait: if another process is rendering this run, wait for it: True as long as it
            takes, False not at all, a number for at most that many seconds; then RunBusy.
        output: the folder to write the report into (made if missing), for a run folder that
            is not writable; by default the run folder itself.
        series: which series are reported (by default all).

    Raises:
        RunDirectoryError: `run_dir` is not a run (a real folder that a source reads, such as
            one holding run.json or losses/: nothing is written into any other folder), cannot
            be read, or `loss_graphs/` cannot be written (UnsafePathError: a symlink or
            anything but a folder is there).
        RunBusy: another process was rendering the run for longer than `wait`.
    """
    run_dir = Path(run_dir)
    if not storage.is_real_dir(run_dir):
        raise RunDirectoryError(run_dir, f"is {storage.kind_of(run_dir)}, not a run directory")
    if sources.find(run_dir) is None:
        why = sources.what_is_not_a_run(run_dir)
        raise RunDirectoryError(run_dir, f"is not a run directory ({why})")
    seconds = math.inf if wait is True else float(wait)
    home = run_dir if output is None else Path(output)
    if output is not None:
        try:
            storage.make_dir(home)
        except OSError as exc:
            raise RunDirectoryError(home, f"cannot be made ({exc.strerror or exc})") from exc
    with render_lock(home, wait=seconds) as home_fd:
        result = render_held(
            run_dir, home_fd, home=home, status=status, renderer=renderer, series=series
        )
        record_render(home_fd, result)
        return result


def record_render(home_fd: int, result: RenderResult, *, by_daemon: bool = False) -> dict[str, Any]:
    """Write the render marker of `result`'s run (in its home, which `home_fd` holds, under the
    render lock): the inputs it saw, the status it showed, who rendered, and its runs-index
    entry, which it returns."""
    entry = pages.marker_entry(index_entry(result))
    marker = RenderedMarker(result.fingerprint, result.status, entry, by_daemon)
    runformat.write_marker(result.home or result.run_dir, home_fd, marker)
    return entry


def index_entry(result: RenderResult) -> dict[str, Any]:
    """The run's row in the runs index, as the marker keeps it: names up to MAX_FULL_CHARS,
    so a marker stays well within what is read back of one (storage.MAX_MARKER_BYTES)."""
    losses = {
        shortened(name, MAX_FULL_CHARS): loss for name, loss in result.stats["losses"].items()
    }
    architecture = result.run.get("architecture")
    return {
        "run_id": result.run_dir.name,
        "status": result.status,
        "model": shortened(result.stats["model_name"], MAX_FULL_CHARS),
        "hook": shortened(result.stats["hook_name"], MAX_FULL_CHARS),
        "architecture": architecture and shortened(str(architecture), MAX_FULL_CHARS),
        "steps": result.stats["total_steps"],
        "final": {name: loss["final"] for name, loss in losses.items()},
        "minimum": {name: loss["min"] for name, loss in losses.items()},
        "started_at": result.run.get("started_at"),
        "duration_seconds": result.run.get("duration_seconds"),
        "config": flat_config(result.run.get("config")),
        "problems": len(result.problems),
        "anomalies": len(result.anomalies),
        "alerts": [_alert_label(alert) for alert in result.alerts][:MAX_INDEX_ALERTS],
        "report": str(result.report.relative_to((result.home or result.run_dir).parent)),
        "source": result.run.get("source_name"),
        "rendered_at": utc_now("seconds"),
        "curves": result.curves,
    }


def render_held(
    run_dir: Path,
    run_fd: int,
    *,
    home: Path | None = None,
    status: str | None = None,
    renderer: ChartRenderer | None = None,
    fingerprint: str | None = None,
    series: SeriesFilter = NO_FILTER,
    verify: Callable[[], None] | None = None,
    draw: bool = True,
) -> RenderResult:
    """`render_run` for a caller that holds `render_lock(home)` (which gave `run_fd`, a
    descriptor of the home: by default `run_dir`) already: the daemon keeps it from checking
    what was rendered to recording the new render, so two daemons cannot both render the same
    inputs.

    `fingerprint`: the inputs from which the caller derived `status`, recorded with it; by
    default the inputs as found here, before they are read. `verify`: raises if what was read
    by path may not have been the run's (called before the report is put in place).
    `draw=False`: the quick report a daemon with a backlog writes first (everything but the
    charts, its page saying they are being drawn; no chart engine runs), which a full render
    replaces: not to be recorded in the marker."""
    home = home or run_dir
    # A helper thread writes the CSV (pyarrow, without the GIL) while the charts are drawn.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossreport-csv") as helper:
        problems: list[str] = []
        source = sources.source_of(run_dir)
        inputs = source.inputs(run_dir)
        if fingerprint is None:  # taken before reading: a change meanwhile renders again
            fingerprint = inputs.fingerprint
        # The cache is reached through the locked folder's descriptor, never through a path a
        # run's owner could re-point meanwhile.
        cache = storage.fd_path(run_fd, home) / runformat.CACHE_DIR
        record = record_or_stand_in(source, run_dir, problems, cache)
        data = source.read_losses(run_dir, cache=cache)
        problems += data.skipped
        table, left_out = series.apply(data.table)
        history = from_table(table)  # every kept series, for the CSV
        drawn = series.drawn(history.loss_names)
        losses = history.select(drawn.losses)  # what is drawn and summarised
        started = runformat.parse_time(record.started_at)
        names = OutputNames.for_run(record.model, record.hook, started)
        summary = stats.summary_stats(losses, record.model, record.hook)
        anomalies = stats.anomalies(summary)
        alerts = runformat.read_alert_log(home)
        if status is None and inputs.silence_finishes:  # no daemon said; the default rule
            status = quiet_status(inputs, utc_time())
        page_fields = _page_fields(record, status, source, inputs)
        page_fields["series_left_out"] = (
            f"{series.describe()}: {listed(left_out)}" if left_out else None
        )
        final_dir = home / runformat.GRAPHS_DIR
        stage = _make_stage(home, run_fd)
        try:
            csv_written = helper.submit(write_csv, stage / names.csv, history)
            charts = write_charts(stage, losses, summary, names, renderer) if draw else []
            document = {
                "run": {
                    **_run_fields(record, status),
                    "source": source.name,
                    "status_rule": inputs.status_rule,
                },
                **summary,
                "not_drawn": {"losses": drawn.not_drawn, "other_series": drawn.not_losses},
                "anomalies": anomalies,
                "alerts": alerts,
                "skipped": problems,
            }
            write_json(stage / names.summary_json, document)
            files = {
                "loss history (CSV, every logged value)": names.csv,
                "summary statistics (JSON)": names.summary_json,
            }
            page = pages.render_html(
                run=page_fields,
                stats=summary,
                charts=charts,
                combined_chart=names.combined_png,
                not_drawn=drawn,
                files=files,
                problems=problems,
                anomalies=anomalies,
                alerts=alerts,
                charts_pending=not draw,
            )
            storage.atomic_write(stage / names.report_html, page.encode())
            csv_written.result()
            if verify is not None:
                verify()
            _swap_into_place(run_fd, stage, final_dir)
        except BaseException as exc:
            storage.remove_tree_at(stage.name, run_fd)
            if isinstance(exc, OSError) and not isinstance(exc, LossReportError):
                raise RunDirectoryError(  # a full disk, a quota: the folder it could not fill
                    final_dir,
                    f"the new report could not be written ({exc.strerror or exc}); the one "
                    "before, if any, is left as it was",
                ) from exc
            raise
    return RenderResult(
        run_dir=run_dir,
        charts=[final_dir / chart.path.name for chart in charts],
        csv=final_dir / names.csv,
        summary=final_dir / names.summary_json,
        report=final_dir / names.report_html,
        stats=summary,
        run=page_fields,
        anomalies=anomalies,
        problems=problems,
        alerts=alerts,
        combined_svg=next(
            (chart.svg for chart in charts if chart.path.name == names.combined_png), None
        ),
        curves=overview_curves(losses),
        fingerprint=fingerprint,
        home=home,
    )


def _alert_label(alert: dict[str, Any]) -> str:
    """An alert in a few words for the runs index: its rule and step."""
    step = alert.get("step")
    return f"{alert['rule']} at step {step}" if step is not None else str(alert["rule"])


def overview_curves(history: LossHistory, points: int = OVERVIEW_POINTS) -> dict[str, Any]:
    """Each loss as at most `points` [step, mean value] pairs (bucket means of the finite
    values, 4 significant digits): enough to overlay many runs in the runs index, small enough
    that a thousand runs stay a light page."""
    curves = {}
    for series in history.series():
        finite = np.isfinite(series.values)
        steps, values = series.steps[finite], series.values[finite]
        if values.size == 0:
            continue
        buckets = np.array_split(np.arange(values.size), min(points, values.size))
        with np.errstate(over="ignore"):
            means = [(int(steps[b[-1]]), float(f"{values[b].mean():.4g}")) for b in buckets]
        curves[shortened(series.name, MAX_FULL_CHARS)] = [
            [step, mean] for step, mean in means if np.isfinite(mean)
        ]
    return curves


def record_or_stand_in(
    source: Source, run_dir: Path, problems: list[str], cache: Path | None = None
) -> runformat.RunRecord:
    """The run's record (read with the help of `cache`, as `Source.read_record` says), or a
    stand-in built from the directory when it is missing or malformed."""
    try:
        return source.read_record(run_dir, cache)
    except MalformedRunFileError as exc:
        logger.warning("rendering with defaults: %s", exc)
        problems.append(str(exc))
        started = utc_time(run_dir.stat().st_mtime).isoformat()
        return runformat.RunRecord(
            run_id=run_dir.name,
            model="unknown-model",
            hook="unknown-hook",
            status=runformat.UNKNOWN,
            started_at=started,
            heartbeat_at=started,
        )


def _run_fields(record: runformat.RunRecord, status: str | None) -> dict[str, Any]:
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    return {**fields, "status": status or record.status}


def _page_fields(
    record: runformat.RunRecord, status: str | None, source: Source, inputs: sources.Inputs
) -> dict[str, Any]:
    fields = _run_fields(record, status)
    fields["status_class"] = pages.status_class(fields["status"])
    fields["duration_seconds"] = _duration_seconds(record)
    fields["duration"] = _duration(fields["duration_seconds"])
    fields["source"] = source.label
    fields["source_name"] = source.name
    fields["status_rule"] = inputs.status_rule
    return fields


def _duration_seconds(record: runformat.RunRecord) -> float | None:
    if record.finished_at is None:
        return None
    try:
        seconds = (
            runformat.parse_time(record.finished_at) - runformat.parse_time(record.started_at)
        ).total_seconds()
    except ValueError:
        return None
    # A clock that went back, or a hand-edited run.json: no duration to show.
    return seconds if seconds >= 0 else None


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    hours, rest = divmod(int(seconds), 3600)
    return (
        f"{hours}h {rest // 60:02d}m {rest % 60:02d}s"
        if hours
        else f"{rest // 60}m {rest % 60:02d}s"
    )


def _make_stage(home: Path, run_fd: int) -> Path:
    graphs = home / runformat.GRAPHS_DIR
    if storage.lexists(graphs, dir_fd=run_fd) and not storage.is_real_dir(graphs, dir_fd=run_fd):
        what = storage.kind_of(graphs, dir_fd=run_fd)
        raise UnsafePathError(graphs, f"is {what}, not a folder: left untouched, no report")
    _remove_abandoned_stages(run_fd)
    try:
        return storage.make_hidden_dir(home, STAGE_PREFIXES[0], parent_fd=run_fd)
    except OSError as exc:
        raise RunDirectoryError(
            home, f"cannot write a report here ({exc.strerror or exc})"
        ) from exc


def _remove_abandoned_stages(run_fd: int) -> None:
    """Staging folders of a render that was killed: safe to remove, as we hold the lock.
    (rmtree works through directory descriptors and never follows a link inside.)"""
    with os.scandir(run_fd) as entries:
        abandoned = [
            entry.name
            for entry in entries
            if entry.name.startswith(STAGE_PREFIXES) and entry.is_dir(follow_symlinks=False)
        ]
    for name in abandoned:
        storage.remove_tree_at(name, run_fd)


def _swap_into_place(run_fd: int, stage: Path, final_dir: Path) -> None:
    """Replace `final_dir` by `stage`, both in the folder `run_fd` holds. What is there that
    lossreport did not make is kept: anything but a regular file named as a report's
    (`outputs.REPORT_FILE`), and any folder, link or FIFO where this report puts a file.

    Every folder is opened without following a link and every move is relative to those
    descriptors: a `loss_graphs` (or the run) swapped for a link meanwhile is refused or moves
    nothing out of the link's target.
    """
    with ExitStack() as opened:
        stage_fd = opened.enter_context(storage.opened_dir(stage, dir_fd=run_fd))
        try:
            final_fd = opened.enter_context(storage.opened_dir(final_dir, dir_fd=run_fd))
        except FileNotFoundError:
            storage.move_at(stage.name, run_fd, run_fd, final_dir.name)
            return
        with os.scandir(final_fd) as entries:
            found = [(entry.name, entry.is_file(follow_symlinks=False)) for entry in entries]
        carried: list[str] = []
        try:
            for name, is_file in found:
                if storage.lexists(stage / name, dir_fd=stage_fd):
                    if is_file:
                        continue  # replaced by this render's
                    # A folder, link or FIFO of someone else's where a report file belongs
                    storage.remove_at(name, stage_fd)
                    logger.warning(
                        "%s: kept; the report has no %s", final_dir / name, name,
                        extra={"event": "report_file_kept_out"},
                    )  # fmt: skip
                elif is_file and REPORT_FILE.fullmatch(name):
                    continue  # an earlier render's: this one's replace it
                storage.move_at(name, final_fd, stage_fd)  # someone else's: carried over
                carried.append(name)
            # Renamed, not moved into a new folder: a watcher (the daemon's inotify) that
            # walks a folder it sees created would find the old report already in it, a
            # folder it watches under another name (watchdog then warns "Callback with id ...
            # already exists"). The name is random and ours (abandoned ones were removed
            # under this lock): a rename replaces at most an empty folder of that name.
            retired = f"{STAGE_PREFIXES[1]}{secrets.token_hex(8)}"
            storage.move_at(final_dir.name, run_fd, run_fd, retired)
            try:
                storage.move_at(stage.name, run_fd, run_fd, final_dir.name)
            except BaseException:
                storage.move_at(retired, run_fd, run_fd, final_dir.name)
                raise
        except BaseException as exc:  # the stage is removed: what was carried in goes back
            for name in carried:
                storage.move_at(name, stage_fd, final_fd)
            if isinstance(exc, OSError):
                raise RunDirectoryError(
                    final_dir, f"not replaced by the new report, left as it was ({exc})"
                ) from exc
            raise
    storage.remove_tree_at(retired, run_fd)
