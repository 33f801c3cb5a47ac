"""One run per workdir: an exclusive lock file that names its owner.

Why: two processes on one workdir silently interleave checkpoints (the second resumes from the
first's latest step, deletes its in-progress save, and both write metrics.jsonl). The second one must
stop before it touches anything, and say which run holds the directory.

    with WorkdirLock(workdir):        # raises WorkdirBusy naming the owner (host, pid, start time)
        train(...)

The lock is `<workdir>/vtg_jax.lock`, held with `fcntl.flock`: the kernel releases it when the owner
exits, however it dies (SIGKILL, OOM kill), so a lock left behind by a dead run is stale by
construction and the next run takes it over (logging who held it). On a file system without flock
(some network mounts) the file's pid is checked instead: the lock is stale when that pid no longer
runs on this host; a lock from another host is then respected until the file is deleted.

Re-entrant within a process (the CLI locks the workdir, `train()` locks it again); with several JAX
processes only process 0 takes it and every process learns the outcome, so all stop together.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Optional

log = logging.getLogger(__name__)

LOCK_NAME = "vtg_jax.lock"
_HELD: dict[str, list] = {}  # realpath -> [fd, depth, owns the file] of the locks this process holds


class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir."""


def _owner_text(info: dict[str, Any]) -> str:
    cmd = " ".join(info.get("argv") or [])
    return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"
            + (f" ({cmd})" if cmd else ""))


def _read_owner(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(workdir: str, info: dict[str, Any]) -> WorkdirBusy:
    return WorkdirBusy(f"workdir {workdir} is in use by another run: {_owner_text(info)}. Wait for it to "
                       f"finish or stop it, or use another --workdir; nothing was changed here.")


class WorkdirLock:
    """Context manager holding `<workdir>/vtg_jax.lock` (see the module docstring)."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self._key = ""

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lock or raises WorkdirBusy (on every process when several run)."""
        import jax

        os.makedirs(self.workdir, exist_ok=True)
        self._key = os.path.realpath(self.path)
        if self._key in _HELD:
            _HELD[self._key][1] += 1
            return
        error: Optional[WorkdirBusy] = None
        fd, owner = None, jax.process_index() == 0
        if owner:
            try:
                fd = self._take()
            except WorkdirBusy as e:
                error = e
        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
            if not int(ok) and error is None:
                error = WorkdirBusy(f"workdir {self.workdir} is in use by another run (see process 0's log)")
        if error is not None:
            raise error
        _HELD[self._key] = [fd, 1, owner]

    def _take(self) -> Optional[int]:
        """The locked file descriptor, with our owner record written into the file."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(self.workdir, _read_owner(self.path)) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                return self._take_without_flock()
            try:  # the previous owner may have removed the file between our open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_owner(self.path)
            if previous:
                log.warning("workdir %s was held by a run that is gone (%s); taking it over", self.workdir,
                            _owner_text(previous))
            self._write(fd)
            return fd

    def _take_without_flock(self) -> None:
        previous = _read_owner(self.path)
        if previous:
            gone = previous.get("host") == socket.gethostname() and not _pid_alive(int(previous.get("pid", 0)))
            if not gone:
                raise _busy(self.workdir, previous)
            log.warning("workdir %s was held by a run that is gone (%s); taking it over", self.workdir,
                        _owner_text(previous))
            os.remove(self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise _busy(self.workdir, _read_owner(self.path)) from None
        self._write(fd)
        os.close(fd)
        return None

    @staticmethod
    def _write(fd: int) -> None:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "argv": sys.argv,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)

    def release(self) -> None:
        """Drops one level; the outermost release removes the file and unlocks."""
        held = _HELD.get(self._key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self._key]
        fd, _, owner = held
        try:
            if owner and (fd is None or os.fstat(fd).st_ino == os.stat(self.path).st_ino):
                os.remove(self.path)  # still ours: remove while locked, so no one locks a dead file
        except FileNotFoundError:
            pass
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
