"""KL divergences: sample estimators k1/k2/k3, exact KL from logits, token-aware subset KL.

Notation: ``p`` is the policy pi_theta (the distribution tokens were sampled from), ``q`` the
reference pi_ref. All logs are natural logs; outputs are float32.

Token-aware KL (LongVTG-R1 eq. 4): D^S(p||q) = q(S) - p(S) + sum_{o in S} p(o) log(p(o)/q(o)).
Writing the correction term per token gives

    D^S(p||q) = sum_{o in S} [q(o) - p(o) + p(o) log(p(o)/q(o))] = sum_{o in S} p(o) k3(o),
    k3(o) = exp(d) - 1 - d,  d = log q(o) - log p(o),

i.e. the expectation under p of the k3 estimator restricted to S. Every summand is >= 0, which is
how the code computes it (with ``expm1``), so D^S >= 0 holds in floating point too, not only in
exact arithmetic; the full-vocabulary case S = V is the exact KL(p||q).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from vtg_jax.losses.aggregation import to_float
from vtg_jax.losses.logprobs import scaled_log_softmax, map_sequence_chunks

Array = jax.Array

KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logp: Array, ref_logp: Array, kind: str = "k3", clamp: Optional[float] = None) -> Array:
    """Per-token Monte-Carlo estimate of KL(pi_theta || pi_ref) at tokens sampled from pi_theta.

    With log r = ref_logp - logp (Schulman, "Approximating KL divergence", 2020):
      k1 = -log r                       (unbiased, high variance, can be negative)
      k2 = (log r)^2 / 2                (biased, low variance; E_p[k2] = E_p[(log r)^2] / 2)
      k3 = exp(log r) - log r - 1       (unbiased, >= 0, low variance; the GRPO penalty of
                                          DeepSeekMath / LongVTG-R1 eq. 2)
    ``clamp`` clips the estimate to [-clamp, clamp] (verl's ``low_var_kl`` uses 10).
    """
    log_r = to_float(ref_logp) - to_float(logp)
    if kind == "k1":
        kl = -log_r
    elif kind == "k2":
        kl = 0.5 * jnp.square(log_r)
    elif kind == "k3":
        kl = jnp.expm1(log_r) - log_r
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")
    if clamp is not None:
        kl = jnp.clip(kl, -clamp, clamp)
    return kl


def bregman_terms(logp: Array, logq: Array) -> Array:
    """Elementwise q - p + p log(p/q) = p * k3(log q - log p) >= 0, safe for p = 0 or q = 0.

    p = 0 gives q (the limit); q = 0 < p gives +inf (as in LongVTG-R1 App. B, case 2).
    """
    p = jnp.exp(logp)
    q = jnp.exp(logq)
    pos = p > 0
    d = jnp.where(pos, logq - jnp.where(pos, logp, 0.0), 0.0)
    # d <= 1: p * (expm1(d) - d) has no cancellation; d > 1 (q >> p): q - p - p d, no overflow of exp.
    small = p * (jnp.expm1(jnp.minimum(d, 1.0)) - jnp.minimum(d, 1.0))
    large = q - p - p * jnp.maximum(d, 1.0)
    return jnp.where(pos, jnp.where(d <= 1.0, small, large), q)


def _weighted_kl_from_logits(
    p_logits: Array, q_logits: Array, weights: Array, temperature: float | Array, chunk_size: Optional[int]
) -> Array:
    """sum_o w(o) [q(o) - p(o) + p(o) log(p(o)/q(o))] per position; ``weights`` is ``[V]``."""
    w = jnp.asarray(weights, jnp.float32)

    def per_chunk(pl: Array, ql: Array) -> Array:
        terms = bregman_terms(scaled_log_softmax(pl, temperature), scaled_log_softmax(ql, temperature))
        return jnp.sum(jnp.where(w != 0, w * terms, 0.0), axis=-1)

    return map_sequence_chunks(per_chunk, (p_logits, q_logits), chunk_size)


def exact_kl(
    p_logits: Array, q_logits: Array, temperature: float | Array = 1.0, chunk_size: Optional[int] = None
) -> Array:
    """KL(p || q) = sum_v p_v log(p_v / q_v) per position from two sets of logits ``[..., V] -> [...]``.

    LongVTG-R1 eq. 3 (the full-vocabulary KL that eq. 4 generalises).
    """
    ones = jnp.ones(p_logits.shape[-1], jnp.float32)
    return _weighted_kl_from_logits(p_logits, q_logits, ones, temperature, chunk_size)


def subset_kl(
    p_logits: Array,
    q_logits: Array,
    subset_mask: Array,
    temperature: float | Array = 1.0,
    chunk_size: Optional[int] = None,
) -> Array:
    """Token-aware KL D^S(p||q) = q(S) - p(S) + sum_{o in S} p log(p/q) per position (LongVTG-R1 eq. 4).

    Args:
      p_logits: ``[..., V]`` policy logits.
      q_logits: ``[..., V]`` reference logits.
      subset_mask: ``bool[V]``, True for the tokens of S.
    Returns:
      ``[...]`` float32, >= 0, equal to 0 iff p = q on S (0 for an empty S).
    """
    if subset_mask.shape != (p_logits.shape[-1],):
        raise ValueError(f"subset_mask must be [V={p_logits.shape[-1]}], got {subset_mask.shape}")
    weights = jnp.asarray(subset_mask).astype(jnp.float32)
    return _weighted_kl_from_logits(p_logits, q_logits, weights, temperature, chunk_size)


def token_aware_kl(
    p_logits: Array,
    q_logits: Array,
    time_mask: Array,
    beta_text: float = 0.04,
    beta_time: float = 0.0,
    temperature: float | Array = 1.0,
    chunk_size: Optional[int] = None,
) -> Array:
    """beta_text D^{S_text}(p||q) + beta_time D^{S_time}(p||q) per position (LongVTG-R1 eq. 5).

    ``time_mask`` is ``bool[V]`` marking S_time; S_text is its complement. One pass over the vocabulary.
    Defaults are the paper's (beta_text = 0.04, beta_time = 0).
    """
    if time_mask.shape != (p_logits.shape[-1],):
        raise ValueError(f"time_mask must be [V={p_logits.shape[-1]}], got {time_mask.shape}")
    weights = jnp.where(jnp.asarray(time_mask, bool), beta_time, beta_text).astype(jnp.float32)
    return _weighted_kl_from_logits(p_logits, q_logits, weights, temperature, chunk_size)


def subset_naive_kl(p_logits: Array, q_logits: Array, subset_mask: Array) -> Array:
    """The *naive* masked KL sum_{o in S} p log(p/q) that LongVTG-R1 §3.2 rejects (can be negative,
    down to -q(S)/e). Provided only to document and test that failure mode; do not train with it."""
    logp = scaled_log_softmax(p_logits, 1.0)
    logq = scaled_log_softmax(q_logits, 1.0)
    p = jnp.exp(logp)
    terms = jnp.where(p > 0, p * (jnp.where(p > 0, logp, 0.0) - logq), 0.0)
    return jnp.sum(jnp.where(jnp.asarray(subset_mask, bool), terms, 0.0), axis=-1)


def token_aware_kl_estimate(
    logp: Array,
    ref_logp: Array,
    tokens: Array,
    time_mask: Array,
    beta_text: float = 0.04,
    beta_time: float = 0.0,
    clamp: Optional[float] = None,
) -> Array:
    """Sampled-token estimate of LongVTG-R1 eq. 5: w(a_t) * k3_t with w = beta_time on S_time else beta_text.

    Since D^S(p||q) = E_{o~p}[1_S(o) k3(o)] (module docstring), this is an unbiased per-token estimate
    of eq. 5 from log-probs alone (no full-vocabulary logits needed). ``tokens [B, T]`` are the sampled
    ids, ``time_mask bool[V]``.
    """
    is_time = jnp.take(jnp.asarray(time_mask, bool), tokens.astype(jnp.int32), axis=0)
    w = jnp.where(is_time, beta_time, beta_text).astype(jnp.float32)
    return w * kl_estimate(logp, ref_logp, "k3", clamp)
