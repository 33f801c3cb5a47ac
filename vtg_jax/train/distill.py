"""OP-FKD step (Video-OPD App. C.2, eqs. 26–29): forward KL(P_tea || P_stu) on fixed ground-truth
trajectories, by plain backpropagation (no policy gradient).

    batch = build_rl_batch(cfg, prompts, gt_tokens[:, None], gt_lengths[:, None], zeros, zeros((B, 1)))
    step = make_op_fkd_step(graphdef, tx, schedule, teacher_graphdef, FKDConfig(top_k=None))
    state, metrics = step(state, frozen, teacher_state, batch)

Why the teacher runs inside this step (unlike OPD / OP-RKD, which take precomputed log-probs): eq. 27
needs the teacher's distribution over the whole vocabulary at every position, [R, N, V] floats, which
is too large to ship from the host at real sizes. The teacher is another (graphdef, state) — any size,
e.g. a larger Qwen-VL — passed as a separate, NON-donated argument, so it stays outside the trained
state and is never differentiated (its logits are wrapped in stop_gradient). It reads
the same batch, so it must share the student's tokenizer and vision patch layout (same processor).
`top_k` keeps only the teacher's k most probable tokens (`losses.topk_forward_kl`, default
"renormalized"), the format of a remote teacher.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vtg_jax.losses import (AGGREGATIONS, TOPK_MODES, aggregate, masked_mean, op_fkd_loss, teacher_topk,
                            topk_forward_kl)
from vtg_jax.train.rl_batch import Metrics, RLBatch, aggregate_count, completion_logits, require_fields
from vtg_jax.train.update import accumulate_grads, compile_step, finish_step
from vtg_jax.train.state import TrainState, merge_model


@dataclasses.dataclass(frozen=True)
class FKDConfig:
    """OP-FKD settings; default aggregation E_tau Σ_t (eq. 29)."""

    aggregation: str = "seq-mean-token-sum"
    temperature: float = 1.0
    top_k: Optional[int] = None
    topk_mode: str = "renormalized"
    max_len: Optional[int] = None
    chunk_size: Optional[int] = None

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.topk_mode not in TOPK_MODES:
            raise ValueError(f"topk_mode must be one of {TOPK_MODES}, got {self.topk_mode!r}")


def fkd_micro_loss(cfg: FKDConfig, student: nnx.Module, teacher: nnx.Module, mb: RLBatch
                   ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Metrics]]:
    """(loss_sum, (count, tokens, metrics)) of one micro-batch."""
    mask = mb.completion_mask
    s_logits = completion_logits(student, mb)
    t_logits = jax.lax.stop_gradient(completion_logits(teacher, mb))
    if cfg.top_k is None:
        loss, m = op_fkd_loss(s_logits, t_logits, mask, cfg.aggregation, cfg.temperature, cfg.chunk_size,
                              cfg.max_len)
    else:
        ids, lp = teacher_topk(t_logits, cfg.top_k, cfg.temperature)
        per_token = topk_forward_kl(s_logits, ids, lp, cfg.topk_mode, cfg.temperature)
        loss = aggregate(per_token, mask, cfg.aggregation, cfg.max_len)
        m = {"fkd/loss": jax.lax.stop_gradient(loss),
             "fkd/forward_kl": masked_mean(jax.lax.stop_gradient(per_token), mask)}
    count = aggregate_count(mask, cfg.aggregation)
    tokens = jnp.sum((mask != 0).astype(jnp.float32))
    return loss * count, (count, tokens, {**m, "rl/forward_kl": m["fkd/forward_kl"]})


def make_op_fkd_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any],
                     teacher_graphdef: nnx.GraphDef, cfg: FKDConfig = FKDConfig(), *, state_sharding: Any = None,
                     frozen_sharding: Any = None, teacher_sharding: Any = None, batch_sharding: Any = None,
                     donate: bool = True) -> Callable:
    """`step(state, frozen, teacher_state, batch) -> (state, metrics)`, jitted once, only `state` donated.

    teacher_state: `nnx.split(teacher)[1]` (all of the teacher's variables); batch: `build_rl_batch`
    of ground-truth completions (G = 1 per prompt; old_logp / advantages unused)."""

    def step(state: TrainState, frozen: Any, teacher_state: Any, batch: RLBatch) -> tuple[TrainState, Metrics]:
        require_fields(batch, (), "OP-FKD")  # tokens, masks and positions only: no optional field
        teacher = nnx.merge(teacher_graphdef, teacher_state)

        def loss_fn(params, mb):
            return fkd_micro_loss(cfg, merge_model(graphdef, params, frozen), teacher, mb)

        grads, total, count, metrics = accumulate_grads(loss_fn, state.params, batch)
        # FKD's batch carries no rewards or log-probs, only tokens: non-finite teacher or student logits
        # surface in the loss / grad norm, which `guarded_update` already checks.
        return finish_step(state, tx, schedule, grads, total, count, metrics, jnp.array(True))

    return compile_step(step, num_frozen=2, donate=donate, state_sharding=state_sharding,
                        frozen_shardings=(frozen_sharding, teacher_sharding), batch_sharding=batch_sharding)
