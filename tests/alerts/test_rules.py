"""`[alerts]` in a --config file: a valid table becomes AlertRules; every mistake is a
ConfigError that names the file, the table or rule, and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lossreport.alerts import (
    AlertRules,
    Divergence,
    Plateau,
    Rising,
    Threshold,
    parse_alert_rules,
)
from lossreport.cli import config
from lossreport.errors import ConfigError
from tests.support.procs import ROOT

PATH = Path("/etc/lossreport/watch.toml")

FULL = """
[alerts]
non_finite = false
stalled = true
[alerts.divergence]
factor = 3
jump = 4
patience = 200
warmup = 500
losses = ["overall_loss", "mse_*"]
[[alerts.rule]]
name = "mse above 0.5 after warm-up"
loss = "mse_loss"
above = 0.5
after_step = 1000
[[alerts.rule]]
name = "overall stuck"
loss = "overall_loss"
no_improvement_steps = 5000
min_delta = 0.001
"""


def _parse(text: str) -> AlertRules:
    return parse_alert_rules(tomllib.loads(text)["alerts"], PATH)


def test_a_full_table_is_read_whole() -> None:
    rules = _parse(FULL)
    assert rules == AlertRules(
        non_finite=False,
        divergence=Divergence(
            factor=3.0, jump=4.0, patience=200, warmup=500, losses=("overall_loss", "mse_*")
        ),
        stalled=True,
        user=(
            Threshold("mse above 0.5 after warm-up", "mse_loss", above=0.5, after_step=1000),
            Plateau("overall stuck", "overall_loss", steps=5000, min_delta=0.001),
        ),
    )
    assert isinstance(rules.divergence, Divergence) and type(rules.divergence.factor) is float
    assert rules.names() == [
        "divergence",
        "stalled",
        "mse above 0.5 after warm-up",
        "overall stuck",
    ]


def test_an_empty_table_keeps_every_default() -> None:
    assert _parse("[alerts]") == AlertRules()
    assert AlertRules().names() == ["non-finite", "divergence", "stalled"]


@pytest.mark.parametrize(("text", "divergence"), [("true", Divergence()), ("false", None)])
def test_divergence_can_be_switched(text: str, divergence: Divergence | None) -> None:
    assert _parse(f"[alerts]\ndivergence = {text}").divergence == divergence


def test_a_partial_divergence_table_keeps_the_other_defaults() -> None:
    rules = _parse("[alerts.divergence]\npatience = 7")
    assert rules.divergence == Divergence(patience=7)


RULE = '[[alerts.rule]]\nname = "x"\nloss = "mse_loss"\n'
KNOWN_RULE_KEYS = (
    "name, loss, above, after_step, no_improvement_steps, min_delta, factor, jump, patience, warmup"
)

ERRORS = {
    "unknown key": (
        "[alerts]\ncolour = 1",
        "[alerts] unknown key 'colour' (known: non_finite, stalled, divergence, rule)",
    ),
    "not a bool": ("[alerts]\nnon_finite = 1", "[alerts] non_finite = 1: expected true or false"),
    "divergence of another type": (
        "[alerts]\ndivergence = 3",
        "[alerts] divergence = 3: expected true, false or a table",
    ),
    "unknown divergence key": (
        "[alerts.divergence]\npatients = 3",
        "[alerts.divergence] unknown key 'patients' "
        "(known: factor, jump, patience, warmup, losses)",
    ),
    "factor too low": (
        "[alerts.divergence]\nfactor = 0.5",
        "[alerts.divergence] factor = 0.5: expected a number above 1",
    ),
    "factor of 1": (
        "[alerts.divergence]\nfactor = 1",
        "[alerts.divergence] factor = 1: expected a number above 1",
    ),
    "factor not finite": (
        "[alerts.divergence]\nfactor = inf",
        "[alerts.divergence] factor = inf: expected a finite number",
    ),
    "factor a bool": (
        "[alerts.divergence]\nfactor = true",
        "[alerts.divergence] factor = True: expected a finite number",
    ),
    "patience of 1": (
        "[alerts.divergence]\npatience = 1",
        "[alerts.divergence] patience = 1: expected an integer from 2 to 10000",
    ),
    "patience too long": (
        "[alerts.divergence]\npatience = 10001",
        "[alerts.divergence] patience = 10001: expected an integer from 2 to 10000",
    ),
    "patience a float": (
        "[alerts.divergence]\npatience = 2.0",
        "[alerts.divergence] patience = 2.0: expected an integer from 2 to 10000",
    ),
    "jump too low": (
        "[alerts.divergence]\njump = 1",
        "[alerts.divergence] jump = 1: expected a number above 1",
    ),
    "negative warmup": (
        "[alerts.divergence]\nwarmup = -1",
        "[alerts.divergence] warmup = -1: expected an integer, 0 or more",
    ),
    "empty losses": (
        "[alerts.divergence]\nlosses = []",
        "[alerts.divergence] losses = []: expected a non-empty list of loss names or fnmatch "
        "patterns",
    ),
    "losses a string": (
        '[alerts.divergence]\nlosses = "mse_loss"',
        "[alerts.divergence] losses = 'mse_loss': expected a non-empty list of loss names or "
        "fnmatch patterns",
    ),
    "a pattern of another type": (
        "[alerts.divergence]\nlosses = [1]",
        "[alerts.divergence] losses = [1]: expected a loss name or fnmatch pattern "
        "(a non-empty string)",
    ),
    "rule not a list of tables": (
        "[alerts]\nrule = 5",
        "[alerts] rule = 5: expected [[alerts.rule]] tables",
    ),
    "rule not a table": ("[alerts]\nrule = [1]", "[alerts] rule 1: expected a table, got 1"),
    "unknown rule key": (
        RULE + "below = 1",
        f"[alerts] rule 1 (\"x\"): unknown key 'below' (known: {KNOWN_RULE_KEYS})",
    ),
    "missing name": ('[[alerts.rule]]\nloss = "l"\nabove = 1', "[alerts] rule 1: missing name"),
    "missing loss": (
        '[[alerts.rule]]\nname = "x"\nabove = 1',
        '[alerts] rule 1 ("x"): missing loss',
    ),
    "empty name": (
        '[[alerts.rule]]\nname = ""\nloss = "l"\nabove = 1',
        "[alerts] rule 1: name = '': expected a non-empty name",
    ),
    "name not a string": (
        '[[alerts.rule]]\nname = 3\nloss = "l"\nabove = 1',
        "[alerts] rule 1: name = 3: expected a non-empty name",
    ),
    "name with a newline": (
        '[[alerts.rule]]\nname = "a\\nb"\nloss = "l"\nabove = 1',
        "[alerts] rule 1 (\"a\nb\"): name = 'a\\nb': expected a name without control characters",
    ),
    "empty loss": (
        '[[alerts.rule]]\nname = "x"\nloss = ""\nabove = 1',
        "[alerts] rule 1 (\"x\"): loss = '': expected a loss name or fnmatch pattern "
        "(a non-empty string)",
    ),
    "loss a list": (
        '[[alerts.rule]]\nname = "x"\nloss = ["a"]\nabove = 1',
        "[alerts] rule 1 (\"x\"): loss = ['a']: expected a loss name or fnmatch pattern "
        "(a non-empty string)",
    ),
    "both kinds": (
        RULE + "above = 1\nno_improvement_steps = 5",
        '[alerts] rule 1 ("x"): has more than one of above (a threshold), no_improvement_steps '
        "(a plateau) and jump or factor (a divergence); give exactly one",
    ),
    "neither kind": (
        RULE,
        '[alerts] rule 1 ("x"): has none of above (a threshold), no_improvement_steps '
        "(a plateau) and jump or factor (a divergence); give exactly one",
    ),
    "above not finite": (
        RULE + "above = nan",
        '[alerts] rule 1 ("x"): above = nan: expected a finite number',
    ),
    "above a bool": (
        RULE + "above = true",
        '[alerts] rule 1 ("x"): above = True: expected a finite number',
    ),
    "above a string": (
        RULE + 'above = "0.5"',
        "[alerts] rule 1 (\"x\"): above = '0.5': expected a finite number",
    ),
    "negative after_step": (
        RULE + "above = 1\nafter_step = -1",
        '[alerts] rule 1 ("x"): after_step = -1: expected an integer, 0 or more',
    ),
    "no_improvement_steps of 0": (
        RULE + "no_improvement_steps = 0",
        '[alerts] rule 1 ("x"): no_improvement_steps = 0: expected an integer, 1 or more',
    ),
    "negative min_delta": (
        RULE + "no_improvement_steps = 5\nmin_delta = -0.1",
        '[alerts] rule 1 ("x"): min_delta = -0.1: expected a number, 0 or more',
    ),
    "min_delta on a threshold": (
        RULE + "above = 1\nmin_delta = 0.1",
        '[alerts] rule 1 ("x"): min_delta belongs to a rule with no_improvement_steps',
    ),
    "patience on a threshold": (
        RULE + "above = 1\npatience = 10",
        '[alerts] rule 1 ("x"): patience belongs to a rule with jump or factor',
    ),
    "a divergence rule's jump of 1": (
        RULE + "jump = 1",
        '[alerts] rule 1 ("x"): jump = 1: expected a number above 1',
    ),
    "after_step on a plateau": (
        RULE + "no_improvement_steps = 5\nafter_step = 10",
        '[alerts] rule 1 ("x"): after_step belongs to a rule with above',
    ),
    "a built-in name": (
        '[[alerts.rule]]\nname = "divergence"\nloss = "l"\nabove = 1',
        '[alerts] rule 1 ("divergence"): the name of a built-in rule '
        "(non-finite, divergence, stalled); choose another",
    ),
    "a name used twice": (
        RULE + "above = 1\n"
        '[[alerts.rule]]\nname = "y"\nloss = "l"\nabove = 2\n'
        '[[alerts.rule]]\nname = "x"\nloss = "l"\nno_improvement_steps = 3',
        '[alerts] rule 3 ("x"): rule 1 has this name too; each rule needs its own',
    ),
}


@pytest.mark.parametrize(("text", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_each_mistake_names_the_file_the_rule_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    assert str(caught.value) == f"{PATH}: {message}"


def test_an_alerts_section_that_is_not_a_table() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_alert_rules(["x"], PATH)
    assert str(caught.value) == f"{PATH}: [alerts] must be a table, not ['x']"


def test_a_divergence_rule_of_its_own_holds_one_loss_to_other_thresholds() -> None:
    rules = _parse(
        '[alerts]\n[[alerts.rule]]\nname = "aux explodes"\n'
        'loss = "auxiliary_*"\nfactor = 1000\npatience = 50\n'
    )
    assert rules.user == (
        Rising(
            "aux explodes",
            "auxiliary_*",
            Divergence(factor=1000.0, patience=50, losses=("auxiliary_*",)),
        ),
    )
    assert rules.names() == ["non-finite", "divergence", "stalled", "aux explodes"]


def test_the_shipped_example_config_states_the_default_rules() -> None:
    """systemd/lossreport.toml writes the divergence defaults out for people to edit."""
    settings = config.load(ROOT / "systemd" / "lossreport.toml")
    assert settings["alert_rules"] == AlertRules()
