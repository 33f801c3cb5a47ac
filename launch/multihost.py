"""Run the same `vtg_jax.main` command on every host of a multi-host job, without a scheduler.

    # All workers of a TPU VM slice (process ids come from the TPU metadata):
    python -m launch.multihost --tpu=my-v5e --zone=us-west4-a --config=configs/grpo.py --workdir=gs://b/r
    # A list of hosts over ssh (host 0 is the coordinator):
    python -m launch.multihost --hosts=node0,node1 --config=configs/grpo.py --workdir=/nfs/r --dry_run

`--dry_run` prints the commands instead of running them. The command builders are pure functions
(tested in tests/launch/test_launchers.py); `run` only starts the processes and waits for them.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Sequence

from launch.common import flag_overrides, shell_command, worker_argv

DEFAULT_PORT = 8476


def _extra_env(items: Sequence[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def tpu_vm_commands(ns: argparse.Namespace) -> list[list[str]]:
    """One `gcloud compute tpus tpu-vm ssh --worker=all` running the worker command everywhere."""
    env = {"VTG_DISTRIBUTED": "auto", **_extra_env(ns.env)}
    remote = shell_command(worker_argv(ns.config, ns.workdir, flag_overrides(ns.override), ns.python), env, ns.repo_dir)
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", ns.tpu, f"--zone={ns.zone}"]
    if ns.project:
        cmd.append(f"--project={ns.project}")
    return [cmd + ["--worker=all", f"--command={remote}"]]


def host_list_env(hosts: Sequence[str], process_id: int, port: int = DEFAULT_PORT) -> dict[str, str]:
    """Env of the process on `hosts[process_id]`: host 0 runs the coordinator service."""
    return {"JAX_COORDINATOR_ADDRESS": f"{hosts[0]}:{port}", "JAX_NUM_PROCESSES": str(len(hosts)),
            "JAX_PROCESS_ID": str(process_id)}


def host_list_commands(ns: argparse.Namespace) -> list[list[str]]:
    """One `ssh HOST '<env> python -m vtg_jax.main ...'` per host, each with its process id."""
    hosts = [h for h in ns.hosts.split(",") if h]
    argv = worker_argv(ns.config, ns.workdir, flag_overrides(ns.override), ns.python)
    return [[*shlex.split(ns.ssh), host,
             shell_command(argv, {**host_list_env(hosts, i, ns.port), **_extra_env(ns.env)}, ns.repo_dir)]
            for i, host in enumerate(hosts)]


def build_commands(ns: argparse.Namespace) -> list[list[str]]:
    if bool(ns.tpu) == bool(ns.hosts):
        raise ValueError("pass exactly one of --tpu (TPU VM slice) or --hosts (ssh host list)")
    if ns.tpu and not ns.zone:
        raise ValueError("--tpu needs --zone")
    return tpu_vm_commands(ns) if ns.tpu else host_list_commands(ns)


def run(commands: Sequence[Sequence[str]]) -> int:
    """Starts every command at once (the processes wait for each other at initialisation) and
    returns the first non-zero exit status, or 0."""
    procs = [subprocess.Popen(list(c)) for c in commands]
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tpu", default=None, help="TPU VM name (runs on --worker=all)")
    p.add_argument("--zone", default=None)
    p.add_argument("--project", default=None)
    p.add_argument("--hosts", default=None, help="comma-separated hosts; the first is the coordinator")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="coordinator port on the first host")
    p.add_argument("--ssh", default="ssh", help="ssh command, e.g. 'ssh -o BatchMode=yes'")
    p.add_argument("--repo_dir", default=None, help="directory to cd into on each worker")
    p.add_argument("--python", default="python")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--override", action="append", default=[], help="config.key=value for vtg_jax.main")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every worker")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    commands = build_commands(ns)
    if ns.dry_run:
        for c in commands:
            print(shlex.join(c))
        return 0
    return run(commands)


if __name__ == "__main__":
    sys.exit(main())
