"""A labelled corpus of SAE training curves for the alert rules, and what plays it to a real daemon.

Healthy kinds, which the default rules must never alert on: an L1 coefficient warming up (the
unscaled `l1_loss` rises ~10x, `mse_loss` and `overall_loss` rise a few-fold after their early
low), JumpReLU's `l0_loss` rising when the sparsity target relaxes, dead-feature resampling
(`mse_loss` spikes ~9x and recovers), top-k's heavy-tailed auxiliary loss (zero at first), bad
batches (single-step spikes of 10-1000x), cosine decay, a plateau with heavy noise, and a curve at
1e-6 and at 1e6 scale. Failing kinds, each on two of those backgrounds, which must each be caught:
a NaN, an inf (in any loss, watched for divergence or not), an explosion (1000x over 1500 steps,
staying), a persistent jump (25x, staying) and a stalled trainer.

`corpus()` makes the curves (deterministic: a seed); `check_offline` runs one through a
`RunChecker`; `play` writes every curve into a runs directory shard by shard, as trainers do,
while a daemon watches, and gives what each run raised and when. tests/alerts and
tests/daemon/test_alerts.py assert on it; benchmarks/bench_alerts.py prints its scores.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from lossreport import runformat
from lossreport.alerts import DIVERGENCE, NON_FINITE, STALLED, Alert, AlertRules, RunChecker
from lossreport.clock import utc_now
from tests.support.daemon import Daemon
from tests.support.procs import wait_for
from tests.support.webhook import WebhookReceiver

FloatArray = npt.NDArray[np.float64]
Losses = dict[str, FloatArray]

STEPS = 4000
SHARD_ROWS = 250  # a flush every 250 steps, as the demo's trainers do
# Every played run ends with a shard holding only SENTINEL = 1, which a user rule in the daemon's
# config (SENTINEL_CONFIG) alerts on: its alert shows the daemon has read every earlier shard of
# the run while it was running, so a false alert from the curve would be in by then.
SENTINEL, SENTINEL_RULE = "corpus_end", "corpus end"
SENTINEL_CONFIG = f'[[alerts.rule]]\nname = "{SENTINEL_RULE}"\nloss = "{SENTINEL}"\nabove = 0\n'
# Seconds: the played runs beat every 0.5 s, the stalled ones stop; a loaded machine may pause
# the beats for a few seconds, which must not read as a stall.
STALE_AFTER = 10.0
STAMP = "20260301-091500"
MODEL, HOOK = "pythia-70m-dédupliqué", "blocks.3.hook_resid_post"


@dataclass(frozen=True)
class Failure:
    """What must be caught: `rule` firing at or after `onset`, the first step that is wrong
    (for a stall: the first step never written)."""

    rule: str
    onset: int


@dataclass(frozen=True)
class Curve:
    kind: str
    losses: Losses  # per loss a value per step, steps 0..STEPS-1
    failure: Failure | None = None

    @property
    def key(self) -> str:
        """The run's folder, named as start_run names one."""
        return runformat.clean_name(f"{MODEL}_{HOOK}") + f"_{STAMP}_{self.kind}"

    @property
    def written_steps(self) -> int:
        """A stalled trainer writes nothing from its onset on."""
        if self.failure is not None and self.failure.rule == STALLED:
            return self.failure.onset
        return STEPS

    def shards(self) -> list[pa.Table]:
        """The shards its trainer writes, SHARD_ROWS steps each."""
        steps = np.arange(STEPS, dtype=np.int64)
        tables = []
        for first in range(0, self.written_steps, SHARD_ROWS):
            rows = slice(first, min(first + SHARD_ROWS, self.written_steps))
            columns: dict[str, Any] = {"step": steps[rows], "wall_time": 1.77e9 + steps[rows]}
            columns |= {name: values[rows] for name, values in self.losses.items()}
            tables.append(pa.table(columns))
        return tables


# --- healthy backgrounds ------------------------------------------------------------------------

_T = np.arange(STEPS, dtype=np.float64)


def _noise(rng: np.random.Generator, sigma: float) -> FloatArray:
    """Multiplicative noise: a loss logged from one batch wobbles by a share of its level."""
    return np.exp(sigma * rng.standard_normal(STEPS))


def _falling(start: float, end: float, tau: float) -> FloatArray:
    return end + (start - end) * np.exp(-_T / tau)


def _standard(l1: FloatArray, mse: FloatArray, coefficient: FloatArray) -> Losses:
    return {"mse_loss": mse, "l1_loss": l1, "overall_loss": mse + coefficient * l1}


def l1_warmup(rng: np.random.Generator) -> Losses:
    """The L1 coefficient climbs from 0 over the first 1000 steps: with no penalty the SAE
    reconstructs almost perfectly, then trades reconstruction for sparsity. The unscaled
    l1_loss rises ~10x; mse_loss ~3x and overall_loss ~5x above their early lows."""
    coefficient = 5e-3 * np.minimum(1.0, _T / 1000)
    l1 = (2 + 18 * (1 - np.exp(-_T / 300))) * (1 - 0.3 * np.clip((_T - 1000) / 3000, 0, 1))
    mse = _falling(1.0, 0.01, 40) + 0.02 * np.minimum(1.0, _T / 1200) ** 1.5
    return _standard(l1 * _noise(rng, 0.03), mse * _noise(rng, 0.05), coefficient)


def jumprelu_l0(rng: np.random.Generator) -> Losses:
    """JumpReLU: l0_loss falls to its sparsity target, which relaxes at step 2000: it climbs
    3x over 200 steps while mse_loss falls."""
    l0 = _falling(200, 40, 150) + 80 * np.clip((_T - 2000) / 200, 0, 1)
    mse = _falling(2.0, 0.06, 60) - 0.02 * np.clip((_T - 2000) / 400, 0, 1)
    l0, mse = l0 * _noise(rng, 0.04), mse * _noise(rng, 0.05)
    return {"mse_loss": mse, "l0_loss": l0, "overall_loss": mse + 1e-3 * l0}


def resampling(rng: np.random.Generator) -> Losses:
    """Dead features resampled at steps 1000, 2000 and 3000: mse_loss spikes ~9x and recovers
    within ~150 steps."""
    mse = _falling(1.5, 0.05, 80)
    for at in (1000, 2000, 3000):
        mse = mse * (1 + 8 * np.where(at <= _T, np.exp(-(_T - at) / 50), 0))
    l1 = 10 + 5 * (1 - np.exp(-_T / 500))
    return _standard(l1 * _noise(rng, 0.03), mse * _noise(rng, 0.05), np.full(STEPS, 4e-3))


def topk_aux(rng: np.random.Generator) -> Losses:
    """Top-k: the AuxK loss is 0 until latents die (step 600), then heavy-tailed (lognormal,
    sigma 1.5) with a few zero batches."""
    mse = _falling(5.0, 1.1, 300) * _noise(rng, 0.05)
    aux = 0.3 * _falling(3.0, 1.0, 800) * np.exp(1.5 * rng.standard_normal(STEPS))
    aux[(_T < 600) | (rng.random(STEPS) < 0.02)] = 0.0
    return {"mse_loss": mse, "auxiliary_reconstruction_loss": aux, "overall_loss": mse + aux / 32}


def bad_batches(rng: np.random.Generator) -> Losses:
    """One step in 200 is a bad batch: mse_loss and overall_loss 10-1000x for that step (once,
    three in a row)."""
    losses = _standard(
        np.full(STEPS, 12.0) * _noise(rng, 0.03),
        _falling(1.0, 0.05, 100) * _noise(rng, 0.05),
        np.full(STEPS, 4e-3),
    )
    bad = np.flatnonzero(rng.random(STEPS) < 0.005)
    bad = np.concatenate([bad, [2500, 2501, 2502]])
    spike = 10 ** rng.uniform(1, 3, len(bad))
    for name in ("mse_loss", "overall_loss"):
        losses[name][bad] *= spike
    return losses


def cosine_decay(rng: np.random.Generator) -> Losses:
    """A cosine learning-rate schedule: the loss falls fast, then more slowly as the rate
    decays to 0."""
    progress = np.cumsum(0.5 * (1 + np.cos(np.pi * _T / STEPS))) / (STEPS / 2)
    mse = 0.04 + 0.8 * np.exp(-6 * progress)
    return _standard(
        np.full(STEPS, 15.0) * _noise(rng, 0.03), mse * _noise(rng, 0.05), np.full(STEPS, 3e-3)
    )


def noisy_plateau(rng: np.random.Generator) -> Losses:
    """Flat after step 300, logged from small batches: +-40% noise (lognormal sigma 0.4)."""
    mse = _falling(0.6, 0.08, 100) * _noise(rng, 0.4)
    return _standard(np.full(STEPS, 9.0) * _noise(rng, 0.2), mse, np.full(STEPS, 5e-3))


def scaled(scale: float) -> Callable[[np.random.Generator], Losses]:
    def at_scale(rng: np.random.Generator) -> Losses:
        return {name: values * scale for name, values in l1_warmup(rng).items()}

    at_scale.__doc__ = f"The L1 warm-up curves times {scale:g}."
    return at_scale


HEALTHY: dict[str, Callable[[np.random.Generator], Losses]] = {
    "l1-warmup": l1_warmup,
    "jumprelu-l0": jumprelu_l0,
    "resampling": resampling,
    "topk-aux": topk_aux,
    "bad-batches": bad_batches,
    "cosine-decay": cosine_decay,
    "noisy-plateau": noisy_plateau,
    "tiny-scale": scaled(1e-6),
    "huge-scale": scaled(1e6),
}


# --- failures, each put on a healthy background -------------------------------------------------


def _nan(losses: Losses, onset: int) -> str:
    losses["overall_loss"][onset] = math.nan
    return NON_FINITE


def _inf(losses: Losses, onset: int) -> str:
    """In a loss the divergence rule does not watch, when there is one."""
    name = next((n for n in losses if n not in ("overall_loss", "mse_loss")), "mse_loss")
    losses[name][onset] = math.inf
    return NON_FINITE


def _explosion(losses: Losses, onset: int) -> str:
    """Reconstruction and overall loss grow 1000x over 1500 steps and stay there."""
    growth = 10 ** (3 * np.clip((_T - onset) / 1500, 0, 1))
    for name in ("mse_loss", "overall_loss"):
        losses[name] = losses[name] * growth
    return DIVERGENCE


def _jump(losses: Losses, onset: int) -> str:
    """Reconstruction and overall loss jump 25x and stay there."""
    for name in ("mse_loss", "overall_loss"):
        losses[name] = losses[name] * np.where(onset <= _T, 25.0, 1.0)
    return DIVERGENCE


def _stall(losses: Losses, onset: int) -> str:
    return STALLED


FAILING: dict[str, tuple[Callable[[Losses, int], str], tuple[str, str], int]] = {
    "nan": (_nan, ("l1-warmup", "tiny-scale"), 2345),
    "inf": (_inf, ("topk-aux", "huge-scale"), 1717),
    "explosion": (_explosion, ("l1-warmup", "tiny-scale"), 1800),
    "jump": (_jump, ("noisy-plateau", "huge-scale"), 2600),
    "stalled": (_stall, ("cosine-decay", "resampling"), 1500),
}


def corpus(seed: int = 0, stalled: bool = True) -> list[Curve]:
    """Every healthy kind, then every failing kind on each of its backgrounds."""
    rng = np.random.default_rng(seed)
    curves = [Curve(kind, make(rng)) for kind, make in HEALTHY.items()]
    for kind, (fail, backgrounds, onset) in FAILING.items():
        if kind == "stalled" and not stalled:
            continue
        for background in backgrounds:
            losses = HEALTHY[background](rng)
            rule = fail(losses, onset)
            curves.append(Curve(f"{kind}-on-{background}", losses, Failure(rule, onset)))
    return curves


def failing_kind(curve: Curve) -> str:
    return curve.kind.split("-on-")[0]


def check_offline(curve: Curve, run_dir: Path, rules: AlertRules) -> list[Alert]:
    """Every alert a RunChecker raises on the curve, fed shard by shard as a daemon would."""
    (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
    checker = RunChecker(rules)
    alerts = []
    for seq, table in enumerate(curve.shards(), start=1):
        runformat.write_shard(run_dir, seq, table, writer="corpus")
        alerts += checker.check(run_dir)
    return alerts


# --- playing the corpus to a daemon ------------------------------------------------------------


@dataclass
class Played:
    """One run as played: when each shard landed (its last step, time.time()), and the
    alerts posted about it (the sentinel's apart)."""

    curve: Curve
    landed: list[tuple[int, float]] = field(default_factory=list)
    last_beat: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    ended: bool = False  # the sentinel's alert came

    def caught(self) -> dict[str, Any] | None:
        """The alert that catches its failure: its rule, at or after the onset."""
        failure = self.curve.failure
        for alert in self.alerts:
            if failure is None or alert["rule"] != failure.rule:
                continue
            if alert["step"] is None or int(alert["step"]) >= failure.onset:
                return alert
        return None

    def false_alerts(self) -> list[dict[str, Any]]:
        caught = self.caught()
        return [alert for alert in self.alerts if alert is not caught]

    def latency(self, stale_after: float) -> float | None:
        """Seconds from the shard that holds the alert's step landing (for a stall, from the
        heartbeat going stale) to the post arriving."""
        caught = self.caught()
        if caught is None:
            return None
        arrived = self.arrived[self.alerts.index(caught)]
        if caught["step"] is None:
            return arrived - (self.last_beat + stale_after)
        step = int(caught["step"])
        return arrived - next(at for last, at in self.landed if last >= step)

    def steps_late(self) -> int | None:
        """Steps from the onset to the step the alert names (None for a stall)."""
        caught = self.caught()
        if caught is None or caught["step"] is None or self.curve.failure is None:
            return None
        return int(caught["step"]) - self.curve.failure.onset


def play(
    runs_dir: Path,
    curves: list[Curve],
    posts: Callable[[], list[tuple[dict[str, Any], float]]],
    *,
    shard_every: float = 0.25,
    beat_every: float = 0.5,
    timeout: float = 120.0,
) -> list[Played]:
    """Write the curves as running runs into `runs_dir`, which a daemon with SENTINEL_CONFIG
    and a webhook watches: one shard of every run each `shard_every` seconds, run.json's
    heartbeat every `beat_every` (none from a stalled run's onset), then the sentinel. Returns
    once every run's sentinel (or a stalled run's stall) has been posted; `posts` gives the
    webhook's bodies with their arrival times."""
    played = {curve.key: Played(curve) for curve in curves}
    for run in played.values():
        run_dir = runs_dir / run.curve.key
        (run_dir / runformat.LOSSES_DIR).mkdir(parents=True)
        _beat(run_dir, run)
    stop = threading.Event()
    beater = threading.Thread(target=_beat_all, args=(runs_dir, played, stop, beat_every))
    beater.start()
    try:
        _write_all(runs_dir, played, shard_every)
        _collect(played, posts, timeout)
    finally:
        stop.set()
        beater.join()
    return list(played.values())


def _beat(run_dir: Path, run: Played) -> None:
    record = runformat.RunRecord(
        run.curve.key, MODEL, HOOK, "standard", started_at=f"{STAMP[:4]}-03-01T09:15:00+00:00"
    )
    record.heartbeat_at = utc_now()
    runformat.write_run_file(run_dir, record)
    run.last_beat = time.time()


def _beating(run: Played) -> bool:
    failure = run.curve.failure
    stalled = failure is not None and failure.rule == STALLED
    return not (stalled and len(run.landed) * SHARD_ROWS >= run.curve.written_steps)


def _beat_all(
    runs_dir: Path, played: dict[str, Played], stop: threading.Event, every: float
) -> None:
    while not stop.wait(every):
        for run in played.values():
            if _beating(run):
                _beat(runs_dir / run.curve.key, run)


def _write_all(runs_dir: Path, played: dict[str, Played], every: float) -> None:
    shards = {key: run.curve.shards() for key, run in played.items()}
    for seq in range(1, max(len(tables) for tables in shards.values()) + 2):
        for key, run in played.items():
            tables = shards[key]
            if seq <= len(tables):
                table = tables[seq - 1]
            elif seq == len(tables) + 1 and run.curve.written_steps == STEPS:
                table = pa.table({"step": pa.array([STEPS], pa.int64()), SENTINEL: [1.0]})
            else:
                continue
            runformat.write_shard(runs_dir / key, seq, table, writer="corpus")
            run.landed.append((int(table.column("step")[-1].as_py()), time.time()))
        time.sleep(every)


def _collect(
    played: dict[str, Played],
    posts: Callable[[], list[tuple[dict[str, Any], float]]],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for run in played.values():
            run.alerts, run.arrived, run.ended = [], [], False
        for body, arrived in posts():
            run = played[str(body["run"])]
            if body["rule"] == SENTINEL_RULE:
                run.ended = True
            else:
                run.alerts.append(body)
                run.arrived.append(arrived)
        if all(run.ended or (not _beating(run) and run.caught()) for run in played.values()):
            return
        if time.monotonic() > deadline:
            waiting = [key for key, run in played.items() if not run.ended]
            raise AssertionError(f"timed out after {timeout}s waiting for {waiting}")
        time.sleep(0.05)


def run_corpus(
    tmp: Path, curves: list[Curve], stale_after: float = STALE_AFTER
) -> tuple[list[Played], Path]:
    """`play` the curves to a real `lossreport watch` (its default rules, the sentinel's, a
    webhook to a receiver on loopback, `--stale-after`); what each run raised, and the
    daemon's log."""
    runs_dir, config = tmp / "runs", tmp / "corpus.toml"
    runs_dir.mkdir()
    config.write_text(SENTINEL_CONFIG)
    with WebhookReceiver() as hook:
        daemon = Daemon(
            runs_dir, "--config", str(config), "--alert-webhook", hook.url,
            "--stale-after", f"{stale_after}s", log=tmp / "daemon.log",
        )  # fmt: skip
        try:
            wait_for(lambda: runformat.live_daemon(runs_dir) is not None, timeout=60)
            played = play(runs_dir, curves, hook.timed)
        finally:
            code, _ = daemon.stop(timeout=120)
    assert code == 0, daemon.log.read_text()[-2000:]
    return played, daemon.log


# --- scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Per kind: alerts raised that were right and wrong, failures caught of those played,
    and the latencies (seconds) and steps from onset of the catches."""

    kind: str
    true_alerts: int
    false_alerts: int
    caught: int
    failures: int
    latencies: list[float]
    steps_late: list[int]

    @property
    def precision(self) -> float:
        raised = self.true_alerts + self.false_alerts
        return self.true_alerts / raised if raised else 1.0

    @property
    def recall(self) -> float:
        return self.caught / self.failures if self.failures else 1.0

    def line(self) -> str:
        """A row under SCORE_HEADER; `-` for what the kind cannot have (a healthy kind's
        recall, a precision with nothing raised)."""
        raised = self.true_alerts + self.false_alerts
        precision = f"{self.precision:9.2f}" if raised else f"{'-':>9}"
        recall = f"{self.recall:6.2f}" if self.failures else f"{'-':>6}"
        seconds = (
            f"{statistics.median(self.latencies):6.2f} {max(self.latencies):6.2f}"
            if self.latencies
            else f"{'-':>6} {'-':>6}"
        )
        steps = (
            f"{statistics.median(self.steps_late):7.0f} {max(self.steps_late):7d}"
            if self.steps_late
            else f"{'-':>7} {'-':>7}"
        )
        return f"{self.kind:<14} {precision} {recall} {self.false_alerts:5d} {seconds} {steps}"


SCORE_HEADER = (
    f"{'kind':<14} {'precision':>9} {'recall':>6} {'false':>5} "
    f"{'lat s':>6} {'worst':>6} {'steps':>7} {'worst':>7}"
)


def scores(played: list[Played], stale_after: float) -> list[Score]:
    """One Score per healthy kind (all of it false alerts, if any) and per failing kind."""
    by_kind: dict[str, list[Played]] = {}
    for run in played:
        kind = run.curve.kind if run.curve.failure is None else failing_kind(run.curve)
        by_kind.setdefault(kind, []).append(run)
    result = []
    for kind, runs in by_kind.items():
        caught = [run for run in runs if run.caught() is not None]
        latencies = [run.latency(stale_after) for run in caught]
        late = [run.steps_late() for run in caught]
        result.append(
            Score(
                kind,
                true_alerts=len(caught),
                false_alerts=sum(len(run.false_alerts()) for run in runs),
                caught=len(caught),
                failures=sum(run.curve.failure is not None for run in runs),
                latencies=[x for x in latencies if x is not None],
                steps_late=[x for x in late if x is not None],
            )
        )
    return result
