"""SFT (TVG-R1's cold start, the demo models' training): next-token loss on the answer tokens."""
from __future__ import annotations

from typing import Any, Callable

from vtg_jax.algorithms.context import Iteration, RunContext
from vtg_jax.train.batch import prepare_batch
from vtg_jax.train.sft import make_sft_step


def make_step(config: Any, graphdef: Any, tx: Any, schedule: Callable, *, state_sharding: Any = None,
              frozen_sharding: Any = None, batch_sharding: Any = None, **unused: Any) -> Callable:
    """`step(state, frozen, batch)` of `train.sft` (SFT takes no time mask and no teacher)."""
    return make_sft_step(graphdef, tx, schedule, state_sharding=state_sharding, frozen_sharding=frozen_sharding,
                         batch_sharding=batch_sharding)


def make_iteration(ctx: RunContext) -> Iteration:
    step_fn = make_step(ctx.config, ctx.graphdef, ctx.tx, ctx.schedule, **ctx.step_shardings())

    def iterate(state, batch, step):
        packed = prepare_batch(ctx.model_cfg, batch, ctx.config.micro_batches, ctx.vision_shards())
        state, metrics = step_fn(state, ctx.frozen, ctx.put(packed))
        return state, dict(metrics)

    iterate.step_fn = step_fn
    return iterate
