"""Progress over many runs: a redrawn bar on a terminal, one plain line each when piped.

Written by hand: a dozen lines do not justify a dependency such as tqdm.
"""

from __future__ import annotations

import shutil
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._live = stream.isatty()

    def advance(self, line: str) -> None:
        """Count one more run; `line` says what happened to it."""
        self.done += 1
        if not self._live:
            self._stream.write(f"[{self.done}/{self.total}] {line}\n")
            self._stream.flush()
            return
        width = max(10, min(40, shutil.get_terminal_size().columns - 60))
        filled = width * self.done // self.total
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(f"\r\033[K[{bar}] {self.done}/{self.total} {line[:50]}")
        if self.done == self.total:
            self._stream.write("\n")
        self._stream.flush()
