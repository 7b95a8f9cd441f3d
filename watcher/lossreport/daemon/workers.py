"""The daemon's render workers: warm processes that each render one run at a time.

Each job goes to one idle worker over that worker's own pipe, so a worker that dies (the
kernel's OOM killer, an abort in the chart engine) is charged to the one run it was given and
to no other: the job's future fails with RenderWorkerDied, and the next job starts a new
worker. (A process pool shares one queue among its workers: one death breaks every job in
flight, and which run killed it cannot be told.)

Only the daemon's main thread calls `Workers`; a thread per job waits for its answer.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .. import logformat
from ..errors import RenderWorkerDied
from .jobs import start_worker

logger = logging.getLogger(__name__)

Result = tuple[dict[str, Any], bool]  # what render_job returns
Job = Callable[[], Result]
EXIT_WAIT_SECONDS = 5.0  # a worker whose pipe closed has exited, or is killed after this


class Worker:
    """One worker process, started now; it warms up while its first job waits in its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child_end, *logformat.current()),
            name="lossreport-render",
            daemon=True,  # never outlives a daemon that exits without stopping it
        )
        self._process.start()
        child_end.close()  # so that the worker's death reads as the end of the pipe here
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    def submit(self, job: Job) -> Future[Result]:
        future: Future[Result] = Future()
        self._pipe.send(job)
        threading.Thread(
            target=self._answer, args=(future,), name=f"lossreport-worker-{self.pid}", daemon=True
        ).start()
        return future

    def _answer(self, future: Future[Result]) -> None:
        try:
            ok, value = self._pipe.recv()
        except (EOFError, OSError):
            future.set_exception(RenderWorkerDied(self.pid, self._end()))
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _end(self) -> str:
        """How the process ended (it has, or is killed now): for the log and the index."""
        self.wait_exit()
        code = self._process.exitcode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def alive(self) -> bool:
        return self._process.is_alive()

    def close(self) -> None:
        """Let an idle worker exit by itself: it reads the end of its pipe."""
        self._pipe.close()

    def kill(self) -> None:
        """SIGKILL; the thread waiting for its answer reaps it."""
        self._process.kill()

    def wait_exit(self) -> None:
        """Reap the process, killing it if it has not exited within EXIT_WAIT_SECONDS."""
        self._process.join(EXIT_WAIT_SECONDS)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()


class Workers:
    """Up to `count` workers, each rendering one run at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._idle: list[Worker] = []
        self._busy: dict[int, Worker] = {}  # pid -> worker
        self._closed: list[Worker] = []  # told to exit, not yet reaped

    def free(self) -> bool:
        """Whether a job given now starts at once."""
        return len(self._busy) < self.count

    def free_count(self) -> int:
        """How many jobs given now start at once."""
        return max(self.count - len(self._busy), 0)

    def submit(self, job: Job) -> tuple[Future[Result], int]:
        """Start `job` on an idle worker, or a new one: its answer, and the worker's pid."""
        assert self.free()
        worker = self._idle_worker() or Worker()
        try:
            future = worker.submit(job)
        except OSError:  # it died meanwhile: the next job starts a new one
            worker.kill()
            raise
        self._busy[worker.pid] = worker
        return future, worker.pid

    def _idle_worker(self) -> Worker | None:
        """A warm worker that waits, if one is still alive (the OOM killer may take idle ones)."""
        while self._idle:
            worker = self._idle.pop()
            if worker.alive():
                return worker
            worker.wait_exit()
        return None

    def done(self, pid: int) -> None:
        """The job on worker `pid` has its answer: the worker takes another, if it lives."""
        worker = self._busy.pop(pid, None)
        if worker is not None and worker.alive():
            self._idle.append(worker)

    def refresh(self) -> None:
        """Replace the idle workers, giving back the memory that drawing took, by one fresh
        worker that warms up now, so that the next render finds it warm."""
        self.close_idle()
        self._idle.append(Worker())

    def close_idle(self) -> None:
        for worker in self._idle:
            worker.close()
        self._closed += self._idle
        self._idle = []
        self._closed = [worker for worker in self._closed if worker.alive()]  # reaps

    def kill_busy(self) -> None:
        """Stop every worker that is rendering (at the stop deadline): each job's future
        fails with RenderWorkerDied."""
        for worker in list(self._busy.values()):
            worker.kill()

    def stop(self) -> None:
        """Close every worker; those still running after their grace are killed."""
        self.close_idle()
        for worker in self._closed:
            worker.wait_exit()
        self._closed = []


def _serve(pipe: multiprocessing.connection.Connection, log_level: int, log_style: str) -> None:
    """A worker's life: warm up, then render each job its pipe brings, until the pipe ends."""
    start_worker(log_level, log_style)
    while True:
        try:
            job: Job = pipe.recv()
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, job())
        except Exception as exc:  # the daemon's to judge; this worker goes on
            answer = (False, exc)
        try:
            pipe.send(answer)
        except Exception as exc:  # an exception that does not pickle: its text does
            pipe.send((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]} ({exc})")))
