"""Whether a process is alive: the trainer and the daemon's presence both ask, for a pid that a
file in a shared tree names (so any number, from anyone)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (as any user)."""
    if not 0 < pid < 2**31:  # 0 and negative pids signal process groups; larger overflow
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, as another user
        return True
    return True
