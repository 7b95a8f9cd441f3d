"""A trainer that forks, as PyTorch's DataLoader workers do, for tests of who closes a run:

    python -m tests.support.forking_trainer RUNS_DIR RUN_ID os|multiprocessing|sigterm

It starts a run (without `with`, as SAELens does), logs 100 steps with 40 still buffered, then
makes a child: `os.fork()` whose child exits normally (SystemExit, so atexit handlers run), a
multiprocessing 'fork' context Process, or an `os.fork()` child ended by SIGTERM. Once the
child is gone it prints "child exited STATUS", waits for stdin to close, logs 100 more steps
and exits, leaving the close to atexit.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

import lossreport


def _work(run: lossreport.Run) -> None:
    """What a DataLoader worker does: touch the run object it inherited, then finish."""
    run.log(10_000, mse_loss=0.5)  # the parent's run is not the child's to write
    run.flush()


def _child(run: lossreport.Run, how: str) -> int:
    if how == "multiprocessing":
        process = multiprocessing.get_context("fork").Process(target=_work, args=(run,))
        process.start()
        process.join()
        return process.exitcode or 0
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_read)
        if how == "sigterm":
            os.write(ready_write, b"x")
            signal.pause()  # until the parent's SIGTERM
        _work(run)
        sys.exit(0)  # a normal exit: the interpreter runs its atexit handlers
    os.close(ready_write)
    if how == "sigterm":
        os.read(ready_read, 1)
        os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    runs_dir, run_id, how = sys.argv[1:4]
    run = lossreport.start_run(
        runs_dir, model="gpt2", hook="blocks.8.hook_resid_pre", run_id=run_id, flush_every=60
    )
    for step in range(100):
        run.log(step, mse_loss=1.0 / (step + 1))
    print(f"child exited {_child(run, how)}", flush=True)
    sys.stdin.read()
    for step in range(100, 200):
        run.log(step, mse_loss=1.0 / (step + 1))


if __name__ == "__main__":
    main()
