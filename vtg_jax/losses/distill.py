"""Distillation losses: on-policy distillation (Video-OPD §3.1), OP-RKD and OP-FKD (App. C), GKD.

Sign conventions. Video-OPD eq. 5: r_t = -(log pi_theta(a_t|s_t) - log pi_tea(a_t|s_t)), a reward
(<= 0 on average; its negation is a per-token reverse-KL sample). Eq. 6 is the *update direction*
(gradient of the loss): grad L = -E[sum_t r_t * ratio_t * grad log pi_theta], i.e. the loss
L = -E[sum_t sg(r_t) * ratio_t] with ratio_t = pi_theta / pi_old. At theta = theta_old its expected
gradient is +grad KL(pi_theta || pi_tea) (descending it lowers the reverse KL). Eq. 11 as printed
has the opposite sign on one side; the test suite checks the sign written here.

Per-token vs. sequence reverse KL. With gamma = 0 (each token only sees its own r_t, eq. 6) the
expected gradient is sum_t E_{s_t}[grad_theta KL(pi_theta(.|s_t) || pi_tea(.|s_t))] with the state
distribution held fixed. The gradient of the *sequence-level* reverse KL KL(pi_theta(tau) ||
pi_tea(tau)) additionally credits each token with the future rewards: use the return-to-go
(``gamma=1``); the test suite checks both identities exactly on an enumerable toy policy.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from vtg_jax.losses.aggregation import aggregate, masked_mean, masked_sum, to_float
from vtg_jax.losses.kl import bregman_terms
from vtg_jax.losses.logprobs import scaled_log_softmax, map_sequence_chunks
from vtg_jax.losses.policy_gradient import policy_gradient_loss

Array = jax.Array

TOPK_MODES = ("renormalized", "truncated", "tail")


def opd_token_rewards(student_logp: Array, teacher_logp: Array, mask: Array) -> Array:
    """r_t = log pi_tea(a_t|s_t) - log pi_theta(a_t|s_t), 0 where ``mask`` is 0 (Video-OPD eq. 5 / 24)."""
    mask_b = mask if mask.dtype == jnp.bool_ else mask != 0
    r = to_float(teacher_logp) - to_float(student_logp)
    return jnp.where(mask_b, r, 0.0)


def discounted_returns(rewards: Array, mask: Array, gamma: float = 1.0) -> Array:
    """Return-to-go G_t = sum_{t' >= t} gamma^(t'-t) m_t' r_t' along the last axis, 0 where masked.

    The discount counts positions (a masked gap still discounts). gamma = 0 gives r_t back.
    """
    mask_b = mask if mask.dtype == jnp.bool_ else mask != 0
    r = jnp.where(mask_b, to_float(rewards), 0.0)

    def step(carry: Array, r_t: Array) -> tuple[Array, Array]:
        g = r_t + gamma * carry
        return g, g

    _, g = lax.scan(step, jnp.zeros(r.shape[:-1], r.dtype), jnp.moveaxis(r, -1, 0), reverse=True)
    return jnp.where(mask_b, jnp.moveaxis(g, 0, -1), 0.0)


def opd_loss(
    logp: Array,
    old_logp: Array,
    teacher_logp: Array,
    mask: Array,
    *,
    gamma: float = 0.0,
    eps_low: Optional[float] = None,
    eps_high: Optional[float] = None,
    aggregation: str = "token-mean",
    max_len: Optional[int] = None,
) -> tuple[Array, dict[str, Array]]:
    """On-policy distillation loss (Video-OPD eq. 5-6): -sum_t sg(A_t) * pi_theta/pi_old, aggregated.

    Args:
      logp: ``[B, T]`` log pi_theta of the sampled tokens (differentiated).
      old_logp: ``[B, T]`` log pi_old recorded at sampling (Step 1); the reward uses these, so it is
        a constant (stop-gradient) as eq. 6 requires.
      teacher_logp: ``[B, T]`` log pi_tea of the same tokens (Step 2).
      mask: ``[B, T]`` valid completion tokens.
      gamma: 0 = per-token reward as in eq. 6; 1 = undiscounted return-to-go (sequence-level reverse
        KL gradient); in between = discounted.
      eps_low, eps_high: optional PPO clipping of the ratio (None = eq. 6 exactly, unclipped).
      aggregation: ``"seq-mean-token-sum"`` is eq. 6 literally (E_tau sum_t); the default
        ``"token-mean"`` divides by the token count instead.
    Returns:
      ``(loss, metrics)`` with the ``pg/*`` metrics plus ``opd/reward_mean`` (mean r_t),
      ``opd/reverse_kl`` (mean per-token log pi_old - log pi_tea) and ``opd/seq_reverse_kl``
      (mean over sequences of its sum, the DBTP disagreement of §3.2).
    """
    rewards = jax.lax.stop_gradient(opd_token_rewards(old_logp, teacher_logp, mask))
    adv = rewards if gamma == 0.0 else discounted_returns(rewards, mask, gamma)
    loss, metrics = policy_gradient_loss(
        logp, old_logp, adv, mask, eps_low, eps_high, aggregation, max_len=max_len
    )
    seq_valid = jnp.any(mask != 0, axis=-1)
    metrics["opd/reward_mean"] = masked_mean(rewards, mask)
    metrics["opd/reverse_kl"] = -metrics["opd/reward_mean"]
    metrics["opd/seq_reverse_kl"] = masked_mean(-masked_sum(rewards, mask, axis=-1), seq_valid)
    return loss, metrics


def op_rkd_loss(
    logp: Array, old_logp: Array, teacher_logp: Array, mask: Array, **kwargs
) -> tuple[Array, dict[str, Array]]:
    """OP-RKD (Video-OPD App. C.1, eq. 23-25): ``opd_loss`` on fixed ground-truth trajectories.

    The math is identical to Video-OPD; only the trajectories differ (corpus instead of student
    samples), which is the caller's business. Same arguments as ``opd_loss``.
    """
    return opd_loss(logp, old_logp, teacher_logp, mask, **kwargs)


def forward_kl(
    student_logits: Array,
    teacher_logits: Array,
    temperature: float | Array = 1.0,
    chunk_size: Optional[int] = None,
) -> Array:
    """l_t = KL(P_tea(.|s_t) || P_stu(.|s_t)) over the full vocabulary, per position (Video-OPD eq. 27).

    The teacher is wrapped in stop_gradient, so grad l_t = -sum_w P_tea(w) grad log P_stu(w) (eq. 28).
    """
    teacher_logits = jax.lax.stop_gradient(teacher_logits)

    def per_chunk(sl: Array, tl: Array) -> Array:
        terms = bregman_terms(scaled_log_softmax(tl, temperature), scaled_log_softmax(sl, temperature))
        return jnp.sum(terms, axis=-1)

    return map_sequence_chunks(per_chunk, (student_logits, teacher_logits), chunk_size)


def op_fkd_loss(
    student_logits: Array,
    teacher_logits: Array,
    mask: Array,
    aggregation: str = "seq-mean-token-sum",
    temperature: float | Array = 1.0,
    chunk_size: Optional[int] = None,
    max_len: Optional[int] = None,
) -> tuple[Array, dict[str, Array]]:
    """OP-FKD loss (Video-OPD App. C.2, eq. 29): E_tau sum_t l_t with l_t of eq. 27 (default aggregation)."""
    per_token = forward_kl(student_logits, teacher_logits, temperature, chunk_size)
    loss = aggregate(per_token, mask, aggregation, max_len)
    return loss, {"fkd/loss": jax.lax.stop_gradient(loss),
                  "fkd/forward_kl": masked_mean(jax.lax.stop_gradient(per_token), mask)}


def teacher_topk(teacher_logits: Array, k: int, temperature: float | Array = 1.0) -> tuple[Array, Array]:
    """(ids ``[..., k]``, log P_tea ``[..., k]``) of the teacher's k most probable tokens (full-softmax
    log-probs, not renormalised) - the format a remote teacher would send back."""
    logp = scaled_log_softmax(jax.lax.stop_gradient(teacher_logits), temperature)
    vals, ids = lax.top_k(logp, k)
    return ids, vals


def topk_forward_kl(
    student_logits: Array,
    teacher_topk_ids: Array,
    teacher_topk_logp: Array,
    mode: str = "renormalized",
    temperature: float | Array = 1.0,
) -> Array:
    """Forward KL from the teacher's top-k only, per position (an approximation of eq. 27).

    K = the k ids; P_tea(K) = sum of the k teacher probabilities; P_stu = full student softmax.
    Modes:
      * ``"renormalized"`` (default): KL(P~_tea || P_stu) with P~_tea = P_tea / P_tea(K) on K, 0 off K.
        A true KL between the truncated teacher and the student: >= 0, 0 iff P_stu = P~_tea; its
        gradient -sum_K P~_tea grad log P_stu is eq. 28 with the truncated teacher.
      * ``"truncated"``: sum_{w in K} P_tea log(P_tea / P_stu), eq. 27's sum cut to K. Its gradient is
        eq. 28 cut to K, but the value is *not* a divergence (it can be negative, like the naive
        subset KL of LongVTG-R1 §3.2).
      * ``"tail"``: the truncated sum plus the lumped tail (1 - P_tea(K)) log((1 - P_tea(K)) /
        (1 - P_stu(K))): the exact KL between the two distributions coarsened to K + {rest}; >= 0
        and <= the full eq. 27 (data processing).
    All three equal eq. 27 when K covers the teacher's support.
    """
    if mode not in TOPK_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {TOPK_MODES}")
    stu_logp_all = scaled_log_softmax(student_logits, temperature)
    stu_logp = jnp.take_along_axis(stu_logp_all, teacher_topk_ids.astype(jnp.int32), axis=-1)
    tea_logp = jax.lax.stop_gradient(to_float(teacher_topk_logp))
    if mode == "renormalized":
        tea_logp = tea_logp - jax.nn.logsumexp(tea_logp, axis=-1, keepdims=True)
    tea_p = jnp.exp(tea_logp)
    kl = jnp.sum(jnp.where(tea_p > 0, tea_p * (jnp.where(tea_p > 0, tea_logp, 0.0) - stu_logp), 0.0), axis=-1)
    if mode == "tail":
        tea_tail = jnp.clip(1.0 - jnp.sum(tea_p, axis=-1), 0.0, 1.0)
        stu_tail = jnp.clip(1.0 - jnp.sum(jnp.exp(stu_logp), axis=-1), 1e-30, 1.0)
        safe_tail = jnp.where(tea_tail > 0, tea_tail, 1.0)
        kl = kl + jnp.where(tea_tail > 0, tea_tail * (jnp.log(safe_tail) - jnp.log(stu_tail)), 0.0)
    return kl


def generalized_jsd(
    student_logits: Array,
    teacher_logits: Array,
    beta: float = 0.5,
    temperature: float | Array = 1.0,
    chunk_size: Optional[int] = None,
) -> Array:
    """Generalised JSD of GKD (Agarwal et al. 2024), per position, as TRL's ``generalized_jsd_loss``.

    M = beta P_tea + (1 - beta) P_stu;  JSD_beta = beta KL(P_tea || M) + (1 - beta) KL(P_stu || M).
    beta = 0 is defined as the forward KL(P_tea || P_stu) and beta = 1 as the reverse KL(P_stu || P_tea)
    (the limits of JSD_beta / beta and JSD_beta / (1 - beta)); ``beta`` must then be a Python number.
    The teacher is treated as constant.
    """
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    b = float(beta) if isinstance(beta, (int, float)) else None
    if b is not None and not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    def per_chunk(sl: Array, tl: Array) -> Array:
        ls = scaled_log_softmax(sl, temperature)
        lt = scaled_log_softmax(tl, temperature)
        if b == 0.0:
            return jnp.sum(bregman_terms(lt, ls), axis=-1)
        if b == 1.0:
            return jnp.sum(bregman_terms(ls, lt), axis=-1)
        bb = jnp.asarray(beta, ls.dtype)
        lm = jnp.logaddexp(lt + jnp.log(bb), ls + jnp.log1p(-bb))
        return bb * jnp.sum(bregman_terms(lt, lm), axis=-1) + (1.0 - bb) * jnp.sum(bregman_terms(ls, lm), axis=-1)

    return map_sequence_chunks(per_chunk, (student_logits, teacher_logits), chunk_size)
