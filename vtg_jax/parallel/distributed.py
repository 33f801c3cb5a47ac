"""Multi-host plumbing: start `jax.distributed` when (and only when) several processes run, move each
process's slice of the batch into global arrays, and bring results back to the hosts.

The same `main.py` runs on a laptop (one process, nothing to initialise), on SLURM GPU nodes, on TPU VM
workers and in the CPU multi-process tests, so every decision below is read from the environment
(and a run config's `distributed` section) rather than from flags each launcher would have to get right.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vtg_jax.parallel.rules import DEFAULT_RULES, Rules, logical_to_spec

# Env vars our launchers set (launch/*); the names follow jax's own JAX_COORDINATOR_* convention.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"
# "auto": let jax detect the cluster (TPU VM metadata, SLURM, k8s, MPI); "off": never initialise.
ENV_MODE = "VTG_DISTRIBUTED"

# The keys of a run config's `distributed` section (None / "": the environment decides).
SECTION_KEYS = ("mode", "coordinator_address", "num_processes", "process_id", "local_device_ids")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """What `jax.distributed.initialize` gets; None fields are left to jax's cluster detection."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    cpu_collectives: bool = False
    initialization_timeout: int = 300

    def initialize_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(coordinator_address=self.coordinator_address,
                                      num_processes=self.num_processes, process_id=self.process_id,
                                      initialization_timeout=self.initialization_timeout)
        if self.local_device_ids is not None:
            kwargs["local_device_ids"] = list(self.local_device_ids)
        return kwargs


def _section_values(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `distributed` section's values (all None without one); a key missing or unknown is an error."""
    if section is None:
        return dict.fromkeys(SECTION_KEYS)
    keys = set(section.keys())
    if keys != set(SECTION_KEYS):
        raise KeyError(f"a distributed section has the keys {SECTION_KEYS}, got {sorted(keys)}")
    return {k: section[k] for k in SECTION_KEYS}


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _slurm_tasks(env: Mapping[str, str]) -> int:
    if "SLURM_JOB_ID" not in env:
        return 0
    return int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or 1)


def _jax_detects_cluster() -> bool:
    """Whether a cluster type jax auto-detects (Cloud TPU VM, GKE, k8s, Open MPI) is present with
    several processes. SLURM is left to `_slurm_tasks`, which ignores one-task jobs. Uses jax's
    private registry, so any failure means "no"."""
    try:
        from jax._src.clusters import ClusterEnv  # pylint: disable=import-outside-toplevel
        found = [c for c in ClusterEnv._cluster_types
                 if not c.opt_in_only_method and c.__name__ != "SlurmCluster" and c.is_env_present()]
    except Exception:  # noqa: BLE001 - detection is best effort.
        return False
    for cluster in found:
        try:
            if cluster.get_process_count() > 1:
                return True
        except Exception:  # noqa: BLE001 - count unknown (e.g. metadata not ready): let jax decide.
            return True
    return False


def _platform(env: Mapping[str, str]) -> str:
    platforms = env.get("JAX_PLATFORMS") or (jax.config.jax_platforms or "")
    return str(platforms).split(",")[0].strip().lower()


def distributed_settings(section: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                         detect_cluster: bool = True) -> DistributedSettings | None:
    """Settings for `jax.distributed.initialize`, or None when this is a single-process run.

    `section`: a run config's `distributed` section (`SECTION_KEYS`; None: no config, the environment
    alone); its values win over the env vars of `env` (default `os.environ`) where they are not None / "".
    Multi-process is decided by, in order: mode "off"; an explicit process count; mode "auto"; a SLURM job
    with several tasks; a cluster jax itself detects. Pure apart from that last check
    (`detect_cluster=False` skips it), so it is unit-testable.
    """
    values = _section_values(section)
    env = os.environ if env is None else env
    mode = str(values["mode"] or env.get(ENV_MODE, "")).lower()
    if mode == "off":
        return None
    def pick(key: str, env_key: str) -> Any:
        value = values[key]
        return env.get(env_key) if value is None else value

    num = _int_or_none(pick("num_processes", ENV_NUM_PROCESSES))
    devices = pick("local_device_ids", ENV_LOCAL_DEVICE_IDS)
    if isinstance(devices, str):
        devices = tuple(int(d) for d in devices.split(",") if d.strip())
    settings = DistributedSettings(
        coordinator_address=pick("coordinator_address", ENV_COORDINATOR) or None,
        num_processes=num,
        process_id=_int_or_none(pick("process_id", ENV_PROCESS_ID)),
        local_device_ids=tuple(devices) if devices is not None else None,
        cpu_collectives=_platform(env) == "cpu")
    if num is not None:
        if num <= 1:
            return None
        if settings.coordinator_address is None or settings.process_id is None:
            if not (_slurm_tasks(env) > 1 or (detect_cluster and _jax_detects_cluster())):
                raise ValueError(f"{num} processes configured but {ENV_COORDINATOR} / {ENV_PROCESS_ID} "
                                 "are missing and no cluster (SLURM, Cloud TPU) was detected to fill them")
        return settings
    if mode == "auto" or _slurm_tasks(env) > 1 or (detect_cluster and _jax_detects_cluster()):
        return settings
    return None


def maybe_initialize_distributed(section: Mapping[str, Any] | None = None,
                                 env: Mapping[str, str] | None = None) -> bool:
    """Starts `jax.distributed` if several processes are configured (`distributed_settings` of a run
    config's `distributed` section and the environment); returns whether it is running.

    Idempotent (a second call, or one after a manual initialise, is a no-op). Must run before
    anything touches devices. On CPU it selects gloo collectives, without which cross-process
    computations fail at the first collective.
    """
    if jax.distributed.is_initialized():
        return True
    settings = distributed_settings(section, env)
    if settings is None:
        return False
    if settings.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings.initialize_kwargs())
    return True


def is_main_process() -> bool:
    """True on process 0: the one that writes checkpoints' metadata, logs and plots."""
    return jax.process_index() == 0


def batch_spec(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> PartitionSpec:
    """Spec of a batch-leading array: dim 0 over the `batch` rule's mesh axes, the rest replicated."""
    return logical_to_spec(("batch",), rules, mesh)


def local_batch_slice(mesh: Mesh, global_batch_size: int, spec: PartitionSpec | None = None) -> slice:
    """The rows of the global batch this process must load, so a loader can shard by them.

    With the mesh's device order, each process owns one contiguous block; a layout where it would
    not (e.g. processes interleaved along the batch axes) is rejected rather than mis-assembled.
    """
    sharding = NamedSharding(mesh, spec if spec is not None else batch_spec(mesh))
    rows = {(idx[0].start or 0, global_batch_size if idx[0].stop is None else idx[0].stop)
            for dev, idx in sharding.devices_indices_map((global_batch_size,)).items()
            if dev.process_index == jax.process_index()}
    covered = sorted(rows)
    if any(a[1] != b[0] for a, b in zip(covered, covered[1:])):
        raise ValueError(f"process {jax.process_index()} owns non-contiguous batch rows {covered}")
    return slice(covered[0][0], covered[-1][1])


def rows_of_processes(row_owners: Mapping[Any, tuple[int, int]], process_of: Any, num_processes: int,
                      global_batch_size: int, num_micro: int = 1) -> list[np.ndarray]:
    """The global-batch rows each process holds, from a micro-batch's row ranges per device
    (`row_owners`: device -> (start, stop) in [0, b), b = global_batch_size / num_micro) and each device's
    process (`process_of(device)`): row a·b + j for every micro-batch a and every j its devices hold.
    A row held by devices of several processes (batch axes that do not span the processes) is in each."""
    if num_micro < 1 or global_batch_size % num_micro:
        raise ValueError(f"batch size {global_batch_size} is not divisible into {num_micro} micro-batches")
    b = global_batch_size // num_micro
    held: list[set[int]] = [set() for _ in range(num_processes)]
    for dev, (start, stop) in row_owners.items():
        held[process_of(dev)].update(range(start, stop))
    return [np.asarray([a * b + j for a in range(num_micro) for j in sorted(h)], np.int64) for h in held]


def process_rows(mesh: Mesh, global_batch_size: int, num_micro: int = 1,
                 spec: PartitionSpec | None = None) -> list[np.ndarray]:
    """Per process, the rows of each global batch it holds when the step shards every micro-batch's rows
    over the batch axes (`batch_spec`): what per-host input reads on that process (`rows_of_processes`)."""
    b = global_batch_size // max(num_micro, 1)
    sharding = NamedSharding(mesh, spec if spec is not None else batch_spec(mesh))
    owners = {dev: (idx[0].start or 0, b if idx[0].stop is None else idx[0].stop)
              for dev, idx in sharding.devices_indices_map((b,)).items()}
    return rows_of_processes(owners, lambda dev: dev.process_index, jax.process_count(), global_batch_size,
                             num_micro)


def host_local_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh,
                         specs: PartitionSpec | Mapping[str, PartitionSpec] | None = None) -> dict[str, jax.Array]:
    """Global jax Arrays from each process's local rows (`local_batch_slice`) of every array.

    `specs`: one PartitionSpec for all arrays, or a dict per key (missing keys, and None, use
    `batch_spec`); a key's spec may be a dict of specs for a dict of arrays (e.g. `vision_inputs`). With
    one process this is a plain sharded `device_put` of the whole batch.
    """
    default = batch_spec(mesh)

    def spec_for(key: str) -> Any:
        if isinstance(specs, PartitionSpec):
            return specs
        return (specs or {}).get(key, default)

    def put(value: Any, spec: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: put(v, spec.get(k, default) if isinstance(spec, Mapping) else spec) for k, v in value.items()}
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), np.asarray(value))

    return {k: put(v, spec_for(k)) for k, v in batch.items()}


def global_to_local(tree: Any, mesh: Mesh, spec: PartitionSpec | None = None) -> Any:
    """This process's rows of every global array of `tree` as numpy, in the order it gave them to
    `host_local_to_global` (its inverse: what a process put in comes back to it, nothing is gathered);
    `spec`: the arrays' layout (default `batch_spec`). With one process, the whole arrays."""
    spec = batch_spec(mesh) if spec is None else spec
    local = multihost_utils.global_array_to_host_local_array(tree, mesh, jax.tree.map(lambda _: spec, tree))
    return jax.tree.map(np.array, local)  # writable copies (callers edit them, e.g. stop strings)


def max_over_processes(values: Any) -> np.ndarray:
    """The elementwise maximum over processes of an int vector every process passes (one small
    all-gather), e.g. the lengths the processes' arrays must agree on; the vector itself on one process."""
    mine = np.asarray(values, np.int64).reshape(-1)
    if jax.process_count() == 1:
        return mine
    return np.asarray(global_to_host(mine[None])).max(axis=0).astype(np.int64)


def gather_json(obj: Any) -> list[Any]:
    """Every process's JSON-serialisable `obj`, in process order (two small all-gathers: lengths, bytes);
    `[obj]` on one process. For host-side results each process computed on its own rows (e.g. texts)."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    lengths = np.asarray(global_to_host(np.asarray([[len(data)]], np.int32))).reshape(-1)
    padded = np.zeros((1, int(lengths.max())), np.uint8)
    padded[0, :len(data)] = data
    every = np.asarray(global_to_host(padded))
    return [json.loads(bytes(every[i, :n].astype(np.uint8)).decode()) for i, n in enumerate(lengths)]


def global_to_host(tree: Any) -> Any:
    """Numpy copies of a pytree on every process (for metrics, samples, eval): global jax Arrays come
    back whole; host-local arrays of equal shape are concatenated along axis 0 across processes."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return multihost_utils.process_allgather(tree, tiled=True)
