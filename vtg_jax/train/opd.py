"""Video-OPD step (§3.1, eqs. 5–6) and its OP-RKD baseline (App. C.1, eqs. 23–25).

    teacher_logp = sampling.score(teacher, inputs, out["tokens"], completion_mask(out["lengths"], N))
    batch = build_rl_batch(cfg, prompts, out["tokens"], out["lengths"], out["logprobs"],
                           np.zeros((B, 1)), teacher_logp=teacher_logp)          # G = 1 rollout
    state, metrics = opd_step(state, frozen, batch)

Per-token reward r_t = log pi_tea(a_t|s_t) − log pi_old(a_t|s_t) (eq. 5, from the sampler's log-probs,
a constant), loss −Σ_t sg(r_t) · pi_theta/pi_old aggregated (eq. 6; `losses.opd_loss`, gamma > 0 for
return-to-go credit). `rl/reverse_kl` is the mean over completion tokens of log pi_theta − log pi_tea
under the CURRENT policy (the step's own forward), i.e. the per-token reverse-KL sample the objective
lowers; `opd/reverse_kl` is the same with the sampler's log-probs.

Why the teacher log-probs are precomputed (`sampling.score`, batch field `teacher_logp`): eq. 5–6 need
only log pi_tea of the student's tokens; the teacher (any size: it is just another model) then never
sits in memory next to the trained state, shares the sampler's prefill-once scoring, and the step
needs no teacher graph. OP-FKD, which needs the teacher's whole distribution, computes it in the step
(`vtg_jax.train.distill`).

OP-RKD runs the same loss on fixed ground-truth trajectories (G = 1 row per prompt: the processor's
answer tokens). There is no sampling policy, so pi_old is the current policy at the update (its
stop-gradient log-prob, ratio 1): r_t = log pi_tea − log pi_theta as eq. 24 reads, computed in the step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vtg_jax.losses import AGGREGATIONS, masked_mean, opd_loss
from vtg_jax.train.rl_batch import Metrics, RLBatch, aggregate_count, batch_metrics, completion_logprobs
from vtg_jax.train.update import make_policy_step


@dataclasses.dataclass(frozen=True)
class OPDConfig:
    """Video-OPD loss settings; defaults are eq. 6 (gamma 0, unclipped) with a token-mean."""

    gamma: float = 0.0
    eps_low: Optional[float] = None
    eps_high: Optional[float] = None
    aggregation: str = "token-mean"
    temperature: float = 1.0
    max_len: Optional[int] = None
    chunk_size: Optional[int] = None
    shared_prefix: bool = False  # one text-stack pass per prompt for its G rows (train/rl_batch.py)

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")


def opd_micro_loss(cfg: OPDConfig, model: nnx.Module, mb: RLBatch, old_from_policy: bool
                   ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Metrics]]:
    """(loss_sum, (count, tokens, metrics)) of one micro-batch; `old_from_policy` is OP-RKD's pi_old."""
    mask = mb.completion_mask
    logp, _ = completion_logprobs(model, mb, cfg.temperature, cfg.chunk_size, cfg.shared_prefix)
    old = jax.lax.stop_gradient(logp) if old_from_policy else mb.old_logp
    loss, m = opd_loss(logp, old, mb.teacher_logp, mask, gamma=cfg.gamma, eps_low=cfg.eps_low,
                       eps_high=cfg.eps_high, aggregation=cfg.aggregation, max_len=cfg.max_len)
    count = aggregate_count(mask, cfg.aggregation)
    tokens = jnp.sum((mask != 0).astype(jnp.float32))
    metrics = {**m, **batch_metrics(mb), "loss/pg": m["pg/loss"],
               "rl/reverse_kl": masked_mean(jax.lax.stop_gradient(logp) - mb.teacher_logp, mask)}
    return loss * count, (count, tokens, metrics)


def _make(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable, cfg: OPDConfig,
          old_from_policy: bool, state_sharding: Any, frozen_sharding: Any, batch_sharding: Any,
          donate: bool) -> Callable:
    needed = ("teacher_logp",) + (() if old_from_policy else ("old_logp",))

    return make_policy_step(graphdef, tx, schedule, lambda model, mb: opd_micro_loss(cfg, model, mb, old_from_policy),
                            needed, objective="OP-RKD" if old_from_policy else "Video-OPD",
                            state_sharding=state_sharding, frozen_sharding=frozen_sharding,
                            batch_sharding=batch_sharding, donate=donate)


def make_opd_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any],
                  cfg: OPDConfig = OPDConfig(), *, state_sharding: Any = None, frozen_sharding: Any = None,
                  batch_sharding: Any = None, donate: bool = True) -> Callable:
    """Video-OPD `step(state, frozen, batch) -> (state, metrics)`, jitted once, `state` donated.
    batch: `build_rl_batch(..., teacher_logp=...)` of the student's rollouts (old_logp = sampler's)."""
    return _make(graphdef, tx, schedule, cfg, False, state_sharding, frozen_sharding, batch_sharding, donate)


def make_op_rkd_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any],
                     cfg: OPDConfig = OPDConfig(aggregation="seq-mean-token-sum"), *, state_sharding: Any = None,
                     frozen_sharding: Any = None, batch_sharding: Any = None, donate: bool = True) -> Callable:
    """OP-RKD (Video-OPD App. C.1): the OPD loss on ground-truth trajectories with pi_old = sg(pi_theta);
    default aggregation E_tau Σ_t (eq. 25 literally). batch: `build_rl_batch` of the GT answers (G = 1)
    with `teacher_logp = sampling.score(teacher, inputs, gt_tokens, gt_mask)`."""
    return _make(graphdef, tx, schedule, cfg, True, state_sharding, frozen_sharding, batch_sharding, donate)
