"""How much of a user's text a report shows: the one budget for every model, hook, run id,
loss or config name that reaches a chart, a title, a file name or a mail subject.

Nothing caps those names where they are written (run.json, a shard's column, a TensorBoard
tag), and drawn whole they are costly: a chart grows to hold its title, so a model name of
10,000 characters made a 6 GB, 39-second render, and 100,000 made the chart engine abort. So
a report shows each such text shortened to MAX_SHOWN_CHARS, its start and end kept around an
ellipsis (a model's family and size, a hook's layer); a page carries more of it, up to
MAX_FULL_CHARS, in a tooltip or a table cell that wraps. The data files (run.json, the CSV,
the summary JSON) keep every name whole.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable

MAX_SHOWN_CHARS = 80  # a name in a chart, a title, a legend, a mail subject
MAX_FULL_CHARS = 2_000  # a name in a page's tooltip or a table cell that wraps
MAX_LISTED = 40  # names a report lists where there may be thousands (series not drawn)
ELLIPSIS = "\u2026"
_DIGEST_LENGTH = 8


def shortened(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text` if it fits `limit` characters; else its first two thirds and last third of the
    limit around an ellipsis."""
    if len(text) <= limit:
        return text
    keep = limit - len(ELLIPSIS)
    tail = keep // 3
    return f"{text[: keep - tail]}{ELLIPSIS}{text[len(text) - tail :]}"


def listed(texts: list[str], most: int = MAX_LISTED) -> str:
    """`a, b, c and 12 more`: the first `most` texts, each shortened."""
    shown = ", ".join(shortened(text) for text in texts[:most])
    rest = len(texts) - most
    return f"{shown} and {rest:,} more" if rest > 0 else shown


def distinct_shortened(texts: Iterable[str], limit: int = MAX_SHOWN_CHARS) -> dict[str, str]:
    """Each text shortened, and still distinct from the others' (a chart's legend tells its
    series apart by these): texts that shorten alike end in a hash of the whole text."""
    shown = {text: shortened(text, limit) for text in texts}
    seen = Counter(shown.values())
    return {
        text: short if seen[short] == 1 or short == text else _tagged(text, limit)
        for text, short in shown.items()
    }


def _tagged(text: str, limit: int) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]
    return f"{shortened(text, limit - _DIGEST_LENGTH - 1)}#{digest}"
