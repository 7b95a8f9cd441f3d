"""Alerts while a run trains: which rules (rules.py, with their `[alerts]` config) and the
per-run checker that reads each new shard once and says which rules fire (check.py).

Pure detection: the daemon decides when to check a run, remembers what was sent and delivers
it. This part reads runs through runformat only.
"""

from .check import Alert, RunChecker
from .rules import (
    DIVERGENCE,
    NON_FINITE,
    STALLED,
    AlertRules,
    Divergence,
    Plateau,
    Rising,
    Threshold,
    parse_alert_rules,
)

__all__ = [
    "DIVERGENCE",
    "NON_FINITE",
    "STALLED",
    "Alert",
    "AlertRules",
    "Divergence",
    "Plateau",
    "Rising",
    "RunChecker",
    "Threshold",
    "parse_alert_rules",
]
