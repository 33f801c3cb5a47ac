"""Exact commands, env vars and scripts of the launchers (launch/*) for given inputs."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `launch` is a top-level directory, not an installed package.

from launch import gpu, multihost, xm_tpu  # noqa: E402
from launch.common import shell_command, worker_argv  # noqa: E402


def test_worker_command_is_shared():
    assert worker_argv("configs/sft.py:tiny", "/w", ["--config.seed=1"]) == [
        "python", "-m", "vtg_jax.main", "--config=configs/sft.py:tiny", "--workdir=/w", "--config.seed=1"]
    assert shell_command(["python", "-m", "x", "--a=b c"], {"K": "v w"}, "/repo") == \
        "cd /repo && K='v w' python -m x '--a=b c'"
    assert shell_command(["x"], cwd="~/my dir") == "cd ~/'my dir' && x"


@pytest.mark.parametrize("accelerator,expected", [
    ("v5litepod-16", ("v5litepod-16", "v5e", 16, 4, "4x4")),
    ("v5e-8", ("v5litepod-8", "v5e", 8, 1, "2x4")),
    ("v5litepod-256", ("v5litepod-256", "v5e", 256, 64, "16x16")),
    ("v5p-8", ("v5p-8", "v5p", 4, 1, "2x2x1")),
    ("v5p-32", ("v5p-32", "v5p", 16, 4, "2x2x4")),
])
def test_parse_tpu(accelerator, expected):
    t = xm_tpu.parse_tpu(accelerator)
    assert (t.accelerator, t.version, t.chips, t.hosts, t.topology) == expected


def test_parse_tpu_errors():
    for bad, match in [("v4-8", "unsupported"), ("v5p-33", "even"), ("v5p-24", "no default topology")]:
        with pytest.raises(ValueError, match=match):
            xm_tpu.parse_tpu(bad)
    with pytest.raises(ValueError, match="does not have the 16 chips"):
        xm_tpu.parse_tpu("v5litepod-16", "2x4")
    assert xm_tpu.parse_tpu("v5p-24", "2x2x3").hosts == 3


def test_xm_build_job():
    ns = xm_tpu.parse_args(["--accelerator=v5litepod-16", "--config=configs/grpo.py:tiny", "--workdir=gs://b/run",
                            "--override=config.seed=3", "--env=TPU_STDERR_LOG_LEVEL=0",
                            "--libtpu_init_args=--xla_tpu_enable_async_collective_fusion=true"])
    job = xm_tpu.build_job(ns)
    assert (job.title, job.xm_resource, job.module, job.tpu.topology) == (
        "vtg_jax-v5litepod-16", "v5litepod", "vtg_jax.main", "4x4")
    assert job.args == {"config": "configs/grpo.py:tiny", "workdir": "gs://b/run", "config.seed": "3"}
    assert job.env_vars == {"VTG_DISTRIBUTED": "auto", "TPU_STDERR_LOG_LEVEL": "0",
                            "LIBTPU_INIT_ARGS": "--xla_tpu_enable_async_collective_fusion=true"}
    assert job.worker_command == (
        "VTG_DISTRIBUTED=auto LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true TPU_STDERR_LOG_LEVEL=0 "
        "python -m vtg_jax.main --config=configs/grpo.py:tiny --workdir=gs://b/run --config.seed=3")
    single = xm_tpu.build_job(xm_tpu.parse_args(["--accelerator=v5e-4", "--config=c", "--workdir=w"]))
    assert single.env_vars == {"VTG_DISTRIBUTED": "off"}


def test_xm_dry_run_needs_no_xmanager(capsys):
    assert xm_tpu.main(["--accelerator=v5p-32", "--config=c.py", "--workdir=w", "--dry_run"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["tpu"]["hosts"] == 4 and job["xm_resource"] == "v5p"
    assert "xmanager" not in sys.modules


def test_multihost_tpu_vm_command():
    ns = multihost.parse_args(["--tpu=my-v5e", "--zone=us-west4-a", "--project=p", "--config=configs/grpo.py",
                               "--workdir=gs://b/r", "--repo_dir=~/vtg_jax", "--override=config.seed=1"])
    assert multihost.build_commands(ns) == [[
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e", "--zone=us-west4-a", "--project=p", "--worker=all",
        "--command=cd ~/vtg_jax && VTG_DISTRIBUTED=auto python -m vtg_jax.main --config=configs/grpo.py "
        "--workdir=gs://b/r --config.seed=1"]]


def test_multihost_host_list_commands(capsys):
    argv = ["--hosts=node0,node1", "--port=9000", "--ssh=ssh -o BatchMode=yes", "--config=c.py", "--workdir=/s/r",
            "--env=NCCL_DEBUG=WARN"]
    cmds = multihost.build_commands(multihost.parse_args(argv))
    assert cmds[1] == ["ssh", "-o", "BatchMode=yes", "node1",
                       "JAX_COORDINATOR_ADDRESS=node0:9000 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 NCCL_DEBUG=WARN "
                       "python -m vtg_jax.main --config=c.py --workdir=/s/r"]
    assert multihost.host_list_env(["a", "b", "c"], 2) == {
        "JAX_COORDINATOR_ADDRESS": "a:8476", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
    assert multihost.main([*argv, "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ssh -o BatchMode=yes node0 'JAX_COORDINATOR_ADDRESS=node0:9000")
    for bad in (["--config=c", "--workdir=w"], ["--tpu=t", "--hosts=a", "--zone=z", "--config=c", "--workdir=w"],
                ["--tpu=t", "--config=c", "--workdir=w"]):
        with pytest.raises(ValueError):
            multihost.build_commands(multihost.parse_args(bad))


def test_multihost_sh_dry_run():
    out = subprocess.run(["bash", str(REPO / "launch/multihost.sh"), "--hosts=a,b", "--config=c", "--workdir=w",
                          "--dry_run"], env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[1] == ("ssh b 'JAX_COORDINATOR_ADDRESS=a:8476 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 "
                                   "python -m vtg_jax.main --config=c --workdir=w'")


def test_gpu_first_host():
    assert gpu.first_host("gpu[003-005,007],cpu1") == "gpu003"
    assert gpu.first_host("node7,node8") == "node7"
    assert gpu.first_host("a3-[12,14]") == "a3-12"
    assert gpu.first_host("solo") == "solo"


def test_gpu_slurm_node_env():
    slurm = {"SLURM_JOB_NODELIST": "gpu[003-004]", "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}
    env = gpu.slurm_node_env(slurm, port=1234, xla_flags=("--xla_gpu_enable_latency_hiding_scheduler=true",))
    assert env == {"JAX_COORDINATOR_ADDRESS": "gpu003:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
                   "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true"}
    per_gpu = gpu.slurm_node_env({**slurm, "SLURM_NTASKS": "16", "SLURM_PROCID": "13", "SLURM_LOCALID": "5",
                                  "XLA_FLAGS": "--mine"}, tasks_per_node=8)
    assert per_gpu["JAX_LOCAL_DEVICE_IDS"] == "5" and per_gpu["JAX_PROCESS_ID"] == "13"
    assert per_gpu["XLA_FLAGS"] == " ".join([*gpu.GPU_XLA_FLAGS, "--mine"])
    with pytest.raises(ValueError, match="run under srun"):
        gpu.slurm_node_env({})


def test_gpu_sbatch_script():
    ns = gpu.parse_args(["sbatch", "--nodes=2", "--gpus_per_node=8", "--config=configs/grpo.py", "--workdir=/s/r",
                         "--partition=a3", "--sbatch_arg=--qos=high", "--repo_dir=/src/vtg", "--port=9000"])
    assert gpu.sbatch_script(ns) == "\n".join([
        "#!/bin/bash", "#SBATCH --job-name=vtg_jax", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8", "#SBATCH --exclusive", "#SBATCH --time=24:00:00", "#SBATCH --output=slurm-%j.out",
        "#SBATCH --partition=a3", "#SBATCH --qos=high", "set -euo pipefail", "cd /src/vtg",
        "srun --kill-on-bad-exit=1 bash -c 'eval \"$(python -m launch.gpu env --port=9000 --tasks_per_node=1)\" && "
        "exec python -m vtg_jax.main --config=configs/grpo.py --workdir=/s/r'", ""])


def test_gpu_env_subcommand_and_xla_flags_parse():
    """`launch.gpu env` prints the exports, and XLA accepts the default GPU flags (an unknown flag
    would abort every process at start-up)."""
    slurm = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-m", "launch.gpu", "env"], cwd=REPO, env={**base, **slurm},
                         capture_output=True, text=True, check=True).stdout
    assert "export JAX_COORDINATOR_ADDRESS=n1:8476\n" in out and "export JAX_PROCESS_ID=0\n" in out
    check = subprocess.run([sys.executable, "-c", "import jax; print(len(jax.devices()))"],
                           env={**base, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(gpu.GPU_XLA_FLAGS)},
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-2000:]
