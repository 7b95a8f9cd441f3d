"""Which series of a run are losses: `--series` and `--exclude-series`.

Other tools log learning rates, gradient norms and throughput beside their losses, all as
scalar series. By default every series is reported; a filter keeps those matching any
`include` pattern (all when none is given) and then drops those matching any `exclude`
pattern. Patterns are shell-style (`train/*`, `lr*`), matched case-sensitively against the
whole series name (fnmatch: the standard library's, no dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import pyarrow as pa

from ..runformat import RESERVED_COLUMNS


@dataclass(frozen=True)
class SeriesFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def keeps(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, pattern) for pattern in self.include):
            return False
        return not any(fnmatchcase(name, pattern) for pattern in self.exclude)

    def apply(self, table: pa.Table) -> tuple[pa.Table, list[str]]:
        """`table` with only the kept series (`step` and `wall_time` always stay), and the
        names of those left out."""
        dropped = [
            name
            for name in table.column_names
            if name not in RESERVED_COLUMNS and not self.keeps(name)
        ]
        if not dropped:
            return table, []
        return table.drop_columns(dropped), dropped

    def describe(self) -> str:
        parts = []
        if self.include:
            parts.append("only " + ", ".join(self.include))
        if self.exclude:
            parts.append("not " + ", ".join(self.exclude))
        return "; ".join(parts)
