"""OP-FKD (Video-OPD App. C.2): forward KL to the teacher's full distribution on ground-truth answers; the
teacher runs inside the step (its whole next-token distribution, not sampled log-probs)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
from flax import nnx

from vtg_jax.algorithms.context import Iteration, RunContext
from vtg_jax.rollout.packing import build_rl_batch
from vtg_jax.rollout.prompts import answer_token_lists, prompt_only
from vtg_jax.rollout.samples import ground_truth_completions
from vtg_jax.train.distill import FKDConfig, make_op_fkd_step


def fkd_config(c: Any) -> FKDConfig:
    """`train.distill.FKDConfig` of a run config's `fkd` section."""
    f = c.fkd
    return FKDConfig(aggregation=f.aggregation, temperature=float(c.rollout.temperature),
                     top_k=None if f.top_k is None else int(f.top_k), topk_mode=f.topk_mode)  # None: all


def make_step(config: Any, graphdef: Any, tx: Any, schedule: Callable, *,
              teacher_graphdef: Optional[nnx.GraphDef] = None, teacher_sharding: Any = None,
              state_sharding: Any = None, frozen_sharding: Any = None, batch_sharding: Any = None,
              **unused: Any) -> Callable:
    """`step(state, frozen, teacher_state, batch)` of `train.distill`: the teacher is an argument."""
    if teacher_graphdef is None:
        raise ValueError("op_fkd's step takes the teacher: pass teacher_graphdef")
    return make_op_fkd_step(graphdef, tx, schedule, teacher_graphdef, fkd_config(config),
                            teacher_sharding=teacher_sharding, state_sharding=state_sharding,
                            frozen_sharding=frozen_sharding, batch_sharding=batch_sharding)


def make_iteration(ctx: RunContext) -> Iteration:
    c = ctx.config
    if ctx.teacher is None:
        raise ValueError("op_fkd needs a teacher (config.teacher.init_from or .preset)")
    t_graphdef, t_state = nnx.split(ctx.teacher)
    t_sharding = None if ctx.mesh is None else jax.tree.map(lambda x: x.sharding, t_state)
    own = ctx.packs_own_rows()  # per-host input all the way to the step (as in algorithms.grpo)
    step_fn = make_step(c, ctx.graphdef, ctx.tx, ctx.schedule, teacher_graphdef=t_graphdef,
                        teacher_sharding=t_sharding, **ctx.step_shardings_for(own))

    def iterate(state, batch, step):
        batch = ctx.iteration_batch(batch, own)
        prompts = prompt_only(batch)
        tokens, lengths = ground_truth_completions(answer_token_lists(batch))
        n = ctx.agreed_length(max(c.rollout.max_new_tokens, tokens.shape[-1]), own)
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, np.zeros(tokens.shape, np.float32),
                            np.zeros(lengths.shape, np.float32), num_micro=c.micro_batches, max_new_tokens=n,
                            **ctx.vision_packing(own))
        state, metrics = step_fn(state, ctx.frozen, t_state, ctx.put_rl(rl, own))
        return state, dict(metrics)

    iterate.step_fn = step_fn
    return iterate
