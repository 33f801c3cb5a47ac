"""Multi-process test harness: run one function in N real JAX processes × M CPU devices each (gloo
collectives, loopback coordinator) and compare with 1 process × N·M devices.

Why real processes: `host_local_to_global`, `process_allgather`, per-process data sharding and
checkpoint writes only show their bugs when `jax.process_count() > 1`; fake devices in one process
cannot. A target is `"module:function"` or `"path/to/file.py:function"`; the function takes no
arguments, runs after `maybe_initialize_distributed()`, and returns a flat dict of arrays that every
process must agree on (gather with `global_to_host`). Workers run as
`python -m vtg_jax.parallel.testing TARGET OUT.npz`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Mapping

import numpy as np

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the coordinator binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_target(target: str) -> Callable[[], Mapping[str, Any]]:
    """The function named by `module:function` or `file.py:function`."""
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise ValueError(f"target {target!r} must look like 'module:function' or 'file.py:function'")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(pathlib.Path(where).stem, where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def worker_env(num_processes: int, devices_per_process: int, process_id: int, port: int,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of one worker: CPU platform, its fake device count, the coordinator settings."""
    env = dict(os.environ if base is None else base)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_NUM_PROCESSES"] = str(num_processes)
    env["JAX_PROCESS_ID"] = str(process_id)
    env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.pop("VTG_DISTRIBUTED", None)
    return env


def _tail(path: pathlib.Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_multiprocess(target: str, out_dir: str | os.PathLike, num_processes: int = 2,
                     devices_per_process: int = 4, timeout: float = 120.0,
                     env: Mapping[str, str] | None = None) -> list[dict[str, np.ndarray]]:
    """Runs `target` in `num_processes` processes; returns each process's result dict.

    Never hangs: past `timeout` seconds (or as soon as one worker fails) every worker's process
    group is killed and the error carries the workers' stderr tails.
    """
    out = pathlib.Path(out_dir) / f"{num_processes}x{devices_per_process}"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for i in range(num_processes):
        log = open(out / f"process_{i}.log", "wb")  # noqa: SIM115 - closed below.
        cmd = [sys.executable, "-m", "vtg_jax.parallel.testing", target, str(out / f"process_{i}.npz")]
        procs.append((subprocess.Popen(cmd, env=worker_env(num_processes, devices_per_process, i, port, env),
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    deadline, failure = time.monotonic() + timeout, None
    while failure is None and any(p.poll() is None for p, _ in procs):
        if time.monotonic() > deadline:
            failure = f"timed out after {timeout:.0f}s"
        elif any(p.returncode not in (None, 0) for p, _ in procs):
            failure = "a worker failed"
        time.sleep(0.05)
    for p, log in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
    if failure is None and any(p.returncode for p, _ in procs):
        failure = "a worker failed"
    if failure:
        logs = "\n".join(f"--- process {i} (rc={p.returncode}) ---\n{_tail(out / f'process_{i}.log')}"
                         for i, (p, _) in enumerate(procs))
        raise RuntimeError(f"{target} on {num_processes}x{devices_per_process} devices: {failure}\n{logs}")
    return [dict(np.load(out / f"process_{i}.npz")) for i in range(num_processes)]


def assert_layouts_agree(target: str, out_dir: str | os.PathLike, layouts: tuple[tuple[int, int], ...] = ((2, 4), (1, 8)),
                         atol: float = 1e-6, rtol: float = 1e-6, timeout: float = 120.0) -> dict[str, np.ndarray]:
    """Runs `target` under each (processes, devices per process) layout and asserts that every
    process of every layout returned the same arrays; returns the first layout's result."""
    results = [(layout, i, r) for layout in layouts
               for i, r in enumerate(run_multiprocess(target, out_dir, *layout, timeout=timeout))]
    (ref_layout, _, ref) = results[0]
    for layout, i, r in results[1:]:
        if sorted(r) != sorted(ref):
            raise AssertionError(f"keys differ: {layout} process {i} {sorted(r)} vs {sorted(ref)}")
        for k in ref:
            np.testing.assert_allclose(r[k], ref[k], atol=atol, rtol=rtol,
                                       err_msg=f"{k}: {layout} process {i} vs {ref_layout} process 0")
    return ref


def _worker_main(target: str, out_file: str) -> None:
    import jax  # pylint: disable=import-outside-toplevel

    from vtg_jax.parallel.distributed import maybe_initialize_distributed  # pylint: disable=import-outside-toplevel

    jax.config.update("jax_default_matmul_precision", "highest")
    maybe_initialize_distributed()
    result = {k: np.asarray(v) for k, v in load_target(target)().items()}
    np.savez(out_file + ".tmp.npz", **result)
    os.replace(out_file + ".tmp.npz", out_file)


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2])
