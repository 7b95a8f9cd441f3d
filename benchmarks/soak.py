"""The reliability soak: many trainers, a daemon, and a chaos loop; then prove nothing was lost.

    python benchmarks/soak.py                 # 50 trainers, a few minutes
    python benchmarks/soak.py --quick         # the fast part, run by the tests in CI

While trainer processes (mixed architectures, some with a loss that appears late, some resumed
from a checkpoint so steps repeat) write into one runs directory and `lossreport watch` runs,
a chaos loop SIGKILLs trainers, SIGKILLs and restarts the daemon, and truncates shards or
garbles run.json of finished runs. At the end it checks every run against what its trainer
logged and knew flushed, prints a table of figures, and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from daemon_process import Daemon
from soak_trainer import LATE_LOSS, LOSSES, losses_at

from lossreport import rundir
from lossreport.runstate import read_marker, read_state

HERE = Path(__file__).resolve().parent
FLUSH_EVERY = 200
CONCURRENT_TRAINERS = 12  # a cluster's worth at a time, on 2 cores
STEP_DELAY = "0.002"  # a training step's compute, so the chaos can strike mid-run
MAX_DAEMON_MAIN_MB = 250.0
DAEMON_ARGS = ("--stale-after", "3s", "--rescan-every", "30s")
FINAL_STATUSES = ("completed", "failed", "stalled", "unknown")  # unknown: a garbled run.json


@dataclass
class Trainer:
    run_id: str
    architecture: str
    steps: int
    late_from: int | None
    resume_at: int | None  # phase 2 starts again from this checkpoint step
    record: Path
    process: subprocess.Popen[bytes] | None = None
    phase: int = 0
    phase_two_from: int = 0  # where the second phase's lines start in the record
    killed: bool = False
    finished: bool = False
    kill_at: int | None = None  # SIGKILL once this step is logged


@dataclass
class Damage:
    kind: str  # "truncated shard" or "garbled run.json"
    file: Path
    lost_steps: set[int] = field(default_factory=set)


@dataclass
class Figures:
    runs: int = 0
    steps_logged: int = 0
    values_logged: int = 0
    values_checked: int = 0
    values_lost: int = 0
    values_unflushed_at_kill: int = 0
    trainer_kills: int = 0
    daemon_kills: int = 0
    corrupt_inputs: int = 0
    corrupt_handled: int = 0
    reports_complete: int = 0
    peak_daemon_mb: float = 0.0
    daemon_main_mb: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--trainer-kills", type=int, default=8)
    parser.add_argument("--daemon-kills", type=int, default=3)
    parser.add_argument("--corruptions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 trainers of 800 steps: ~1 min")
    parser.add_argument("--keep", action="store_true", help="keep the runs directory")
    args = parser.parse_args()
    if args.quick:
        args.trainers, args.steps = 8, 800
        args.trainer_kills, args.daemon_kills, args.corruptions = 2, 1, 2
    workdir = Path(tempfile.mkdtemp(prefix="lossreport-soak-"))
    figures = soak(workdir, args)
    print_figures(figures, workdir)
    return 1 if figures.failures else 0


def soak(workdir: Path, args: argparse.Namespace) -> Figures:
    rng = random.Random(args.seed)
    runs_dir, records = workdir / "runs", workdir / "records"
    runs_dir.mkdir()
    records.mkdir()
    trainers = [_plan(i, args.steps, rng, records) for i in range(args.trainers)]
    figures = Figures(runs=len(trainers))
    daemon = Daemon(runs_dir, *DAEMON_ARGS)
    daemon.wait_for("watching")
    damages: dict[str, Damage] = {}
    # The chaos is drawn up front (from --seed) so every soak does all of it.
    for victim in rng.sample(trainers, min(args.trainer_kills, len(trainers))):
        low = (victim.resume_at or 0) + 20
        victim.kill_at = rng.randint(max(low, victim.steps // 4), victim.steps - 20)
    intact = [t for t in trainers if t.kill_at is None and t.resume_at is None]
    to_damage = {t.run_id for t in rng.sample(intact, min(args.corruptions, len(intact)))}
    daemon_kill_points = [
        len(trainers) * (k + 1) // (args.daemon_kills + 1) for k in range(args.daemon_kills)
    ]
    pending = list(trainers)
    rng.shuffle(pending)
    started = 0
    while pending or any(t.process is not None and t.process.poll() is None for t in trainers):
        running = [t for t in trainers if t.process is not None and t.process.poll() is None]
        while pending and len(running) < CONCURRENT_TRAINERS:
            trainer = pending.pop()
            _start(trainer, runs_dir)
            running.append(trainer)
            started += 1
        for trainer in trainers:
            _advance(trainer, runs_dir)
            if trainer.finished and trainer.run_id in to_damage - damages.keys():
                damages[trainer.run_id] = _damage(runs_dir / trainer.run_id, rng, trainer)
        for trainer in running:
            final_phase = 1 if trainer.resume_at is not None else 0
            due = trainer.kill_at is not None and _last_logged(trainer) >= trainer.kill_at
            if due and trainer.phase == final_phase and not trainer.killed:
                trainer.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                trainer.killed = True
        if daemon_kill_points and started >= daemon_kill_points[0]:
            daemon_kill_points.pop(0)
            daemon.kill()  # the daemon and its workers, mid-render or not
            daemon = Daemon(runs_dir, *DAEMON_ARGS)
            figures.daemon_kills += 1
        figures.peak_daemon_mb = max(figures.peak_daemon_mb, daemon.rss_mb())
        time.sleep(0.05)
    for trainer in trainers:
        _advance(trainer, runs_dir)
    figures.trainer_kills = sum(t.killed for t in trainers)
    figures.corrupt_inputs = len(damages)
    if daemon.process.poll() is not None:
        figures.failures.append(f"the daemon died: {daemon.log.read_text()[-1500:]}")
        daemon = Daemon(runs_dir, *DAEMON_ARGS)
    _wait_all_rendered(runs_dir, trainers, daemon, figures)
    figures.peak_daemon_mb = max(figures.peak_daemon_mb, daemon.rss_mb())
    figures.daemon_main_mb = daemon.rss_mb(workers=False)
    if figures.daemon_main_mb > MAX_DAEMON_MAIN_MB:  # the main process never draws a chart
        figures.failures.append(f"the daemon's main process holds {figures.daemon_main_mb:.0f} MB")
    daemon.stop()
    for trainer in trainers:
        _check_run(runs_dir / trainer.run_id, trainer, damages.get(trainer.run_id), figures)
    return figures


def _plan(index: int, steps: int, rng: random.Random, records: Path) -> Trainer:
    architecture = list(LOSSES)[index % len(LOSSES)]
    late_from = steps // 3 if index % 4 == 1 else None
    resume_at = steps // 2 if index % 5 == 2 else None
    run_id = f"soak-{index:03d}-{architecture}"
    return Trainer(run_id, architecture, steps, late_from, resume_at, records / f"{run_id}.txt")


def _start(trainer: Trainer, runs_dir: Path) -> None:
    if trainer.resume_at is None:
        start, steps = 0, trainer.steps
    elif trainer.phase == 0:  # phase 1 runs past the checkpoint it will be resumed from
        start, steps = 0, trainer.resume_at + trainer.steps // 4
    else:
        start, steps = trainer.resume_at, trainer.steps - trainer.resume_at
    command = [sys.executable, str(HERE / "soak_trainer.py"), str(runs_dir), trainer.run_id]
    command += [str(trainer.record), "--architecture", trainer.architecture]
    command += ["--steps", str(steps), "--start", str(start), "--phase", str(trainer.phase)]
    command += ["--flush-every", str(FLUSH_EVERY), "--step-delay", STEP_DELAY]
    if trainer.late_from is not None:
        command += ["--late-loss-from", str(trainer.late_from)]
    trainer.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)


def _advance(trainer: Trainer, runs_dir: Path) -> None:
    """A resumed trainer's first phase ends normally: start its second from the checkpoint."""
    if trainer.process is None or trainer.process.poll() is None or trainer.finished:
        return
    if trainer.resume_at is not None and trainer.phase == 0 and not trainer.killed:
        trainer.phase = 1
        trainer.phase_two_from = len(trainer.record.read_text().split())
        _start(trainer, runs_dir)
        return
    trainer.finished = True


def _last_logged(trainer: Trainer) -> int:
    """The last step the trainer's record says it logged (from the tail of the record)."""
    try:
        with trainer.record.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - 64))
            lines = handle.read().split(b"\n")[1:-1]  # whole lines only
    except OSError:
        return -1
    steps = [int(line[2:]) for line in lines if line.startswith(b"L ")]
    return max(steps, default=-1)


def _damage(run_dir: Path, rng: random.Random, trainer: Trainer) -> Damage:
    shards = sorted((run_dir / rundir.LOSSES_DIR).glob("part-*.parquet"))
    if trainer.resume_at is None and shards and rng.random() < 0.5:
        shard = rng.choice(shards)
        lost = set(pq.read_table(shard, columns=["step"]).column("step").to_pylist())
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
        return Damage("truncated shard", shard, lost)
    run_file = run_dir / rundir.RUN_FILE
    run_file.write_text('{"format": "lossreport.run/1", "status": ')
    return Damage("garbled run.json", run_file)


def _wait_all_rendered(
    runs_dir: Path, trainers: list[Trainer], daemon: Daemon, figures: Figures
) -> None:
    deadline = time.monotonic() + 300
    waiting = {t.run_id for t in trainers}
    while waiting and time.monotonic() < deadline:
        for run_id in list(waiting):
            marker = read_marker(runs_dir / run_id)
            state = read_state(runs_dir / run_id)
            if (
                marker is not None
                and marker.fingerprint == state.fingerprint
                and marker.status in FINAL_STATUSES
            ):
                waiting.discard(run_id)
        figures.peak_daemon_mb = max(figures.peak_daemon_mb, daemon.rss_mb())
        time.sleep(0.25)
    for run_id in sorted(waiting):
        figures.failures.append(f"{run_id}: no final report after 300 s")


def _record(trainer: Trainer) -> tuple[list[int], int, int]:
    """(every step logged, in all phases; the last step logged and the last known flushed by
    the final process)."""
    words = trainer.record.read_text().split()
    entries = [(kind, int(step)) for kind, step in zip(words[::2], words[1::2], strict=True)]
    final = entries[trainer.phase_two_from // 2 :]
    logged = max((step for kind, step in final if kind == "L"), default=-1)
    flushed = max((step for kind, step in final if kind == "F"), default=-1)
    return [step for kind, step in entries if kind == "L"], logged, flushed


def _must_hold(trainer: Trainer, completed: bool) -> dict[int, int]:
    """Each step that must be on disk, with the phase whose value it must hold."""
    _, logged, flushed = _record(trainer)
    last = logged if completed else flushed  # a SIGKILL loses what was not flushed, by design
    if trainer.resume_at is None:
        return dict.fromkeys(range(last + 1), 0)
    phase_one_end = trainer.resume_at + trainer.steps // 4 - 1  # phase one always completes
    steps = dict.fromkeys(range(phase_one_end + 1), 0)
    steps.update(dict.fromkeys(range(trainer.resume_at, last + 1), 1))  # the later write wins
    return steps


def _check_run(run_dir: Path, trainer: Trainer, damage: Damage | None, figures: Figures) -> None:
    graphs = run_dir / rundir.GRAPHS_DIR
    pages = list(graphs.glob("loss_report_*.html"))
    csvs = list(graphs.glob("loss_history_*.csv"))
    summaries = list(graphs.glob("loss_summary_*.json"))
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".loss_graphs.")]
    if len(pages) != 1 or len(csvs) != 1 or len(summaries) != 1 or leftovers:
        figures.failures.append(f"{run_dir.name}: report incomplete ({pages}, {leftovers})")
        return
    if not pages[0].read_text().rstrip().endswith("</html>"):
        figures.failures.append(f"{run_dir.name}: half-written report page")
        return
    summary = json.loads(summaries[0].read_text())
    charts = list(graphs.glob("loss_curves_*.png"))
    if len(charts) != len(summary["losses"]) + 1:  # one per loss, and the combined one
        figures.failures.append(f"{run_dir.name}: {len(charts)} charts for {summary['losses']}")
        return
    with csvs[0].open() as handle:
        rows = {int(row["step"]): row for row in csv.DictReader(handle)}
    figures.reports_complete += 1
    if damage is not None:
        if any(damage.file.name in problem for problem in summary["skipped"]):
            figures.corrupt_handled += 1
        else:
            figures.failures.append(f"{run_dir.name}: {damage.kind} not named in the report")
    steps_logged, logged, flushed = _record(trainer)
    completed = trainer.process is not None and trainer.process.returncode == 0
    figures.steps_logged += len(steps_logged)
    figures.values_logged += sum(len(_expected(trainer, step, 0)) for step in steps_logged)
    if trainer.killed:
        unflushed = [step for step in range(flushed + 1, logged + 1) if step not in rows]
        figures.values_unflushed_at_kill += sum(len(_expected(trainer, s, 0)) for s in unflushed)
    for step, phase in _must_hold(trainer, completed).items():
        if damage is not None and step in damage.lost_steps:
            continue
        row = rows.get(step)
        for name, number in _expected(trainer, step, phase).items():
            figures.values_checked += 1
            if row is None or row.get(name) in (None, "") or float(row[name]) != number:
                figures.values_lost += 1
                if len(figures.failures) < 20:
                    got = None if row is None else row.get(name)
                    figures.failures.append(
                        f"{run_dir.name}: step {step} {name}: {got!r}, logged {number!r}"
                    )
    if trainer.late_from is not None and LATE_LOSS not in summary["losses"]:
        figures.failures.append(f"{run_dir.name}: the late loss column is missing")
    finished_at = summary["run"].get("finished_at")
    if completed and finished_at and damage is None:
        rendered = pages[0].stat().st_mtime
        figures.latencies.append(rendered - datetime.fromisoformat(finished_at).timestamp())


def _expected(trainer: Trainer, step: int, phase: int) -> dict[str, float]:
    return losses_at(trainer.run_id, trainer.architecture, step, phase, trainer.late_from)


def print_figures(figures: Figures, workdir: Path) -> None:
    latencies = sorted(figures.latencies)
    median = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else median
    rows = [
        ("runs", figures.runs),
        ("steps logged", figures.steps_logged),
        ("values logged", figures.values_logged),
        ("values checked against the trainers' records", figures.values_checked),
        ("values lost (must be 0)", figures.values_lost),
        ("values unflushed at SIGKILL (lost by design, counted)", figures.values_unflushed_at_kill),
        ("trainer SIGKILLs survived", figures.trainer_kills),
        ("daemon SIGKILLs + restarts survived", figures.daemon_kills),
        ("corrupt inputs tried", figures.corrupt_inputs),
        ("corrupt inputs named in their report", figures.corrupt_handled),
        ("reports complete", f"{figures.reports_complete} of {figures.runs}"),
        ("peak daemon memory (daemon + workers)", f"{figures.peak_daemon_mb:.0f} MB"),
        ("daemon main process at the end", f"{figures.daemon_main_mb:.0f} MB"),
        ("completion to report, median", f"{median:.2f} s"),
        ("completion to report, p99", f"{p99:.2f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"lossreport soak ({workdir})")
    for label, number in rows:
        print(f"  {label:<{width}}  {number}")
    if figures.failures:
        print(f"FAILED: {len(figures.failures)} problems")
        for failure in figures.failures[:20]:
            print(f"  - {failure}")
    else:
        print("OK: nothing lost, every report whole")


if __name__ == "__main__":
    sys.exit(main())
