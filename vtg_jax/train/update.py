"""What every objective's jitted step shares: gradient accumulation over micro-batches, the guarded
(non-finite-skipping) optimizer update, the common `train/*` metrics, and the jit wrapper.

    grads, loss_sum, count, metrics = accumulate_grads(loss_fn, state.params, batch)
    state, metrics = finish_step(state, tx, schedule, grads, loss_sum, count, metrics, inputs_ok)
    step = compile_step(step_fn, num_frozen=1, donate=True, state_sharding=..., ...)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vtg_jax.train.integrity import all_finite
from vtg_jax.train.rl_batch import Metrics, RLBatch, finite_inputs, require_fields
from vtg_jax.train.state import TrainState, merge_model


def accumulate_grads(loss_fn: Callable, params: Any, batch: Any) -> tuple[Any, jax.Array, jax.Array, Metrics]:
    """Sums over the leading micro-batch axis (lax.scan) of `loss_fn(params, mb) -> (loss_sum, aux)`;
    `batch` is any pytree whose arrays lead with that axis (SFT's dict, an `RLBatch`).

    `aux` is `count` (tokens the loss is summed over) or `(count, weight, metrics)`, where `metrics` is a
    dict of per-micro-batch values to be averaged with weights `weight` (e.g. its token count). Returns
    (summed grads, summed loss, summed count, weighted-mean metrics). Shared by every objective: summed
    losses and gradients divided once by the total count equal the full-batch token-mean exactly.
    """

    def split_aux(aux):
        return aux if isinstance(aux, tuple) else (aux, aux, {})

    def body(carry, mb):
        g_acc, l_acc, n_acc, w_acc, m_acc = carry
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
        count, w, m = split_aux(aux)
        m_acc = jax.tree.map(lambda a, x: a + w * x, m_acc, m)
        return (jax.tree.map(jnp.add, g_acc, g), l_acc + loss, n_acc + count, w_acc + w, m_acc), None

    first = jax.tree.map(lambda x: x[0], batch)
    shapes = jax.eval_shape(lambda p, mb: split_aux(loss_fn(p, mb)[1])[2], params, first)
    zero = jnp.zeros((), jnp.float32)
    init = (jax.tree.map(jnp.zeros_like, params), zero, zero, zero,
            jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes))
    (grads, total, count, weight, msum), _ = jax.lax.scan(body, init, batch)
    metrics = jax.tree.map(lambda x: x / jnp.maximum(weight, 1e-12), msum)
    return grads, total, count, metrics


def guarded_update(state: TrainState, grads: Any, loss: jax.Array, tx: optax.GradientTransformation
                   ) -> tuple[TrainState, jax.Array, jax.Array]:
    """Applies `tx` unless the loss, the grad-norm or the updated parameters / optimizer state are
    non-finite; returns (state, grad_norm, skipped 0/1).

    Shared by every objective: the guard and the counters are not SFT-specific."""
    gnorm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm) & all_finite(params) & all_finite(opt_state)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    skipped = (~ok).astype(jnp.int32)
    new = TrainState(step=state.step + (1 - skipped), params=keep(params, state.params),
                     opt_state=keep(opt_state, state.opt_state), skipped=state.skipped + skipped)
    return new, gnorm, skipped


def compile_step(step: Callable, *, num_frozen: int, donate: bool, state_sharding: Any,
                 frozen_shardings: tuple, batch_sharding: Any) -> Callable:
    """jit(step(state, *frozen, batch)) once, with the state donated and optional in/out shardings; the
    result has `.traces` (compilations: one per distinct batch shape) and `.jitted`."""

    def traced(*args):
        wrapped.traces += 1
        return step(*args)

    kw: dict[str, Any] = {"donate_argnums": (0,) if donate else ()}
    if state_sharding is not None:
        if len(frozen_shardings) != num_frozen:
            raise ValueError(f"need {num_frozen} frozen shardings, got {len(frozen_shardings)}")
        kw["in_shardings"] = (state_sharding, *frozen_shardings, batch_sharding)
        kw["out_shardings"] = (state_sharding, None)
    jitted = jax.jit(traced, **kw)

    def wrapped(*args):
        return jitted(*args)

    wrapped.traces = 0
    wrapped.jitted = jitted
    return wrapped


def finish_step(state: TrainState, tx: optax.GradientTransformation, schedule: Callable, grads: Any,
                total: jax.Array, count: jax.Array, metrics: Metrics, inputs_ok: jax.Array
                ) -> tuple[TrainState, Metrics]:
    """Normalise the accumulated sums, apply the guarded update (skipped and counted when the loss, the
    gradient norm or an input is non-finite) and add the common `train/*` metrics."""
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    loss = jnp.where(inputs_ok, total / denom, jnp.nan)
    new, gnorm, skipped = guarded_update(state, grads, loss, tx)
    metrics = dict(metrics)
    metrics.update({"loss/total": loss, "train/grad_norm": gnorm, "train/lr": jnp.asarray(schedule(state.step)),
                    "train/loss_count": count, "train/skipped_nonfinite": skipped,
                    "train/skipped_nonfinite_total": new.skipped, "train/step": new.step})
    return new, metrics


def make_policy_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable,
                     micro_loss: Callable[[nnx.Module, RLBatch], Any], needed: tuple[str, ...], *,
                     objective: str = "the step", state_sharding: Any = None, frozen_sharding: Any = None,
                     batch_sharding: Any = None, donate: bool = True) -> Callable:
    """The step every rollout objective shares: `micro_loss(model, mb) -> (loss_sum, (count, tokens,
    metrics))` accumulated over the micro-batches of an `RLBatch`, whose fields `needed` must be present
    (a clear error naming `objective` when tracing a batch without them) and are checked finite (a NaN
    reward or log-prob skips the update), then `finish_step`; jitted once with `state` donated."""

    def step(state: TrainState, frozen: Any, batch: RLBatch) -> tuple[TrainState, Metrics]:
        require_fields(batch, needed, objective)

        def loss_fn(params, mb):
            return micro_loss(merge_model(graphdef, params, frozen), mb)

        grads, total, count, metrics = accumulate_grads(loss_fn, state.params, batch)
        ok = jnp.all(jax.vmap(lambda mb: finite_inputs(mb, needed))(batch))
        return finish_step(state, tx, schedule, grads, total, count, metrics, ok)

    return compile_step(step, num_frozen=1, donate=donate, state_sharding=state_sharding,
                        frozen_shardings=(frozen_sharding,), batch_sharding=batch_sharding)
