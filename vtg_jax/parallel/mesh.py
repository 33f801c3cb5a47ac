"""Mesh construction from a run config's `mesh` section: `data`, `fsdp`, `sequence`, `tensor` (-1 = the
rest; a missing axis is 1).

A run config names the parallelism it wants, not device ids, so the same config file runs on one
CPU, an 8-GPU node or a v5p-128 slice: one axis is left at -1 and takes whatever devices remain.
The device order comes from `jax.make_mesh` (via `rules.make_mesh`), which on TPU/GPU follows the
physical interconnect, so the innermost axis (`tensor`) lands on the fastest links.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import Mesh

from vtg_jax.parallel.rules import MESH_AXES, make_mesh


def resolve_mesh_shape(sizes: Mapping[str, int] | Sequence[int], num_devices: int) -> tuple[int, ...]:
    """(data, fsdp, sequence, tensor) with at most one -1 filled so that the product is `num_devices`.

    Pure (no devices touched) so the arithmetic and its error messages are unit-testable.
    Missing axes default to 1.
    """
    if isinstance(sizes, Mapping):
        unknown = set(sizes) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
        shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
    else:
        shape = [int(s) for s in sizes]
        if len(shape) != len(MESH_AXES):
            raise ValueError(f"mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}")
    described = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, shape))
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh sizes must be positive or -1, got {described}")
    fill = [i for i, s in enumerate(shape) if s == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {described}")
    fixed = math.prod(s for s in shape if s != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(f"mesh {described}: {num_devices} devices are not divisible by the fixed "
                             f"axes' product {fixed}")
        shape[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"mesh {described} needs {fixed} devices but {num_devices} are available "
                         f"(jax.device_count() over all processes); set one axis to -1 to fill")
    return tuple(shape)


def mesh_from_config(section: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, sequence, tensor) mesh over all devices (every process's) as a run config's `mesh` section
    (ConfigDict or dict) asks; the product of the sizes must equal the number of devices (all of
    `jax.devices()` unless `devices` is given), since an idle accelerator on a pod is almost always a
    config mistake.
    """
    devices = list(devices if devices is not None else jax.devices())
    data, fsdp, sequence, tensor = resolve_mesh_shape({k: section[k] for k in section.keys()}, len(devices))
    return make_mesh(data=data, fsdp=fsdp, sequence=sequence, tensor=tensor, devices=devices)
