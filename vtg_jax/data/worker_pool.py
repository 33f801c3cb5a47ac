"""Worker processes that run one task each at a time, any of which can be killed alone.

Extraction decodes untrusted videos: a decoder can hang or segfault. A concurrent.futures pool can
neither stop a running task nor tell whose task killed a dead worker (a crash breaks the whole pool),
so here each task runs in a process of its own that is killed and replaced when its task runs past a
per-task timeout, and a process that dies takes down only its own task. A crash before any worker
ever answered is checked with a no-op task, to tell a broken environment (every worker dies: the run
stops) from one crashing task (recorded, the run goes on).
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import time
from typing import Any, Callable, Optional

CRASHED = "worker process crashed while decoding"


def _serve(conn: Any, work: Callable[[tuple], tuple]) -> None:
    """A worker process's loop: runs each task it is sent and sends back the result, until the pipe closes."""
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        conn.send(work(task))


def echo(task: tuple) -> tuple:
    """The no-op task that probes whether a fresh worker can run at all."""
    return task


class _Worker:
    """A process fed one task at a time over its own pipe, which can be killed alone."""

    def __init__(self, ctx: Any, work: Callable[[tuple], tuple]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, work), daemon=True)
        self.proc.start()
        child.close()
        self.task: Optional[tuple] = None
        self.timeout_s, self.deadline = 0.0, math.inf

    def start(self, task: tuple, timeout_s: float) -> None:
        self.task, self.timeout_s = task, timeout_s
        self.deadline = time.monotonic() + timeout_s if timeout_s > 0 else math.inf
        try:
            self.conn.send(task)
        except OSError:  # the process is gone; poll() reports it
            pass

    def poll(self) -> Optional[tuple[str, Any]]:
        """The task's result, ("error", why) if the worker died or ran out of time (then it is killed), or
        None while the task runs."""
        if self.conn.poll():
            try:
                return self.conn.recv()
            except (EOFError, OSError):  # the pipe closed under the reader: the process died
                return "error", CRASHED
        if not self.proc.is_alive():
            return "error", CRASHED
        if time.monotonic() >= self.deadline:
            self.stop()
            return "error", f"timed out after {self.timeout_s:g} s decoding"
        return None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


def _workers_can_run(ctx: Any) -> bool:
    """Whether a fresh worker can run a no-op: tells a broken environment from one crashing task."""
    worker = _Worker(ctx, echo)
    try:
        worker.start(("ping",), 120.0)
        while (result := worker.poll()) is None:
            multiprocessing.connection.wait([worker.conn, worker.proc.sentinel], timeout=1.0)
        return result == ("ping",)
    finally:
        worker.stop()


def run_tasks(tasks: list[tuple], workers: int, start_method: str, done: Callable[[tuple, tuple], None],
              work: Callable[[tuple], tuple], timeout_s: float = 0.0) -> None:
    """Runs `work` over tasks in `workers` processes, one task per process at a time, and hands each
    (task, result) to `done`. A task still running after `timeout_s` (0: no limit) and a task whose
    process dies (e.g. a decoder segfault) get ("error", why); their process is replaced. `work` must be
    picklable (a module-level function) for the 'spawn' and 'forkserver' start methods. Raises
    RuntimeError if no worker can run at all."""
    ctx = multiprocessing.get_context(start_method)
    todo, busy, idle = list(reversed(tasks)), [], []
    answered = False  # whether any worker ever sent a result: a crash before that may be the environment's
    try:
        while todo or busy:
            while todo and len(busy) < workers:
                worker = idle.pop() if idle else _Worker(ctx, work)
                worker.start(todo.pop(), timeout_s)
                busy.append(worker)
            wait_s = min(w.deadline for w in busy) - time.monotonic()
            multiprocessing.connection.wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                                            timeout=None if math.isinf(wait_s) else max(0.0, wait_s))
            for worker in list(busy):
                result = worker.poll()
                if result is None:
                    continue
                busy.remove(worker)
                if result == ("error", CRASHED):
                    worker.stop()
                    if not answered and not _workers_can_run(ctx):
                        raise RuntimeError(
                            f"worker processes cannot run at all ({start_method!r} start); rerun with --workers 0 "
                            "--timeout_s 0 to see why (with 'spawn' the calling script needs an `if __name__ == "
                            "'__main__':` guard)")
                elif worker.proc.is_alive():  # it answered (a timed-out worker was killed)
                    idle.append(worker)
                    answered = True
                done(worker.task, result)
    finally:
        for worker in busy + idle:
            worker.stop()
