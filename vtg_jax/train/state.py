"""The trained state shared by every step factory (SFT now; GRPO / OPD next).

Why this split: only the trainable parameters and their optimizer state change in a step, so only
they are donated and carried in `TrainState`. The frozen part (a frozen vision tower, non-Param
variables) is passed to the step as a separate, non-donated argument, and the module structure
(`nnx.GraphDef`) is static. Frozen models of other objectives (reference, teacher)
live outside the state the same way. Everything here is a plain pytree, so `jax.jit` sees pure arrays
and `logical_to_mesh_sharding` reads each parameter's logical axes straight from the state.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from vtg_jax.models.qwen_vl.model import trainable_filter
from vtg_jax.parallel.rules import DEFAULT_RULES, Rules, logical_to_mesh_sharding


@struct.dataclass
class TrainState:
    """step: applied updates (the schedule's clock); params: trainable nnx.State; opt_state: optax
    state over `params` only; skipped: cumulative updates skipped for a non-finite loss/grad-norm."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    skipped: jax.Array


def split_model(model: nnx.Module, freeze_vision: bool) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable params, frozen rest) by `trainable_filter(freeze_vision)`."""
    graphdef, params, frozen = nnx.split(model, trainable_filter(freeze_vision), ...)
    return graphdef, params, frozen


def merge_model(graphdef: nnx.GraphDef, params: nnx.State, frozen: nnx.State) -> nnx.Module:
    """The module again (inside a step: a view over traced arrays; outside: for eval/sampling)."""
    return nnx.merge(graphdef, params, frozen)


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, *, freeze_vision: bool = True
                     ) -> tuple[TrainState, nnx.GraphDef, nnx.State]:
    """(state, graphdef, frozen) for training `model` with `tx`; the optimizer sees trainable params only,
    so a frozen tower has no gradient and no Adam moments."""
    graphdef, params, frozen = split_model(model, freeze_vision)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       skipped=jnp.zeros((), jnp.int32))
    return state, graphdef, frozen


def state_shardings(tree: Any, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings of a TrainState (or frozen State): parameters and Adam moments by their logical
    axis names, scalars (step, counters, optimizer counts) replicated."""
    return logical_to_mesh_sharding(tree, mesh, rules)


def num_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
