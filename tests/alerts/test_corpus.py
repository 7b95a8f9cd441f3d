"""The default rules on the labelled corpus (tests/support/alert_corpus.py) and on the demo's
own SAEs, read by a RunChecker shard by shard: nothing on a healthy curve, every failure caught
at or after its onset. tests/daemon/test_alerts.py plays the same corpus to a real daemon."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossreport.alerts import STALLED, AlertRules, RunChecker
from lossreport.cli import demo
from tests.support import alert_corpus
from tests.support.procs import PYTHONPATH, ROOT

CURVES = {curve.kind: curve for curve in alert_corpus.corpus(stalled=False)}
HEALTHY = [kind for kind, curve in CURVES.items() if curve.failure is None]
FAILING = [kind for kind, curve in CURVES.items() if curve.failure is not None]


@pytest.mark.parametrize("kind", HEALTHY)
def test_a_healthy_curve_raises_nothing(tmp_path: Path, kind: str) -> None:
    assert alert_corpus.check_offline(CURVES[kind], tmp_path / "run", AlertRules()) == []


@pytest.mark.parametrize("kind", FAILING)
def test_a_failure_is_caught_from_its_onset_and_nothing_else_is_raised(
    tmp_path: Path, kind: str
) -> None:
    curve = CURVES[kind]
    assert curve.failure is not None and curve.failure.rule != STALLED
    [alert] = alert_corpus.check_offline(curve, tmp_path / "run", AlertRules())
    assert alert.rule == curve.failure.rule
    assert alert.step is not None and alert.step >= curve.failure.onset


@pytest.mark.slow
def test_the_demos_saes_raise_no_alert(tmp_path: Path) -> None:
    """`lossreport demo` trains these three for its default number of steps, with a daemon
    following them: the L1 penalty of the standard and gated SAEs climbs as their features
    grow, which the old rules called a divergence."""
    steps = inspect.signature(demo.run_demo).parameters["steps"].default
    trainers = [
        subprocess.Popen(
            [
                sys.executable,
                str(demo.EXAMPLE),
                "--architecture",
                architecture,
                "--runs-dir",
                str(tmp_path),
                "--run-id",
                architecture,
                "--steps",
                str(steps),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for architecture in demo.ARCHITECTURES
    ]
    for trainer in trainers:
        _, stderr = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, stderr
    for architecture in demo.ARCHITECTURES:
        assert RunChecker(AlertRules()).check(tmp_path / architecture) == [], architecture
