"""GRPO step (TVG-R1, Time-R1, LongVTG-R1 baselines; TempSamp-R1 reuses it): clipped policy gradient
plus a KL penalty to a frozen reference policy.

    cfg = GRPOConfig(eps_low=0.2, eps_high=0.28, kl="k3", beta=0.04)
    step = make_grpo_step(graphdef, tx, schedule, cfg)
    state, metrics = step(state, frozen, build_rl_batch(..., ref_logp=ref))

Loss per token (TempSamp-R1 eq. 1, LongVTG-R1 eq. 2): -min(r_t A, clip(r_t, 1-eps_low, 1+eps_high) A)
+ beta · KL_t, aggregated by `cfg.aggregation` (`losses.policy_gradient_loss`). KL_t is
* `kl="k3"`: the k3 estimator of KL(pi_theta || pi_ref) at the sampled tokens (DeepSeekMath / LongVTG-R1
  eq. 2), weighted by `beta` (beta = 0: TVG-R1, the KL is then only reported);
* `kl="token_aware"`: LongVTG-R1 eq. 4–5's subset KL, estimated at the sampled tokens
  (`losses.token_aware_kl_estimate`: beta_time on timestamp tokens `time_mask`, beta_text elsewhere);
* `kl="none"`: no reference at all (the batch needs no `ref_logp`).

Why the reference log-probs are precomputed (`sampling.score(ref_model, inputs, tokens, mask)` on the
rollout, batch field `ref_logp`) rather than computed in the step: both KL forms above need only the
reference's log-prob of the sampled token, the reference then never occupies memory next to the
trained state and its optimizer moments, it shares the sampler's one-prefill-per-prompt scoring, and
it may live on another mesh or be another model class. Like every frozen model, it is never in the trained state.

Off-policy rows (`off_policy` True, TempSamp-R1 §3.2): their "old" log-prob is the current policy's
(stop-gradient), so their importance ratio is exactly 1 (TempSamp-R1 §3.1: with pi_old = pi_theta
"the importance weights collapse to unity"); the gradient is then A_G · grad log pi_theta(o_G).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vtg_jax.losses import AGGREGATIONS, kl_estimate, masked_mean, policy_gradient_loss, token_aware_kl_estimate
from vtg_jax.train.rl_batch import Metrics, RLBatch, aggregate_count, batch_metrics, completion_logprobs
from vtg_jax.train.update import make_policy_step

KL_MODES = ("none", "k3", "token_aware")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """Hyper-parameters of the GRPO loss; defaults: PPO clip 0.2, token-mean, no KL (TVG-R1: beta = 0)."""

    eps_low: Optional[float] = 0.2
    eps_high: Optional[float] = 0.2
    aggregation: str = "token-mean"
    kl: str = "none"
    beta: float = 0.0  # weight of the k3 penalty
    beta_text: float = 0.04  # token-aware KL weights (LongVTG-R1 defaults)
    beta_time: float = 0.0
    kl_clamp: Optional[float] = None
    dual_clip: Optional[float] = None
    ratio_level: str = "token"
    temperature: float = 1.0  # the sampling temperature: the ratio must use the sampler's distribution
    max_len: Optional[int] = None
    chunk_size: Optional[int] = None
    shared_prefix: bool = False  # one text-stack pass per prompt for its G rows (train/rl_batch.py)

    def __post_init__(self):
        if self.kl not in KL_MODES:
            raise ValueError(f"kl must be one of {KL_MODES}, got {self.kl!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")


def grpo_loss(cfg: GRPOConfig, model: nnx.Module, mb: RLBatch, time_mask: Optional[jax.Array] = None
              ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Metrics]]:
    """(loss_sum, (count, tokens, metrics)) of one micro-batch (the contract of `update.accumulate_grads`)."""
    mask = mb.completion_mask
    logp, _ = completion_logprobs(model, mb, cfg.temperature, cfg.chunk_size, cfg.shared_prefix)
    # Off-policy (ground-truth) rows: pi_old := sg(pi_theta), ratio 1 (module docstring).
    old = jnp.where(mb.off_policy[:, None], jax.lax.stop_gradient(logp), mb.old_logp)
    kl, coef, kl_metric = None, 0.0, None
    if cfg.kl != "none":
        ref = mb.ref_logp
        kl_metric = masked_mean(jax.lax.stop_gradient(kl_estimate(logp, ref, "k3")), mask)
        if cfg.kl == "k3":
            kl, coef = kl_estimate(logp, ref, "k3", cfg.kl_clamp), cfg.beta
        else:
            kl, coef = token_aware_kl_estimate(logp, ref, mb.completions, time_mask, cfg.beta_text,
                                               cfg.beta_time, cfg.kl_clamp), 1.0
    loss, m = policy_gradient_loss(logp, old, mb.advantages, mask, cfg.eps_low, cfg.eps_high, cfg.aggregation,
                                   dual_clip=cfg.dual_clip, ratio_level=cfg.ratio_level, kl_penalty=kl,
                                   kl_coef=coef, max_len=cfg.max_len)
    count = aggregate_count(mask, cfg.aggregation)
    tokens = jnp.sum((mask != 0).astype(jnp.float32))
    metrics = {**m, **batch_metrics(mb), "loss/pg": m["pg/loss"]}
    metrics["rl/kl_ref"] = kl_metric if kl_metric is not None else jnp.zeros((), jnp.float32)
    metrics["rl/off_policy_ratio"] = masked_mean(jnp.exp(jax.lax.stop_gradient(logp - old)),
                                                 (mask != 0) & mb.off_policy[:, None])
    return loss * count, (count, tokens, metrics)


def make_grpo_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any],
                   cfg: GRPOConfig = GRPOConfig(), *, time_mask: Optional[Any] = None, state_sharding: Any = None,
                   frozen_sharding: Any = None, batch_sharding: Any = None, donate: bool = True) -> Callable:
    """`step(state, frozen, batch) -> (state, metrics)`, jitted once with `state` donated.

    batch: an `RLBatch` of `rollout.build_rl_batch(...)` ([A, ...] micro-batches; its `ref_logp` is
    required unless cfg.kl == "none": tracing a batch without it raises a ValueError).
    time_mask: bool [V] timestamp tokens (`losses.timestamp_token_mask`), required for "token_aware".
    Shardings as in `make_sft_step` (call a sharded step inside `parallel.rules.sharded_call`).
    """
    if cfg.kl == "token_aware" and time_mask is None:
        raise ValueError("kl='token_aware' needs time_mask (bool [V] of timestamp tokens)")
    tmask = None if time_mask is None else jnp.asarray(time_mask, bool)
    needed = ("rewards", "advantages", "old_logp") + (("ref_logp",) if cfg.kl != "none" else ())

    return make_policy_step(graphdef, tx, schedule, lambda model, mb: grpo_loss(cfg, model, mb, tmask), needed,
                            objective=f"GRPO (kl={cfg.kl!r})", state_sharding=state_sharding,
                            frozen_sharding=frozen_sharding, batch_sharding=batch_sharding, donate=donate)


def make_tempsamp_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: Callable[[Any], Any],
                       cfg: GRPOConfig = GRPOConfig(), **kwargs: Any) -> Callable:
    """`step(state, frozen, batch)`: `make_grpo_step` on a batch whose `off_policy` marks the
    ground-truth rows (see the module docstring); kwargs as `make_grpo_step`."""
    return make_grpo_step(graphdef, tx, schedule, cfg, **kwargs)
