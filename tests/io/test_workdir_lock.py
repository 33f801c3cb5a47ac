"""One run per workdir: the lock is exclusive across processes, re-entrant within one, released on
exit, and taken over (naming the dead owner) after its owner was killed."""
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from vtg_jax.io.workdir_lock import LOCK_NAME, WorkdirBusy, WorkdirLock

_TRY = ("import sys\nfrom vtg_jax.io.workdir_lock import WorkdirLock, WorkdirBusy\n"
        "try:\n    WorkdirLock(sys.argv[1]).acquire()\nexcept WorkdirBusy as e:\n    print(e)\n    sys.exit(3)\n")


def _try_in_other_process(workdir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _TRY, str(workdir)], capture_output=True, text=True, timeout=120)


def test_lock_is_exclusive_reentrant_and_released(tmp_path):
    with WorkdirLock(str(tmp_path)):
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with WorkdirLock(str(tmp_path)):  # the CLI holds it and train() takes it again
            pass
        assert (tmp_path / LOCK_NAME).exists()
        other = _try_in_other_process(tmp_path)
        assert other.returncode == 3
        assert f"pid {os.getpid()}" in other.stdout and f"host {owner['host']}" in other.stdout
        assert "nothing was changed here" in other.stdout
    assert not (tmp_path / LOCK_NAME).exists()
    assert _try_in_other_process(tmp_path).returncode == 0  # free again


def test_lock_of_a_killed_owner_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", _TRY + "import time\nprint('held', flush=True)\ntime.sleep(600)\n",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"):
            WorkdirLock(str(tmp_path)).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level(logging.WARNING), WorkdirLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text and "is gone" in caplog.text
