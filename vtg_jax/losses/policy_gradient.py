"""Clipped policy-gradient surrogate (PPO / GRPO / DAPO clip-higher / dual clip / GSPO).

Per token (LongVTG-R1 eq. 2, TempSamp-R1 eq. 1, PPO):

    ratio_t = exp(logp_t - old_logp_t)
    loss_t  = -min(ratio_t A_t, clip(ratio_t, 1 - eps_low, 1 + eps_high) A_t)  [+ kl_coef * kl_t]

* ``eps_low != eps_high`` is DAPO's clip-higher; ``eps_low = eps_high = None`` disables clipping
  (the plain importance-weighted policy gradient of Video-OPD eq. 6).
* ``dual_clip = c > 1`` (Ye et al. 2020): for A_t < 0 the loss is additionally capped at -c A_t, so a
  huge ratio on a negative-advantage token cannot blow up the update.
* ``ratio_level="sequence"`` (GSPO, Zheng et al. 2025): s_i = exp(mean_{t valid} (logp - old_logp)),
  used for every token of sequence i, in GSPO's token form
  ratio_{i,t} = sg(s_i) * exp(logp_t - sg(logp_t)): the value is s_i on every token and, with
  per-sequence advantages and "seq-mean-token-mean", the gradient equals that of the sequence-level
  objective min(s_i A_i, clip(s_i) A_i).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from vtg_jax.losses.aggregation import aggregate, masked_mean, to_float

Array = jax.Array

# exp(+-20) keeps the ratio finite in float32; |log ratio| > 20 only happens for garbage inputs.
_LOG_RATIO_CLIP = 20.0


def _broadcast_advantages(advantages: Array, shape: tuple[int, ...]) -> Array:
    adv = to_float(advantages)
    if adv.ndim == 1:
        if adv.shape[0] != shape[0]:
            raise ValueError(f"advantages [B] has B={adv.shape[0]}, logp has {shape}")
        adv = adv[:, None]
    elif adv.shape != shape:
        raise ValueError(f"advantages must be [B] or [B, T]={shape}, got {adv.shape}")
    return jnp.broadcast_to(adv, shape)


def log_ratio(logp: Array, old_logp: Array, mask: Array, ratio_level: str = "token") -> Array:
    """log pi_theta / pi_old per token, or GSPO's per-sequence mean log-ratio in token form."""
    lr = jnp.clip(to_float(logp) - to_float(old_logp), -_LOG_RATIO_CLIP, _LOG_RATIO_CLIP)
    if ratio_level == "token":
        return lr
    if ratio_level == "sequence":
        seq_lr = masked_mean(lr, mask, axis=-1)[:, None]
        lp = to_float(logp)
        return jax.lax.stop_gradient(seq_lr) + lp - jax.lax.stop_gradient(lp)
    raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")


def policy_gradient_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    eps_low: Optional[float] = 0.2,
    eps_high: Optional[float] = 0.2,
    aggregation: str = "token-mean",
    *,
    dual_clip: Optional[float] = None,
    ratio_level: str = "token",
    kl_penalty: Optional[Array] = None,
    kl_coef: float = 0.0,
    max_len: Optional[int] = None,
) -> tuple[Array, dict[str, Array]]:
    """Clipped surrogate loss (to minimise) and metrics.

    Args:
      logp: ``[B, T]`` log pi_theta of the taken tokens (differentiated).
      old_logp: ``[B, T]`` log pi_old from the sampler (treated as constant).
      advantages: ``[B]`` per sequence (broadcast over T) or ``[B, T]`` per token; treated as constant.
      mask: ``[B, T]`` valid completion tokens.
      eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high]; both None = no clipping.
      aggregation: see ``aggregation.aggregate``.
      dual_clip: constant c > 1 of dual-clip PPO, or None.
      ratio_level: ``"token"`` (PPO/GRPO) or ``"sequence"`` (GSPO).
      kl_penalty: optional ``[B, T]`` per-token penalty (e.g. ``kl_estimate(logp, ref_logp)`` or
        ``token_aware_kl(...)``) added as ``kl_coef * kl_penalty`` before aggregation, as in GRPO.
      max_len: normaliser for ``"seq-mean-token-sum-norm"``.
    Returns:
      ``(loss, metrics)``; metric keys ``pg/loss``, ``pg/clip_frac`` (fraction of valid tokens where
      the clipped branch is active), ``pg/clip_frac_low``, ``pg/clip_frac_high``, ``pg/dual_clip_frac``,
      ``pg/ratio_mean``, ``pg/ratio_min``, ``pg/ratio_max``, ``pg/approx_kl`` (mean (r-1) - log r,
      a k3 estimate of KL(pi_old || pi_theta)), and ``pg/kl_penalty`` when a penalty is given.
    """
    if (eps_low is None) != (eps_high is None):
        raise ValueError("eps_low and eps_high must both be set or both be None")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask_b = mask if mask.dtype == jnp.bool_ else mask != 0
    adv = jax.lax.stop_gradient(_broadcast_advantages(advantages, logp.shape))
    lr = log_ratio(logp, jax.lax.stop_gradient(old_logp), mask_b, ratio_level)
    ratio = jnp.exp(lr)

    surr1 = ratio * adv
    if eps_low is None:
        pg = -surr1
        clipped_low = clipped_high = jnp.zeros_like(mask_b)
        clip_active = jnp.zeros_like(mask_b)
    else:
        clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
        surr2 = clipped_ratio * adv
        pg = -jnp.minimum(surr1, surr2)
        clip_active = surr2 < surr1
        clipped_low = (ratio < 1.0 - eps_low) & (adv < 0)
        clipped_high = (ratio > 1.0 + eps_high) & (adv > 0)
    dual_active = jnp.zeros_like(mask_b)
    if dual_clip is not None:
        cap = -dual_clip * adv
        dual_active = (adv < 0) & (pg > cap)
        pg = jnp.where(adv < 0, jnp.minimum(pg, cap), pg)

    per_token = pg
    if kl_penalty is not None:
        per_token = per_token + kl_coef * to_float(kl_penalty)
    loss = aggregate(per_token, mask_b, aggregation, max_len)

    sg = jax.lax.stop_gradient
    ratio_v = sg(ratio)
    big = jnp.finfo(jnp.float32).max
    metrics = {
        "pg/loss": sg(loss),
        "pg/clip_frac": masked_mean(clip_active.astype(jnp.float32), mask_b),
        "pg/clip_frac_low": masked_mean(clipped_low.astype(jnp.float32), mask_b),
        "pg/clip_frac_high": masked_mean(clipped_high.astype(jnp.float32), mask_b),
        "pg/dual_clip_frac": masked_mean(dual_active.astype(jnp.float32), mask_b),
        "pg/ratio_mean": masked_mean(ratio_v, mask_b),
        "pg/ratio_min": jnp.where(jnp.any(mask_b), jnp.min(jnp.where(mask_b, ratio_v, big)), 1.0),
        "pg/ratio_max": jnp.where(jnp.any(mask_b), jnp.max(jnp.where(mask_b, ratio_v, -big)), 1.0),
        "pg/approx_kl": masked_mean(jnp.expm1(sg(lr)) - sg(lr), mask_b),
    }
    if kl_penalty is not None:
        metrics["pg/kl_penalty"] = masked_mean(sg(kl_penalty), mask_b)
    return loss, metrics
