"""XManager launcher for TPU v5e / v5p slices.

    python -m launch.xm_tpu --accelerator=v5p-32 --config=configs/grpo.py:qwen2_5_vl_7b \
        --workdir=gs://bucket/runs/grpo --dry_run

Every worker (host) of the slice runs the same `python -m vtg_jax.main ...`; with
`VTG_DISTRIBUTED=auto` each process learns its id and the coordinator from the TPU VM metadata
(jax's own cluster detection). The job is described by pure functions (`parse_tpu`, `build_job`)
so it is tested without xmanager; xmanager is imported only by `launch_job`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from typing import Sequence

from launch.common import MODULE, flag_overrides, shell_command, worker_argv

CHIPS_PER_HOST = 4  # v5e and v5p multi-host slices: 4 chips per TPU VM worker.
# Default topologies by chip count (the ones Cloud TPU offers); others need --topology.
V5E_TOPOLOGIES = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
V5P_TOPOLOGIES = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
                  256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
# XManager resource names per TPU version (override with --xm_resource for your xmanager build).
XM_RESOURCES = {"v5e": "v5litepod", "v5p": "v5p"}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """One TPU slice: `accelerator` as Cloud TPU names it, chips, TPU VM hosts, physical topology."""

    accelerator: str
    version: str
    chips: int
    hosts: int
    topology: str


def parse_tpu(accelerator: str, topology: str | None = None) -> TpuSlice:
    """`v5litepod-16` (alias `v5e-16`: 16 chips) or `v5p-32` (32 TensorCores = 16 chips)."""
    m = re.fullmatch(r"(v5litepod|v5e|v5p)-(\d+)", accelerator)
    if not m:
        raise ValueError(f"unsupported accelerator {accelerator!r}; expected v5litepod-N, v5e-N or v5p-N")
    version = "v5p" if m.group(1) == "v5p" else "v5e"
    n = int(m.group(2))
    chips = n // 2 if version == "v5p" else n
    if version == "v5p" and n % 2:
        raise ValueError(f"{accelerator}: v5p sizes count TensorCores (2 per chip) and must be even")
    table = V5P_TOPOLOGIES if version == "v5p" else V5E_TOPOLOGIES
    topology = topology or table.get(chips)
    if topology is None:
        raise ValueError(f"{accelerator}: no default topology for {chips} chips; pass --topology")
    if math.prod(int(d) for d in topology.split("x")) != chips:
        raise ValueError(f"topology {topology} does not have the {chips} chips of {accelerator}")
    # Single-host v5e slices (up to 8 chips) sit on one VM; everything else has 4 chips per host.
    hosts = 1 if (version == "v5e" and chips <= 8) else max(1, chips // CHIPS_PER_HOST)
    name = f"v5litepod-{n}" if version == "v5e" else accelerator
    return TpuSlice(name, version, chips, hosts, topology)


@dataclasses.dataclass(frozen=True)
class XmJob:
    """Everything `launch_job` hands to XManager, as plain data."""

    title: str
    tpu: TpuSlice
    xm_resource: str
    module: str
    args: dict[str, str]
    env_vars: dict[str, str]
    worker_command: str
    base_image: str


def build_job(ns: argparse.Namespace) -> XmJob:
    """The job for parsed flags: TPU resources, `vtg_jax.main` flags, env vars, worker command."""
    tpu = parse_tpu(ns.accelerator, ns.topology)
    env = {"VTG_DISTRIBUTED": "auto" if tpu.hosts > 1 else "off"}
    if ns.libtpu_init_args:
        env["LIBTPU_INIT_ARGS"] = ns.libtpu_init_args
    for item in ns.env:
        key, _, value = item.partition("=")
        env[key] = value
    args = {"config": ns.config, "workdir": ns.workdir}
    for item in flag_overrides(ns.override):
        key, _, value = item[2:].partition("=")
        args[key] = value
    extra = [f"--{k}={v}" for k, v in args.items() if k not in ("config", "workdir")]
    command = shell_command(worker_argv(ns.config, ns.workdir, extra), env)
    return XmJob(title=ns.title or f"vtg_jax-{tpu.accelerator}", tpu=tpu,
                 xm_resource=ns.xm_resource or XM_RESOURCES[tpu.version], module=MODULE, args=args,
                 env_vars=env, worker_command=command, base_image=ns.base_image)


def launch_job(job: XmJob, repo_path: str = ".") -> None:
    """Creates the XManager experiment (needs `pip install xmanager` and its cloud setup)."""
    from xmanager import xm, xm_local  # pylint: disable=import-outside-toplevel

    with xm_local.create_experiment(experiment_title=job.title) as experiment:
        [executable] = experiment.package([xm.python_container(
            executor_spec=xm_local.Vertex.Spec(), path=repo_path, base_image=job.base_image,
            entrypoint=xm.ModuleName(job.module), use_deep_module=True)])
        requirements = xm.JobRequirements(**{job.xm_resource: xm.Topology(job.tpu.topology)})
        experiment.add(xm.Job(executable=executable, executor=xm_local.Vertex(requirements=requirements),
                              args=job.args, env_vars=job.env_vars))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", required=True, help="v5litepod-16, v5e-32, v5p-32, ...")
    p.add_argument("--topology", default=None, help="physical topology, e.g. 4x4 or 2x4x4 (default by size)")
    p.add_argument("--config", required=True, help="config file[:arg] for vtg_jax.main")
    p.add_argument("--workdir", required=True, help="output directory (a gs:// path on Cloud TPU)")
    p.add_argument("--override", action="append", default=[], help="config.key=value for vtg_jax.main")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every worker")
    p.add_argument("--libtpu_init_args", default="", help="XLA/libtpu flags for LIBTPU_INIT_ARGS")
    p.add_argument("--xm_resource", default=None, help="xm.JobRequirements resource name override")
    p.add_argument("--base_image", default="python:3.11")
    p.add_argument("--title", default=None)
    p.add_argument("--dry_run", action="store_true", help="print the job as JSON and launch nothing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    job = build_job(ns)
    if ns.dry_run:
        print(json.dumps(dataclasses.asdict(job), indent=2))
        return 0
    launch_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
