"""The reliability soak: many trainers, a daemon, and a chaos loop; then prove nothing was lost.

    python benchmarks/soak.py                 # 50 trainers, a few minutes
    python benchmarks/soak.py --quick         # the fast part, run by the tests in CI
    python benchmarks/soak.py --store         # the runs on an S3 store (moto, on loopback)

While trainer processes (mixed architectures, some with a loss that appears late, some resumed
from a checkpoint so steps repeat, some pairs logging into one run id at once with disjoint
steps, as a job started twice would) write into one runs directory and `lossreport watch` runs,
a chaos loop SIGKILLs trainers, SIGKILLs and restarts the daemon, truncates shards or garbles
run.json of finished runs, and deletes finished runs at once or while the daemon renders them.
At the end it checks every run left against what its trainers logged and knew flushed, that
nothing of a deleted run came back, and that the idle daemon does not spin; it prints a table
of figures and exits 1 if any check failed.

With --store the trainers write to `s3://soak/runs` on moto's S3 server on loopback, reached
through a proxy, and the daemon watches that URL; the chaos there is the store failing (503s,
refused connections, requests never answered) instead of corrupt files and deleted folders,
and the reports checked are the ones the daemon wrote back to the bucket.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from daemon_process import CLOCK_TICKS, Daemon
from soak_hostile import Hostile, plant
from soak_trainer import LATE_LOSS, LOSSES, losses_at

from lossreport import runformat
from lossreport.catalog import Catalog
from lossreport.daemon.runstate import read_state
from lossreport.runformat import CATALOG_DIR, LEASE_OWNER_FILE, STAGE_PREFIXES, read_marker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's S3 server
from tests.support.s3 import FaultProxy, MotoServer, boto, client_env, keys

HERE = Path(__file__).resolve().parent
FLUSH_EVERY = 200
CONCURRENT_TRAINERS = 12  # a cluster's worth at a time, on 2 cores
STEP_DELAY = "0.002"  # a training step's compute, so the chaos can strike mid-run
MAX_DAEMON_MAIN_MB = 250.0
MAX_WORKER_MB = 1024.0  # a render worker or chart helper, hostile runs included
DAEMON_ARGS = ("--stale-after", "3s", "--rescan-every", "30s")
FINAL_STATUSES = ("completed", "failed", "stalled", "unknown")  # unknown: a garbled run.json
RERENDERS_TO_CATCH = 3  # a render missed by the deleter is asked for again this often
IDLE_SECONDS = 5.0
MAX_IDLE_CPU = 0.10  # of one core: an idle daemon that wakes in a loop is a defect
# Its main loop wakes about 3 times a second when idle; the 10 ms retry loop of a vanished run
# woke it about 100 times (at 3% of a core with two such runs: too little for the CPU check).
MAX_IDLE_WAKEUPS = 20.0
STORE_OUTAGE_SECONDS = 2.0  # each of the store's failures lasts this long
STORE_OUTAGE_EVERY = 6.0  # and one starts this long after the last ended
BUCKET = "soak"


@dataclass
class Place:
    """Where the runs live: a local folder, or a bucket (the daemon then reads a mirror)."""

    target: str  # what trainers and the daemon are given: a folder or an s3:// URL
    local: Path  # the daemon's runs folder on disk: the runs folder itself, or its mirror
    logs: Path
    env: dict[str, str] | None = None
    daemon_args: tuple[str, ...] = ()
    proxy: FaultProxy | None = None
    endpoint: str = ""  # the server itself, for the checks (not through the proxy)

    def daemon(self) -> Daemon:
        args = (*DAEMON_ARGS, *self.daemon_args)
        return Daemon(self.target, *args, log_dir=self.logs, env=self.env)


class Outages:
    """The store's chaos: every STORE_OUTAGE_EVERY seconds, a failure for a while, in turn
    503 Slow Down, connections refused (a restart, to its clients) and requests never answered."""

    MODES = ("slowdown", "down", "hang")

    def __init__(self, proxy: FaultProxy | None) -> None:
        self.proxy = proxy
        self.count = 0
        self._next = time.monotonic() + STORE_OUTAGE_EVERY
        self._ends: float | None = None

    def tick(self) -> None:
        if self.proxy is None:
            return
        now = time.monotonic()
        if self._ends is not None and now >= self._ends:
            self.proxy.set_mode("pass")
            self._ends, self._next = None, now + STORE_OUTAGE_EVERY
        elif self._ends is None and now >= self._next:
            self.proxy.set_mode(self.MODES[self.count % len(self.MODES)])
            self.count += 1
            self._ends = now + STORE_OUTAGE_SECONDS

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.set_mode("pass")


@dataclass(eq=False)
class Trainer:
    run_id: str
    architecture: str
    steps: int  # how many steps it logs (a resumed trainer: steps 0 to steps - 1, over phases)
    late_from: int | None
    resume_at: int | None  # phase 2 starts again from this checkpoint step
    record: Path
    first_step: int = 0  # it logs first_step, first_step + stride, ...
    stride: int = 1
    shared: bool = False  # another trainer logs into the same run id at the same time
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
class Deletion:
    """A finished run the chaos deletes: at once, or once a render of it is under way."""

    run_dir: Path
    mid_render: bool
    armed_at: float | None = None  # when its trainer finished
    rerenders: int = 0  # renders asked for again (run.json rewritten) after one was missed
    next_look: float = 0.0
    how: str | None = None  # "mid-render", "at finish" or "after render", once deleted


@dataclass
class Figures:
    runs: int = 0
    shared_writers: int = 0
    shared_runs: int = 0
    shared_kills: int = 0
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
    deletions_planned_mid_render: int = 0
    deleted: dict[str, int] = field(default_factory=dict)  # how -> runs
    deleted_left_behind: int = 0
    store_outages: int | None = None  # with --store: the store's failures survived
    idle_cpu: float = float("nan")  # fraction of one core: the daemon and its workers
    idle_cpu_main: float = float("nan")  # its main process alone
    idle_wakeups: float = float("nan")  # per second, of the main thread (the main loop)
    peak_daemon_mb: float = 0.0
    peak_main_mb: float = 0.0  # the daemon's main process, over the whole soak
    worker_peaks: dict[int, float] = field(default_factory=dict)  # pid -> peak MB
    hostile: int = 0
    hostile_reported: int = 0
    daemon_main_mb: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument(
        "--shared-pairs", type=int, default=4, help="pairs of trainers logging into one run id"
    )
    parser.add_argument("--trainer-kills", type=int, default=8)
    parser.add_argument("--daemon-kills", type=int, default=3)
    parser.add_argument("--corruptions", type=int, default=6)
    parser.add_argument(
        "--deletions", type=int, default=6, help="finished runs deleted, half of them mid-render"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 trainers of 800 steps: ~1 min")
    parser.add_argument(
        "--store", action="store_true", help="the runs on an S3 server on loopback (moto)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the runs directory (it is kept on failure)"
    )
    args = parser.parse_args()
    if args.quick:
        args.trainers, args.steps, args.shared_pairs = 10, 800, 2
        args.trainer_kills, args.daemon_kills, args.corruptions, args.deletions = 2, 1, 2, 2
    if args.store:  # the store's chaos replaces damaged files and deleted folders
        args.corruptions, args.deletions = 0, 0
    workdir = Path(tempfile.mkdtemp(prefix="lossreport-soak-"))
    with ExitStack() as stack:
        if args.store:
            place = stack.enter_context(_store_place(workdir))
        else:
            (workdir / "runs").mkdir()
            place = Place(str(workdir / "runs"), workdir / "runs", workdir)
        figures = soak(workdir, args, place)
    print_figures(figures, workdir)
    if figures.failures or args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir)
    return 1 if figures.failures else 0


@contextmanager
def _store_place(workdir: Path) -> Iterator[Place]:
    """moto's S3 server on loopback, behind a proxy that can fail; a bucket for the runs."""
    server = MotoServer(workdir / "moto.log")
    proxy = FaultProxy(server.port)
    try:
        boto(server.url).create_bucket(Bucket=BUCKET)
        yield Place(
            f"s3://{BUCKET}/runs",
            workdir / "mirror",
            workdir,
            env=client_env(proxy.url, LOSSREPORT_S3_TIMEOUT="1"),
            daemon_args=("--mirror", str(workdir / "mirror"), "--poll-interval", "0.5"),
            proxy=proxy,
            endpoint=server.url,
        )
    finally:
        proxy.close()
        server.stop()


def soak(workdir: Path, args: argparse.Namespace, place: Place) -> Figures:
    rng = random.Random(args.seed)
    runs_dir, records = place.local, workdir / "records"
    records.mkdir()
    groups = _plan(args, records)  # one group per run id: its trainer, or two sharing it
    trainers = [trainer for group in groups for trainer in group]
    shared = [trainer for trainer in trainers if trainer.shared]
    figures = Figures(
        runs=len(groups),
        shared_writers=len(shared),
        shared_runs=len({trainer.run_id for trainer in shared}),
    )
    daemon = place.daemon()
    daemon.wait_for("watching")
    hostiles = plant(runs_dir) if place.proxy is None else []  # a store's chaos is its own
    figures.hostile = len(hostiles)
    outages = Outages(place.proxy)
    damages: dict[str, Damage] = {}
    # The chaos is drawn up front (from --seed) so every soak does all of it.
    _plan_kills(trainers, args.trainer_kills, rng)
    intact = [t for t in trainers if t.kill_at is None and t.resume_at is None and not t.shared]
    to_damage = {t.run_id for t in rng.sample(intact, min(args.corruptions, len(intact)))}
    spare = [trainer for trainer in intact if trainer.run_id not in to_damage]
    deletions = {
        trainer.run_id: Deletion(runs_dir / trainer.run_id, mid_render=number % 2 == 0)
        for number, trainer in enumerate(rng.sample(spare, min(args.deletions, len(spare))))
    }
    figures.deletions_planned_mid_render = sum(d.mid_render for d in deletions.values())
    deleter = Deleter(deletions)
    deleter.thread.start()
    daemon_kill_points = [
        len(trainers) * (k + 1) // (args.daemon_kills + 1) for k in range(args.daemon_kills)
    ]
    pending = list(groups)
    rng.shuffle(pending)
    started = 0
    while not all(trainer.finished for trainer in trainers):
        running = [t for t in trainers if t.process is not None and t.process.poll() is None]
        # The writers of one run id start together, as a job launched twice does.
        while pending and (not running or len(running) + len(pending[-1]) <= CONCURRENT_TRAINERS):
            group = pending.pop()
            for trainer in group:
                _start(trainer, place)
            running += group
            started += len(group)
        outages.tick()
        for trainer in trainers:
            _advance(trainer, place)
            if not trainer.finished:
                continue
            if trainer.run_id in to_damage - damages.keys():
                damages[trainer.run_id] = _damage(runs_dir / trainer.run_id, rng, trainer)
            if trainer.run_id in deletions:
                deleter.arm(trainer.run_id)
        for trainer in running:
            final_phase = 1 if trainer.resume_at is not None else 0
            due = trainer.kill_at is not None and _last_logged(trainer) >= trainer.kill_at
            if due and trainer.phase == final_phase and not trainer.killed:
                trainer.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                trainer.killed = True
        if daemon_kill_points and started >= daemon_kill_points[0]:
            daemon_kill_points.pop(0)
            daemon.kill()  # the daemon and its workers, mid-render or not
            daemon = place.daemon()
            figures.daemon_kills += 1
        _track_memory(daemon, figures)
        time.sleep(0.05)
    outages.end()
    if place.proxy is not None:
        figures.store_outages = outages.count
    figures.trainer_kills = sum(trainer.killed for trainer in trainers)
    figures.shared_kills = sum(trainer.killed for trainer in shared)
    figures.corrupt_inputs = len(damages)
    if daemon.process.poll() is not None:
        figures.failures.append(f"the daemon died: {daemon.log.read_text()[-1500:]}")
        daemon = place.daemon()
    kept = [group for group in groups if group[0].run_id not in deletions]
    waited = [group[0].run_id for group in kept] + [hostile.run_dir.name for hostile in hostiles]
    _wait_all_rendered(runs_dir, waited, daemon, figures)
    deleter.thread.join(timeout=300)
    if deleter.thread.is_alive():
        deleter.stop.set()
        undone = [run_id for run_id, d in deletions.items() if d.how is None]
        figures.failures.append(f"runs not deleted after 300 s: {undone}")
    figures.failures += deleter.failures
    for deletion in deletions.values():
        if deletion.how is not None:
            figures.deleted[deletion.how] = figures.deleted.get(deletion.how, 0) + 1
    _track_memory(daemon, figures)
    figures.daemon_main_mb = daemon.rss_mb(workers=False)
    if figures.daemon_main_mb > MAX_DAEMON_MAIN_MB:  # the main process never draws a chart
        figures.failures.append(f"the daemon's main process holds {figures.daemon_main_mb:.0f} MB")
    _check_idle(daemon, deletions, figures)
    daemon.stop()
    if daemon.process.returncode != 0:
        figures.failures.append(f"the daemon exited {daemon.process.returncode} on SIGTERM")
    kept_ids = {group[0].run_id for group in kept} | {hostile.run_dir.name for hostile in hostiles}
    _check_deleted(runs_dir, deletions, kept_ids, figures)
    reports = runs_dir if place.proxy is None else _download(place, workdir / "bucket")
    for group in kept:
        run_id = group[0].run_id
        _check_run(reports / run_id, group, damages.get(run_id), figures)
    for hostile in hostiles:
        _check_hostile(hostile, figures)
    worst = max(figures.worker_peaks.values(), default=0.0)
    if worst > MAX_WORKER_MB:
        figures.failures.append(f"a render worker took {worst:.0f} MB (at most {MAX_WORKER_MB})")
    return figures


def _track_memory(daemon: Daemon, figures: Figures) -> None:
    figures.peak_daemon_mb = max(figures.peak_daemon_mb, daemon.rss_mb())
    figures.peak_main_mb = max(figures.peak_main_mb, daemon.main_peak_mb())
    for pid, peak in daemon.peaks_mb().items():
        figures.worker_peaks[pid] = max(figures.worker_peaks.get(pid, 0.0), peak)


def _check_hostile(hostile: Hostile, figures: Figures) -> None:
    try:
        problem = hostile.check(hostile.run_dir)
    except (OSError, ValueError, KeyError) as exc:  # a report missing or not what it says
        problem = f"{type(exc).__name__}: {exc}"[:300]
    if problem is None:
        figures.hostile_reported += 1
    else:
        figures.failures.append(f"{hostile.kind}: {problem}")


def _download(place: Place, folder: Path) -> Path:
    """Every object of the runs on the store, into `folder`, each with its time of writing:
    the reports checked are the ones on the store, not the daemon's mirror."""
    client = boto(place.endpoint)
    for key in keys(client, BUCKET, "runs/"):
        found = client.get_object(Bucket=BUCKET, Key=key)
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(found["Body"].read())
        written = found["LastModified"].timestamp()
        os.utime(path, (written, written))
    return folder / "runs"


def _plan(args: argparse.Namespace, records: Path) -> list[list[Trainer]]:
    """Trainers of one run id each, then pairs sharing one: even and odd steps, or the first
    `steps` steps and the next `steps`, logged at the same time."""
    pairs = min(args.shared_pairs, args.trainers // 2)
    solo = args.trainers - 2 * pairs
    groups = []
    for index in range(solo):
        architecture = list(LOSSES)[index % len(LOSSES)]
        late_from = args.steps // 3 if index % 4 == 1 else None
        resume_at = args.steps // 2 if index % 5 == 2 else None
        run_id = f"soak-{index:03d}-{architecture}"
        record = records / f"{run_id}.txt"
        groups.append([Trainer(run_id, architecture, args.steps, late_from, resume_at, record)])
    for index in range(solo, solo + pairs):
        architecture = list(LOSSES)[index % len(LOSSES)]
        late_from = args.steps // 3 if index % 3 == 1 else None
        run_id = f"soak-{index:03d}-{architecture}-shared"
        interleaved = index % 2 == 0
        pair = []
        for writer in (0, 1):
            first, stride = (writer, 2) if interleaved else (writer * args.steps, 1)
            record = records / f"{run_id}.writer{writer}.txt"
            pair.append(
                Trainer(
                    run_id,
                    architecture,
                    args.steps,
                    late_from,
                    None,
                    record,
                    first_step=first,
                    stride=stride,
                    shared=True,
                )
            )
        groups.append(pair)
    return groups


def _plan_kills(trainers: list[Trainer], kills: int, rng: random.Random) -> None:
    """Choose `kills` trainers to SIGKILL, and the step after which each dies: one writer
    sharing its run id (when any does), the others among the trainers of a run of their own."""
    shared = [trainer for trainer in trainers if trainer.shared]
    victims = rng.sample(shared, 1) if shared and kills > 0 else []
    others = [trainer for trainer in trainers if not trainer.shared]
    victims += rng.sample(others, min(kills - len(victims), len(others)))
    for victim in victims:
        low = (victim.resume_at or 0) + 20
        nth = rng.randint(max(low, victim.steps // 4), victim.steps - 20)
        victim.kill_at = victim.first_step + victim.stride * nth


def _start(trainer: Trainer, place: Place) -> None:
    if trainer.resume_at is None:
        start, steps = trainer.first_step, trainer.steps
    elif trainer.phase == 0:  # phase 1 runs past the checkpoint it will be resumed from
        start, steps = 0, trainer.resume_at + trainer.steps // 4
    else:
        start, steps = trainer.resume_at, trainer.steps - trainer.resume_at
    command = [sys.executable, str(HERE / "soak_trainer.py"), place.target, trainer.run_id]
    command += [str(trainer.record), "--architecture", trainer.architecture]
    command += ["--steps", str(steps), "--start", str(start), "--stride", str(trainer.stride)]
    command += ["--phase", str(trainer.phase)]
    command += ["--flush-every", str(FLUSH_EVERY), "--step-delay", STEP_DELAY]
    if trainer.late_from is not None:
        command += ["--late-loss-from", str(trainer.late_from)]
    trainer.process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=place.env)


def _advance(trainer: Trainer, place: Place) -> None:
    """A resumed trainer's first phase ends normally: start its second from the checkpoint."""
    if trainer.process is None or trainer.process.poll() is None or trainer.finished:
        return
    if trainer.resume_at is not None and trainer.phase == 0 and not trainer.killed:
        trainer.phase = 1
        trainer.phase_two_from = len(trainer.record.read_text().split())
        _start(trainer, place)
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
    shards = sorted((run_dir / runformat.LOSSES_DIR).glob("part-*.parquet"))
    if trainer.resume_at is None and shards and rng.random() < 0.5:
        shard = rng.choice(shards)
        lost = set(pq.read_table(shard, columns=["step"]).column("step").to_pylist())
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
        return Damage("truncated shard", shard, lost)
    run_file = run_dir / runformat.RUN_FILE
    run_file.write_text('{"format": "lossreport.run/1", "status": ')
    return Damage("garbled run.json", run_file)


class Deleter:
    """Deletes finished runs as someone tidying a shared runs tree would, with `rm -rf`: at
    once when the trainer ends, or as soon as the daemon is seen rendering the run (a staging
    folder beside loss_graphs/). A render it missed is asked for again by rewriting run.json."""

    def __init__(self, deletions: dict[str, Deletion]) -> None:
        self.deletions = deletions
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="soak-deleter", daemon=True)

    def arm(self, run_id: str) -> None:
        with self._lock:
            deletion = self.deletions[run_id]
            if deletion.armed_at is None:
                deletion.armed_at = time.monotonic()

    def _run(self) -> None:
        while not self.stop.is_set() and any(d.how is None for d in self.deletions.values()):
            with self._lock:
                armed = [
                    d for d in self.deletions.values() if d.armed_at is not None and d.how is None
                ]
            for deletion in armed:
                self._look(deletion)
            # A render's staging folder lives for a good part of a second: look often then.
            time.sleep(0.005 if armed else 0.05)

    def _look(self, deletion: Deletion) -> None:
        now = time.monotonic()
        if not deletion.mid_render:
            self._rm_rf(deletion, "at finish")
        elif _render_under_way(deletion.run_dir):
            self._rm_rf(deletion, "mid-render")
        elif now >= deletion.next_look:
            deletion.next_look = now + 0.2
            if not _rendered(deletion.run_dir):
                return
            if deletion.rerenders < RERENDERS_TO_CATCH:
                _rewrite_run_file(deletion.run_dir)  # new inputs: the daemon renders it again
                deletion.rerenders += 1
            else:
                self._rm_rf(deletion, "after render")

    def _rm_rf(self, deletion: Deletion, how: str) -> None:
        """rm -rf, again until it is gone: a render may add to the folder while it is deleted."""
        deadline = time.monotonic() + 30
        while os.path.lexists(deletion.run_dir):
            if time.monotonic() > deadline:
                self.failures.append(f"{deletion.run_dir.name}: still there after 30 s of rm -rf")
                break
            shutil.rmtree(deletion.run_dir, ignore_errors=True)
        deletion.how = how


def _render_under_way(run_dir: Path) -> bool:
    try:
        return any(name.startswith(STAGE_PREFIXES) for name in os.listdir(run_dir))
    except OSError:
        return False


def _rendered(run_dir: Path) -> bool:
    """The daemon's last render of the run saw its current inputs, in a final status."""
    marker = read_marker(run_dir)
    return (
        marker is not None
        and marker.fingerprint == read_state(run_dir).fingerprint
        and marker.status in FINAL_STATUSES
    )


def _rewrite_run_file(run_dir: Path) -> None:
    """The same run.json, replaced as a writer replaces it (a new mtime: new inputs)."""
    run_file = run_dir / runformat.RUN_FILE
    temporary = run_dir / ".run.json.soak.tmp"
    temporary.write_bytes(run_file.read_bytes())
    os.replace(temporary, run_file)


def _wait_all_rendered(
    runs_dir: Path, run_ids: list[str], daemon: Daemon, figures: Figures
) -> None:
    deadline = time.monotonic() + 300
    waiting = set(run_ids)
    while waiting and time.monotonic() < deadline:
        waiting = {run_id for run_id in waiting if not _rendered(runs_dir / run_id)}
        _track_memory(daemon, figures)
        time.sleep(0.25)
    for run_id in sorted(waiting):
        figures.failures.append(f"{run_id}: no final report after 300 s")


def _check_idle(daemon: Daemon, deletions: dict[str, Deletion], figures: Figures) -> None:
    """With nothing left to render, the daemon must be alive, quiet, and done with the runs
    deleted under it (a vanished run retried in a loop kept a daemon at 14% of a core)."""
    log_seen = len(daemon.log.read_text())
    figures.idle_cpu, figures.idle_cpu_main, figures.idle_wakeups = _idle_cpu(daemon)
    if daemon.process.poll() is not None:
        figures.failures.append(f"the daemon died after the soak: {daemon.log.read_text()[-1500:]}")
        return
    if figures.idle_cpu > MAX_IDLE_CPU:
        figures.failures.append(
            f"the idle daemon used {figures.idle_cpu:.1%} of a core over {IDLE_SECONDS:.0f} s"
        )
    if figures.idle_wakeups > MAX_IDLE_WAKEUPS:
        figures.failures.append(
            f"the idle daemon's main loop woke {figures.idle_wakeups:.0f} times a second"
        )
    idle_log = daemon.log.read_text()[log_seen:]
    still = [run_id for run_id in deletions if f"run={run_id} " in idle_log]
    if still:
        figures.failures.append(f"the idle daemon still logs about deleted runs {still}")


def _idle_cpu(daemon: Daemon) -> tuple[float, float, float]:
    """The daemon's CPU time over IDLE_SECONDS, as fractions of one core (all its processes,
    and its main process alone), and how often its main thread woke, per second. A window in
    which its processes changed (idle workers are replaced after a minute, and the new one
    warms up), or over MAX_IDLE_CPU, is measured again, three windows at most: the render of a
    run deleted last may still be ending as the soak ends (it logs nothing), while a daemon
    that spins is over in every window."""
    main = daemon.process.pid
    for _ in range(3):
        pids = daemon.family()
        before, sleeps = _cpu_seconds(pids), _voluntary_switches(main)
        start = time.monotonic()
        time.sleep(IDLE_SECONDS)
        after, elapsed = _cpu_seconds(pids), time.monotonic() - start
        wakeups = (_voluntary_switches(main) - sleeps) / elapsed
        used = {pid: after[pid] - before[pid] for pid in after.keys() & before.keys()}
        if sorted(daemon.family()) == sorted(pids) and sum(used.values()) / elapsed <= MAX_IDLE_CPU:
            break
    return sum(used.values()) / elapsed, used.get(main, 0.0) / elapsed, wakeups


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process still there, in seconds."""
    times = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def _voluntary_switches(pid: int) -> int:
    """How often the process's main thread has gone to sleep: each wake of an idle loop."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt")), 0)


def _check_deleted(
    runs_dir: Path, deletions: dict[str, Deletion], kept: set[str], figures: Figures
) -> None:
    """Nothing of a deleted run may come back: no folder (a render finishing into a deleted
    run would make one), no row in the runs index, nothing new beside the runs."""
    index = runs_dir / "index.html"
    page = index.read_text() if index.is_file() else ""
    catalog = Catalog.open_readonly(runs_dir)
    for run_id in deletions:
        left = []
        run_dir = runs_dir / run_id
        if os.path.lexists(run_dir):
            inside = sorted(str(path.relative_to(run_dir)) for path in run_dir.rglob("*"))
            left.append(f"its folder is back, holding {inside[:8]}")
        if re.search(rf"{re.escape(run_id)}(?![\w.-])", page):
            left.append("index.html still lists it")
        if catalog is not None and catalog.rendered_at(run_id) is not None:
            left.append("the runs catalog still lists it")
        if left:
            figures.deleted_left_behind += 1
            figures.failures.append(f"{run_id} was deleted, but {'; '.join(left)}")
    if catalog is not None:
        catalog.close()
    ours = {index.name, CATALOG_DIR, LEASE_OWNER_FILE}  # the last in a store's mirror
    strays = sorted(set(os.listdir(runs_dir)) - kept - set(deletions) - ours)
    if strays:
        figures.failures.append(f"unexpected entries in the runs directory: {strays}")


def _phases(trainer: Trainer) -> list[tuple[int, list[tuple[str, int]]]]:
    """The trainer's record: each process's entries ("L" logged, "F" flushed; step), with the
    phase whose values it logged."""
    words = trainer.record.read_text().split()
    entries = [(kind, int(step)) for kind, step in zip(words[::2], words[1::2], strict=True)]
    if trainer.resume_at is None:
        return [(0, entries)]
    cut = trainer.phase_two_from // 2
    return [(0, entries[:cut]), (1, entries[cut:])]


def _logged(entries: list[tuple[str, int]]) -> list[int]:
    return [step for kind, step in entries if kind == "L"]


def _flushed(entries: list[tuple[str, int]]) -> list[int]:
    """The steps logged before the last flush that returned."""
    last = max((i for i, (kind, _) in enumerate(entries) if kind == "F"), default=0)
    return _logged(entries[:last])


def _must_hold(trainer: Trainer, completed: bool) -> dict[int, int]:
    """Each step that must be on disk, with the phase whose value it must hold."""
    phases = _phases(trainer)
    steps: dict[int, int] = {}
    for number, (phase, entries) in enumerate(phases):
        final = number == len(phases) - 1  # an earlier phase always completed
        # A SIGKILL loses what was not flushed, by design; a later phase's write wins.
        held = _flushed(entries) if final and not completed else _logged(entries)
        steps.update(dict.fromkeys(held, phase))
    return steps


def _check_run(
    run_dir: Path, writers: list[Trainer], damage: Damage | None, figures: Figures
) -> None:
    graphs = run_dir / runformat.GRAPHS_DIR
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
    for trainer in writers:
        _check_writer(run_dir.name, trainer, rows, damage, figures)
    late = any(trainer.late_from is not None for trainer in writers)
    if late and LATE_LOSS not in summary["losses"]:
        figures.failures.append(f"{run_dir.name}: the late loss column is missing")
    finished_at = summary["run"].get("finished_at")
    if all(_completed(trainer) for trainer in writers) and finished_at and damage is None:
        rendered = pages[0].stat().st_mtime
        figures.latencies.append(rendered - datetime.fromisoformat(finished_at).timestamp())


def _completed(trainer: Trainer) -> bool:
    return trainer.process is not None and trainer.process.returncode == 0


def _check_writer(
    name: str,
    trainer: Trainer,
    rows: dict[int, dict[str, str]],
    damage: Damage | None,
    figures: Figures,
) -> None:
    """Every value this trainer logged and knew flushed is in the run's CSV, exactly."""
    phases = _phases(trainer)
    steps_logged = [step for _, entries in phases for step in _logged(entries)]
    figures.steps_logged += len(steps_logged)
    figures.values_logged += sum(len(_expected(trainer, step, 0)) for step in steps_logged)
    if trainer.killed:
        _, final = phases[-1]
        unflushed = _logged(final)[len(_flushed(final)) :]
        lost = [step for step in unflushed if step not in rows]
        figures.values_unflushed_at_kill += sum(len(_expected(trainer, s, 0)) for s in lost)
    for step, phase in _must_hold(trainer, _completed(trainer)).items():
        if damage is not None and step in damage.lost_steps:
            continue
        row = rows.get(step)
        for loss, number in _expected(trainer, step, phase).items():
            figures.values_checked += 1
            if row is None or row.get(loss) in (None, "") or float(row[loss]) != number:
                figures.values_lost += 1
                if len(figures.failures) < 20:
                    got = None if row is None else row.get(loss)
                    figures.failures.append(
                        f"{name}: step {step} {loss}: {got!r}, logged {number!r}"
                    )


def _expected(trainer: Trainer, step: int, phase: int) -> dict[str, float]:
    return losses_at(trainer.run_id, trainer.architecture, step, phase, trainer.late_from)


def print_figures(figures: Figures, workdir: Path) -> None:
    latencies = sorted(figures.latencies)
    median = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else median
    deleted = sum(figures.deleted.values())
    peaks = sorted(figures.worker_peaks.values())
    mid_render = figures.deleted.get("mid-render", 0)
    rows = [
        ("runs", figures.runs),
        ("writers sharing a run id", f"{figures.shared_writers} in {figures.shared_runs} runs"),
        ("steps logged", figures.steps_logged),
        ("values logged", figures.values_logged),
        ("values checked against the trainers' records", figures.values_checked),
        ("values lost (must be 0)", figures.values_lost),
        ("values unflushed at SIGKILL (lost by design, counted)", figures.values_unflushed_at_kill),
        ("trainer SIGKILLs survived", figures.trainer_kills),
        ("  of writers sharing a run id", figures.shared_kills),
        ("daemon SIGKILLs + restarts survived", figures.daemon_kills),
        ("corrupt inputs tried", figures.corrupt_inputs),
        ("corrupt inputs named in their report", figures.corrupt_handled),
        ("runs deleted mid-render", f"{mid_render} of {figures.deletions_planned_mid_render}"),
        *(
            [("store outages survived (503, refused, unanswered)", figures.store_outages)]
            if figures.store_outages is not None
            else []
        ),
        ("runs deleted as their trainer ended", figures.deleted.get("at finish", 0)),
        ("runs deleted after a render (mid-render missed)", figures.deleted.get("after render", 0)),
        ("deleted runs left behind (must be 0)", figures.deleted_left_behind),
        ("reports complete", f"{figures.reports_complete} of {figures.runs - deleted}"),
        (
            "hostile runs reported, what they hold bounded",
            f"{figures.hostile_reported} of {figures.hostile}",
        ),
        ("peak daemon memory (daemon + workers)", f"{figures.peak_daemon_mb:.0f} MB"),
        ("peak memory of the daemon's main process", f"{figures.peak_main_mb:.0f} MB"),
        (
            f"peak memory of each render worker and chart helper ({len(peaks)})",
            f"median {statistics.median(peaks):.0f} MB, max {max(peaks):.0f} MB "
            f"(at most {MAX_WORKER_MB:.0f})"
            if peaks
            else "none seen",
        ),
        ("daemon main process at the end", f"{figures.daemon_main_mb:.0f} MB"),
        (
            f"idle daemon CPU after the soak, {IDLE_SECONDS:.0f} s",
            f"{figures.idle_cpu:.1%} of a core (main process {figures.idle_cpu_main:.1%}, "
            f"{figures.idle_wakeups:.0f} wakeups/s)",
        ),
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
        print("OK: nothing lost, every report whole, nothing of a deleted run left, idle when idle")


if __name__ == "__main__":
    sys.exit(main())
