"""Processes: whether one is alive (the trainer and the daemon's presence both ask, for a pid
that a file in a shared tree names, so any number, from anyone), and children that end with
their parent."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import threading


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


def exit_with_parent() -> None:
    """In a process started by multiprocessing: exit as soon as its parent is gone, even one
    SIGKILLed that could not stop its children (a render worker, the chart helper).

    A thread waits on the parent's sentinel (the pipe multiprocessing keeps to it, which reads
    as closed once the parent is gone) and ends the process. Unlike PR_SET_PDEATHSIG, which
    fires when the *thread* that started the child ends, this holds whichever thread did.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), name="lossreport-parent", daemon=True
        ).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    os._exit(1)
