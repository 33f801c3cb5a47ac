"""SFT step: token-mean cross-entropy on the answer tokens (processor `loss_mask`), nothing else.

    tx, schedule = make_optimizer(OptimConfig(...))
    state, graphdef, frozen = init_train_state(model, tx, freeze_vision=True)
    step = make_sft_step(graphdef, tx, schedule)
    state, metrics = step(state, frozen, prepare_batch(cfg, loader_batch, num_micro=2))

Why the loss is summed per micro-batch and divided once: the token-mean over the WHOLE batch is
sum(nll) / sum(mask); accumulating per-micro-batch means would weight micro-batches equally instead of
tokens, so gradient accumulation would not equal the full batch. Summed gradients divided by the total
token count are exactly the full-batch gradient (up to float summation order).

Why the guard: a NaN pixel, a corrupt video or an overflow must not poison or crash a long run.
If the loss, the gradient norm, or any value of the updated parameters or optimizer state is not
finite, the step returns params and optimizer state unchanged (a `where` select, so they are bitwise
identical) and counts it in `train/skipped_nonfinite`. Checking the update's result too catches what a
finite gradient can still produce: an Adam moment that is already NaN (a corrupted restore), or an
update that overflows.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vtg_jax.losses import masked_sum, token_logprobs
from vtg_jax.train.rl_batch import Metrics
from vtg_jax.train.state import TrainState, merge_model
from vtg_jax.train.update import accumulate_grads, guarded_update


def answer_nll_sum(model: nnx.Module, mb: dict[str, Any], chunk_size: Optional[int] = None
                   ) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p over answer tokens, their count) for one micro-batch; the logits at t predict t+1."""
    logits = model.forward(mb["input_ids"], mb["attention_mask"], None, mb.get("pixel_values_videos"),
                           mb["position_ids"], mb.get("vision_inputs"))
    logp = token_logprobs(logits[:, :-1], mb["input_ids"][:, 1:], chunk_size=chunk_size)
    mask = mb["loss_mask"][:, 1:] * mb["attention_mask"][:, 1:]
    return masked_sum(-logp, mask), jnp.sum(mask.astype(jnp.float32))


def make_sft_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any], *,
                  chunk_size: Optional[int] = None, state_sharding: Any = None, frozen_sharding: Any = None,
                  batch_sharding: Any = None, donate: bool = True) -> Callable:
    """`step(state, frozen, batch) -> (state, metrics)`, jitted once; `state` is donated.

    batch: `prepare_batch(...)` output ([A, ...] micro-batches). Shardings (optional): `state_shardings`
    of the state and of the frozen part, and one for the batch pytree (a prefix, e.g. one NamedSharding);
    call a sharded step inside `parallel.rules.sharded_call(mesh, rules)` so that the model's activation
    constraints resolve when it is traced.
    The returned function has `.traces` (how many times it was traced: 1 per distinct batch shape).
    """

    def loss_fn(params, frozen, mb):
        return answer_nll_sum(merge_model(graphdef, params, frozen), mb, chunk_size)

    def step(state: TrainState, frozen: Any, batch: dict[str, Any]) -> tuple[TrainState, Metrics]:
        wrapped.traces += 1
        grads, total, count, _ = accumulate_grads(lambda p, mb: loss_fn(p, frozen, mb), state.params, batch)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        loss = total / denom
        lr = schedule(state.step)
        new, gnorm, skipped = guarded_update(state, grads, loss, tx)
        metrics = {"loss/total": loss, "loss/nll": loss, "train/grad_norm": gnorm, "train/lr": jnp.asarray(lr),
                   "train/tokens": count, "train/skipped_nonfinite": skipped,
                   "train/skipped_nonfinite_total": new.skipped, "train/step": new.step}
        return new, metrics

    kw: dict[str, Any] = {"donate_argnums": (0,) if donate else ()}
    if state_sharding is not None:
        kw["in_shardings"] = (state_sharding, frozen_sharding, batch_sharding)
        kw["out_shardings"] = (state_sharding, None)
    jitted = jax.jit(step, **kw)

    def wrapped(state: TrainState, frozen: Any, batch: dict[str, Any]) -> tuple[TrainState, Metrics]:
        return jitted(state, frozen, batch)

    wrapped.traces = 0
    wrapped.jitted = jitted
    return wrapped
