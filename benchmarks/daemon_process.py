"""`lossreport watch` as a subprocess for the benchmarks: its JSON log, and the memory and CPU
of it and its render workers, read from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(
        self,
        runs_dir: Path | str,
        *args: str,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`runs_dir`: a folder, or an s3:// URL (then `log_dir` says where the log goes)."""
        folder = log_dir if log_dir is not None else Path(runs_dir).parent
        self.log = folder / f"daemon-{time.monotonic_ns()}.log"
        self._handle = self.log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lossreport",
                "--log-format",
                "json",
                "watch",
                str(runs_dir),
                "--workers",
                "2",
                *args,
            ],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes the workers too
            env=env,
        )

    def events(self, kind: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if f'"{kind}"' in line:
                found.append(json.loads(line))
        return found

    def wait_for(self, kind: str, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while not self.events(kind):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no {kind!r} event: {self.log.read_text()[-2000:]}")
            time.sleep(0.01)
        return time.monotonic()

    def family(self) -> list[int]:
        """The daemon's pid and its children's (the worker processes)."""
        children = [pid for pid, parent in _parents().items() if parent == self.process.pid]
        return [self.process.pid, *children]

    def peaks_mb(self) -> dict[int, float]:
        """The peak resident memory (VmHWM) of the daemon's descendants, by pid: its render
        workers and their chart helpers."""
        parents = _parents()
        family, grew = {self.process.pid}, True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family |= more
            grew = bool(more)
        peaks = {}
        for pid in family - {self.process.pid}:
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            found = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
            if found:
                peaks[pid] = found[0] / 1024
        return peaks

    def main_peak_mb(self) -> float:
        """The peak resident memory (VmHWM) of the daemon's main process."""
        try:
            lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        except OSError:
            return 0.0
        return sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:")) / 1024

    def rss_mb(self, workers: bool = True) -> float:
        """Resident memory of the daemon, and of its render workers unless told otherwise."""
        total = 0
        for pid in self.family() if workers else [self.process.pid]:
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:  # a worker that just exited
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
        return total / 1024

    def cpu_seconds(self, workers: bool = True) -> float:
        """CPU time of the daemon, and of its render workers unless told otherwise."""
        total = 0
        for pid in self.family() if workers else [self.process.pid]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)
        self._handle.close()

    def kill(self) -> None:
        """SIGKILL the daemon and its workers at once, as an OOM killer or a node failure would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._handle.close()


def _parents() -> dict[int, int]:
    """Every process's parent, by pid, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # a process that just exited
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents
