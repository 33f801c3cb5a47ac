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
    """Per-host input (the registry's `per_host_input`): `batch` is this process's rows. Each process packs
    them into its share of the step's global arrays when the mesh allows (`RunContext.packs_own_rows`);
    otherwise the rows are gathered and every process packs the whole batch."""
    own_rows = ctx.packs_own_rows()
    step_fn = make_step(ctx.config, ctx.graphdef, ctx.tx, ctx.schedule, **ctx.step_shardings_for(own_rows))

    def iterate(state, batch, step):
        if own_rows:
            inputs = ctx.put_own_rows(batch)
        else:
            whole = ctx.host_batch(batch)
            inputs = ctx.put(prepare_batch(ctx.model_cfg, whole, ctx.config.micro_batches, ctx.vision_shards()))
        state, metrics = step_fn(state, ctx.frozen, inputs)
        return state, dict(metrics)

    iterate.step_fn = step_fn
    return iterate
