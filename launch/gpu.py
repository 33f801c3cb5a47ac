"""Multi-node GPU launcher for SLURM: an sbatch script whose `srun` starts one JAX process per node
(or per GPU), each deriving its role from SLURM's variables — no torchrun, no hand-kept host files.

    python -m launch.gpu sbatch --nodes=4 --gpus_per_node=8 --config=configs/grpo.py \
        --workdir=/nfs/runs/grpo --partition=a3 --dry_run         # print the script
    python -m launch.gpu env                                      # inside srun: `export` lines

`slurm_node_env` maps SLURM_* to JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (and
JAX_LOCAL_DEVICE_IDS with one process per GPU) plus GPU XLA flags; `sbatch_script` writes the job.
Both are pure and unit-tested.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from typing import Mapping, Sequence

from launch.common import flag_overrides, shell_command, worker_argv

DEFAULT_PORT = 8476
# Overlap collectives with compute and batch small collectives together (XLA GPU flags).
GPU_XLA_FLAGS: tuple[str, ...] = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
    "--xla_gpu_reduce_scatter_combine_threshold_bytes=134217728",
)


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: `gpu[003-005,007],cpu1` → `gpu003` (what scontrol would
    print first), so the coordinator address needs no `scontrol` call on the node."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def slurm_node_env(slurm: Mapping[str, str], port: int = DEFAULT_PORT, tasks_per_node: int = 1,
                   xla_flags: Sequence[str] = GPU_XLA_FLAGS) -> dict[str, str]:
    """The env one SLURM task needs for `maybe_initialize_distributed` and fast GPU collectives."""
    nodelist = slurm.get("SLURM_JOB_NODELIST") or slurm.get("SLURM_NODELIST")
    if not nodelist or "SLURM_PROCID" not in slurm:
        raise ValueError("not inside a SLURM job step (SLURM_JOB_NODELIST / SLURM_PROCID unset); run under srun")
    ntasks = slurm.get("SLURM_NTASKS") or slurm.get("SLURM_NPROCS") or slurm.get("SLURM_NNODES") or "1"
    env = {"JAX_COORDINATOR_ADDRESS": f"{first_host(nodelist)}:{port}", "JAX_NUM_PROCESSES": str(ntasks),
           "JAX_PROCESS_ID": str(slurm["SLURM_PROCID"])}
    if tasks_per_node > 1:  # One process per GPU: each sees only its own local device.
        env["JAX_LOCAL_DEVICE_IDS"] = str(slurm.get("SLURM_LOCALID", "0"))
    flags = " ".join([*xla_flags, slurm.get("XLA_FLAGS", "")]).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def sbatch_script(ns: argparse.Namespace) -> str:
    """The sbatch file: resources, then one srun whose tasks set their env and run vtg_jax.main."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={ns.job_name}", f"#SBATCH --nodes={ns.nodes}",
             f"#SBATCH --ntasks-per-node={ns.tasks_per_node}", f"#SBATCH --gpus-per-node={ns.gpus_per_node}",
             "#SBATCH --exclusive", f"#SBATCH --time={ns.time}", f"#SBATCH --output={ns.output}"]
    lines += [f"#SBATCH --{key}={value}" for key, value in (("partition", ns.partition), ("account", ns.account))
              if value]
    lines += [f"#SBATCH {extra}" for extra in ns.sbatch_arg]
    env_cmd = shlex.join([ns.python, "-m", "launch.gpu", "env", f"--port={ns.port}",
                          f"--tasks_per_node={ns.tasks_per_node}"])
    run = shell_command(worker_argv(ns.config, ns.workdir, flag_overrides(ns.override), ns.python))
    task = f'eval "$({env_cmd})" && exec {run}'
    lines += ["set -euo pipefail", f"cd {shlex.quote(ns.repo_dir)}",
              f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(task)}", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print `export` lines for this SLURM task")
    sb = sub.add_parser("sbatch", help="write (or print) and submit the sbatch script")
    for q in (env, sb):
        q.add_argument("--port", type=int, default=DEFAULT_PORT)
        q.add_argument("--tasks_per_node", type=int, default=1, help="1 = a process per node; G = per GPU")
    sb.add_argument("--nodes", type=int, required=True)
    sb.add_argument("--gpus_per_node", type=int, default=8)
    sb.add_argument("--config", required=True)
    sb.add_argument("--workdir", required=True)
    sb.add_argument("--override", action="append", default=[], help="config.key=value for vtg_jax.main")
    sb.add_argument("--job_name", default="vtg_jax")
    sb.add_argument("--time", default="24:00:00")
    sb.add_argument("--output", default="slurm-%j.out")
    sb.add_argument("--partition", default=None)
    sb.add_argument("--account", default=None)
    sb.add_argument("--sbatch_arg", action="append", default=[], help="extra #SBATCH line, e.g. --qos=high")
    sb.add_argument("--repo_dir", default=".", help="checkout of this repository on the nodes")
    sb.add_argument("--python", default="python")
    sb.add_argument("--dry_run", action="store_true", help="print the script, submit nothing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    if ns.command == "env":
        for key, value in slurm_node_env(os.environ, ns.port, ns.tasks_per_node).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    script = sbatch_script(ns)
    if ns.dry_run:
        print(script, end="")
        return 0
    return subprocess.run(["sbatch"], input=script, text=True, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
