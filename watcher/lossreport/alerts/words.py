"""Numbers and durations as an alert writes them for a person: thousands separators, three
significant digits, and no `1e+03` where `1,000` reads better."""

from __future__ import annotations

import math

SIGNIFICANT = 3
# Past these, plain digits stop helping: 1.23e-05 reads better than 0.0000123.
_SMALLEST_PLAIN, _LARGEST_PLAIN = 1e-3, 1e15


def number(value: float) -> str:
    """`0.213`, `214`, `1,230,000`, `4.5e-06`, `NaN`, `inf`: a loss value or a ratio."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    size = abs(value)
    if size < _SMALLEST_PLAIN or size >= _LARGEST_PLAIN:
        mantissa, exponent = f"{value:.{SIGNIFICANT - 1}e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    digits = SIGNIFICANT - 1 - math.floor(math.log10(size))
    rounded = round(value, digits)
    if digits <= 0:
        return f"{int(rounded):,}"
    return f"{rounded:,.{digits}f}".rstrip("0").rstrip(".")


def count(value: int) -> str:
    """A step or a count of steps: `11,500`."""
    return f"{value:,}"


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`: how long a trainer has been silent."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{number(seconds / 3600)} h"
