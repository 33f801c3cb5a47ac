"""The slices a plan compiles for: slice names -> devices, and each TPU generation's per-chip figures.

Slice names follow Google Cloud's accelerator types: `v5e-16`, `v6e-64` count chips; `v5p-16` counts
TensorCores (two per v5p chip), so a v5p-16 is 8 chips (2x2x2). A libtpu topology name
(`v5p:2x2x2`, `v5e:4x4`) is accepted as well, and `cpu:8` gives 8 fake CPU devices (XLA's
`--xla_force_host_platform_device_count`, set before jax starts; for tests and laptops).

TPU devices come from `jax.experimental.topologies.get_topology_desc`, which needs libtpu (the
`tpu` extra: `pip install -e ".[tpu]"`) but no TPU: the compiler builds the real executable for the
slice on this host.

Per-chip figures (Google Cloud TPU documentation, "TPU v5e", "TPU v5p" and "TPU v6e" system
architecture pages, key chip specifications): peak dense bf16 FLOP/s and HBM bandwidth. The HBM a
program may use is what the TPU compiler itself allows (reported in its out-of-memory message and
checked here against the compiled program): 15.75 GiB of v5e's 16 GB, 95.74 GiB of v5p's 95 GB, 31.25
GiB of v6e's 32 GB.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Optional

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's figures for the roofline (None on fake CPU devices)."""

    name: str
    peak_flops: Optional[float]  # dense bf16 FLOP/s per chip
    hbm_bandwidth: Optional[float]  # bytes/s per chip
    hbm_bytes: Optional[int]  # what one chip's programs may allocate (the compiler's limit)
    cores_per_chip: int = 1  # TensorCores per chip counted by the slice name


CHIPS: dict[str, Chip] = {
    "v5e": Chip("v5e", peak_flops=197e12, hbm_bandwidth=819e9, hbm_bytes=int(15.75 * GIB)),
    "v5p": Chip("v5p", peak_flops=459e12, hbm_bandwidth=2765e9, hbm_bytes=int(95.74 * GIB), cores_per_chip=2),
    "v6e": Chip("v6e", peak_flops=918e12, hbm_bandwidth=1640e9, hbm_bytes=int(31.25 * GIB)),
    "cpu": Chip("cpu", peak_flops=None, hbm_bandwidth=None, hbm_bytes=None),
}

# Chips -> libtpu topology of the standard single-slice shapes (Cloud TPU docs, "supported configurations").
TOPOLOGIES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
TOPOLOGIES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
                 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


@dataclasses.dataclass(frozen=True)
class Target:
    """A slice to plan for: its name, chip, libtpu topology (None for CPU) and chip count."""

    name: str
    chip: Chip
    topology: Optional[str]
    num_chips: int

    @property
    def platform(self) -> str:
        return "cpu" if self.topology is None else "tpu"


def parse_target(name: str) -> Target:
    """`v5p-16`, `v5e-32`, `v6e-8`, `v5p:2x2x2` or `cpu:8` -> Target (ValueError naming the choices)."""
    name = name.strip()
    m = re.fullmatch(r"cpu:(\d+)", name)
    if m:
        return Target(name, CHIPS["cpu"], None, int(m.group(1)))
    m = re.fullmatch(r"(v5e|v5p|v6e):(\d+(?:x\d+)+)", name)
    if m:
        gen, shape = m.groups()
        return Target(name, CHIPS[gen], f"{gen}:{shape}", _prod(shape))
    m = re.fullmatch(r"(v5e|v5litepod|v5p|v6e)-(\d+)", name)
    if not m:
        raise ValueError(f"unknown topology {name!r}: use a slice name (v5e-16, v5p-32, v6e-8), a libtpu "
                         "topology (v5p:2x2x2) or cpu:<devices>")
    gen = "v5e" if m.group(1) == "v5litepod" else m.group(1)
    chip = CHIPS[gen]
    cores = int(m.group(2))
    if cores % chip.cores_per_chip:
        raise ValueError(f"{name}: a {gen} slice counts {chip.cores_per_chip} TensorCores per chip")
    chips = cores // chip.cores_per_chip
    table = TOPOLOGIES_3D if gen == "v5p" else TOPOLOGIES_2D
    if chips not in table:
        raise ValueError(f"{name}: no standard {gen} slice of {chips} chips; known: "
                         f"{', '.join(f'{gen}-{n * chip.cores_per_chip}' for n in table)}")
    return Target(name, chip, f"{gen}:{table[chips]}", chips)


def _prod(shape: str) -> int:
    out = 1
    for s in shape.split("x"):
        out *= int(s)
    return out


def prepare_host(target: Target) -> None:
    """Environment the target needs before jax initialises: fake CPU devices, or no TPU metadata query
    (a CPU host has no TPU metadata server). Call before the first `import jax` of the process."""
    if target.platform == "cpu":
        flag = f"--xla_force_host_platform_device_count={target.num_chips}"
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    else:
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        # libtpu locks /tmp/libtpu_lockfile for one process per host (it owns the chips); compiling
        # touches no chip, so several plans may run side by side
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def target_devices(target: Target) -> list[Any]:
    """The slice's devices: TPU devices of the topology (compile-only), or the first N CPU devices."""
    import jax

    if target.platform == "cpu":
        devices = jax.devices("cpu")
        if len(devices) < target.num_chips:
            raise RuntimeError(f"{target.name}: only {len(devices)} CPU devices; set XLA_FLAGS="
                               f"--xla_force_host_platform_device_count={target.num_chips} before jax starts")
        return devices[:target.num_chips]
    try:
        from jax.experimental import topologies
    except ImportError as e:  # pragma: no cover - part of jax
        raise RuntimeError("jax.experimental.topologies is missing") from e
    kwargs = {"chips_per_host_bounds": (1, 1, 1)} if target.num_chips == 1 else {}
    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology, **kwargs)
    except Exception as e:  # noqa: BLE001 — libtpu missing or the shape unknown to it: say which
        raise RuntimeError(f"cannot describe TPU topology {target.topology} ({e}); planning for a TPU needs "
                           "libtpu: pip install -e \".[tpu]\"") from e
    return list(topo.devices)
