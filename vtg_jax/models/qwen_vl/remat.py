"""Activation checkpointing of one layer, by policy name (the `remat` argument of the model).

    call = checkpointed(layer, "full")   # or "dots_saveable", ...
    y = call(x, cos, sin, mask)          # == layer(x, cos, sin, mask); recomputed in the backward pass

Why not `nnx.remat`: it writes the layer's Variables back to the enclosing module after the call, and that
write fails (`TraceContextError: Cannot mutate Param from a different trace level`) when the layer's
parameters are not the ones being differentiated, e.g. a frozen vision tower whose parameters enter the
train step as constants while the language model is differentiated. A layer is a pure function of its
state here (no RNG, no batch statistics), so the layer is split into (graphdef, state) and the pure
function `merge(graphdef, state)(*args)` is checkpointed with `jax.checkpoint`: nothing is written back,
and the same code serves trained, frozen and non-differentiated (teacher / reference) layers. For a layer
that is not differentiated the checkpoint is inert: nothing is saved and nothing is recomputed.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

__all__ = ["REMAT_POLICIES", "check_remat", "checkpointed"]

# Activation-checkpoint policies by name (`remat` argument of the model; "none" = no checkpointing).
REMAT_POLICIES: dict[str, Any] = {
    "full": None,  # save nothing: recompute the whole layer
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def check_remat(remat: str) -> None:
    if remat != "none" and remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose 'none' or one of {sorted(REMAT_POLICIES)}")


def checkpointed(layer: nnx.Module, remat: str, **static: Any) -> Callable[..., Any]:
    """`layer.__call__` under the named checkpoint policy ("none": the layer itself). `static` keyword
    arguments are bound as Python values, not traced (e.g. a cache index that must stay an int)."""
    check_remat(remat)
    if remat == "none":
        return (lambda *args: layer(*args, **static)) if static else layer
    graphdef, state = nnx.split(layer)

    def pure(state: nnx.State, *args: Any) -> Any:
        return nnx.merge(graphdef, state)(*args, **static)

    recomputed = jax.checkpoint(pure, policy=REMAT_POLICIES[remat])
    return lambda *args: recomputed(state, *args)
