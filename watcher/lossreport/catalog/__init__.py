"""The runs catalog: one row of summary per run, kept by the daemon, queried by `serve`.

A cluster's runs tree holds tens of thousands of runs; a page that embeds them all, or a
daemon that holds them all in memory, does not scale. The daemon writes each run's row when
it renders it (store.py); `serve` filters, sorts and pages through them (query.py) and
groups them into sweeps (sweeps.py), all in SQLite.
"""

from .query import SORT_FIELDS, Page, RunQuery
from .store import Catalog, is_damaged, is_unusable, packed_row
from .sweeps import Sweep, sweep_of, sweeps

__all__ = [
    "SORT_FIELDS",
    "Catalog",
    "Page",
    "RunQuery",
    "Sweep",
    "is_damaged",
    "is_unusable",
    "packed_row",
    "sweep_of",
    "sweeps",
]
