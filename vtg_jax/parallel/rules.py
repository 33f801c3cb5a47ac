"""Logical axis rules: from the names every parameter / activation carries to mesh axes.

Mesh axes are `data` (pure data parallelism), `fsdp` (data parallelism with parameters sharded along
`embed`, ZeRO-3 style), `sequence` (context parallelism: every activation's `length` axis is split, so a
prompt too long for one chip's memory, such as LongVTG-R1's 100k-token videos, spreads over several;
attention gathers the keys / values, `models/qwen_vl/fused_attention.py`) and `tensor` (Megatron-style:
heads / MLP columns / vocabulary). Parameters are not split over `sequence`: those chips hold the same
`fsdp` shard.

A mesh axis of size 1 splits nothing and is left out of every PartitionSpec, so a mesh that has the
axis at size 1 gives the same specs as one without it.

Parameters and activations share logical names, but a PartitionSpec may use each mesh axis only once.
Activations are sharded along `batch` over (data, fsdp), so their `embed` dim must not also take `fsdp`:
`activation_rules` drops from every non-batch name the mesh axes that `batch` already uses. Use
`DEFAULT_RULES` to place parameters and `activation_rules(DEFAULT_RULES)` as the context rules of the
forward (`nnx.logical_axis_rules`), which is what `logical_to_mesh_sharding` and `sharded_call` do.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import jax
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
MESH_AXES: tuple[str, ...] = ("data", "fsdp", "sequence", "tensor")  # outermost to innermost
Rules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _from_tuple(axes: tuple[str, ...]) -> MeshAxes:
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else axes


def activation_rules(rules: Rules = DEFAULT_RULES) -> Rules:
    """`rules` with the mesh axes of `batch` removed from every other name (no axis used twice)."""
    table = dict(rules)
    batch_axes = set(_as_tuple(table.get("batch")))
    out = []
    for name, axes in rules:
        if name != "batch":
            axes = _from_tuple(tuple(a for a in _as_tuple(axes) if a not in batch_axes))
        out.append((name, axes))
    return tuple(out)


def logical_to_spec(names: Sequence[str | None] | None, rules: Rules, mesh: Mesh,
                    shape: Sequence[int] | None = None, uneven: bool = False) -> PartitionSpec:
    """PartitionSpec for one array's logical names. Names without a rule (or axes not in `mesh`) stay
    replicated; a mesh axis already used by an earlier dim is dropped; with `shape`, a dim that the
    mesh axes do not divide evenly is replicated rather than failing at placement, or with `uneven` (an
    activation constraint, where XLA pads) only a dim shorter than its shard count is: a decode step's
    one token stays whole on a `sequence` axis, an update's sequence of any length is split."""
    if not names:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        axes = tuple(a for a in _as_tuple(table.get(name) if name else None)
                     if a in mesh.axis_names and a not in used and mesh.shape[a] > 1)
        parts = math.prod(mesh.shape[a] for a in axes)
        if shape is not None and (shape[i] < parts if uneven else shape[i] % parts):
            axes = ()
        used.update(axes)
        spec.append(_from_tuple(axes))
    return PartitionSpec(*spec)


def logical_axes(name: str, mesh: Any, rules: Rules = DEFAULT_RULES) -> tuple[str, ...]:
    """The mesh axes (of size > 1) that logical axis `name` splits over on `mesh` (a Mesh or AbstractMesh)."""
    return tuple(a for a in _as_tuple(dict(rules).get(name)) if a in mesh.axis_names and mesh.shape[a] > 1)


def shards_of(name: str, mesh: Any, rules: Rules = DEFAULT_RULES) -> int:
    """How many parts logical axis `name` splits into on `mesh` (the product of its mesh axes)."""
    return math.prod(mesh.shape[a] for a in logical_axes(name, mesh, rules))


def batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many parts the logical `batch` axis splits into on `mesh` (the product of its mesh axes)."""
    return shards_of("batch", mesh, rules)


def vision_shards_for(mesh: Mesh | None, prompts: int) -> int:
    """Vision shards of a batch of `prompts` on `mesh` (`models.qwen_vl.VisionTower`: each data shard's
    videos packed apart): as many of the mesh's `batch` shards as divide it; 1 without a mesh."""
    return 1 if mesh is None else math.gcd(batch_shards(mesh), prompts)


def logical_to_mesh_sharding(model_state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedSharding for every Variable of an `nnx.State` (concrete or abstract, e.g. from
    `nnx.eval_shape`), read from its `out_sharding` metadata; same tree structure as `model_state`.

    Use with `jax.device_put(state, shardings)` or as `out_shardings` of a jitted initialiser.
    """

    def one(var: Any) -> Any:
        if not isinstance(var, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        names = var.get_metadata().get("out_sharding")
        shape = getattr(var.get_value(), "shape", None)
        return NamedSharding(mesh, logical_to_spec(names, rules, mesh, shape))

    return jax.tree.map(one, model_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> None:
    """Places every Variable of `model` on `mesh` in place (parameters by their logical names)."""
    state = nnx.state(model)
    shardings = logical_to_mesh_sharding(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))


@contextlib.contextmanager
def sharded_call(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Context for tracing / running a forward: the mesh and the activation rules are active, so
    `logical_constraint`s inside the model resolve (text.py)."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(activation_rules(rules)):
        yield


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None,
              sequence: int = 1) -> Mesh:
    """A (data, fsdp, sequence, tensor) mesh over the first data*fsdp*sequence*tensor devices, all axes
    Auto (GSPMD propagates shardings from the parameters, inputs and `logical_constraint`s)."""
    n = data * fsdp * sequence * tensor
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) < n:
        raise ValueError(f"mesh {data}x{fsdp}x{sequence}x{tensor} needs {n} devices, have {len(devices)}")
    shape, types = (data, fsdp, sequence, tensor), (AxisType.Auto,) * 4
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=types, devices=devices[:n])
    except NotImplementedError:
        # A TPU torus whose physical axes no product of the mesh axes matches (e.g. 8 x 2 x 4 on a 4x4x4
        # v5p-128): jax's own assignment, allowed to split a physical axis between two mesh axes.
        grid = mesh_utils.create_device_mesh(shape, devices[:n], allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=types)
