"""Pure loss math over arrays with explicit masks (float32, jit-able, no model inside).

| formula | paper | function |
|---|---|---|
| log pi(a_t|s_t) = log softmax(z_t / T)[a_t] | Video-OPD eq. 4-5 | ``token_logprobs`` |
| H_t = -sum_v p log p | - | ``entropy``, ``token_logprobs_and_entropy`` |
| token-mean / seq-mean-token-mean / Dr.GRPO sum-norm / seq sum | LongVTG-R1 eq. 2, Video-OPD eq. 6 | ``aggregate`` |
| -min(r A, clip(r, 1-eps_l, 1+eps_h) A), dual clip, GSPO ratio | TempSamp-R1 eq. 1, LongVTG-R1 eq. 2 | ``policy_gradient_loss`` |
| k1, k2, k3 | LongVTG-R1 eq. 2 (KL term) | ``kl_estimate`` |
| KL(p||q) from logits | LongVTG-R1 eq. 3 | ``exact_kl`` |
| D^S = q(S) - p(S) + sum_S p log(p/q) | LongVTG-R1 eq. 4 | ``subset_kl`` |
| beta_text D^{S_text} + beta_time D^{S_time} | LongVTG-R1 eq. 5 | ``token_aware_kl``, ``token_aware_kl_estimate`` |
| S_time from a vocabulary | LongVTG-R1 §3.2 | ``timestamp_token_mask`` |
| r_t = log pi_tea - log pi_theta | Video-OPD eq. 5, 24 | ``opd_token_rewards`` |
| -E sum_t sg(r_t) pi_theta/pi_old | Video-OPD eq. 6, 25 | ``opd_loss``, ``op_rkd_loss`` |
| KL(P_tea||P_stu), grad, E sum_t | Video-OPD eq. 27-29 | ``forward_kl``, ``op_fkd_loss``, ``topk_forward_kl`` |
| generalised JSD (GKD) | Agarwal et al. 2024 | ``generalized_jsd`` |
"""
from vtg_jax.losses.aggregation import AGGREGATIONS, aggregate, masked_mean, masked_sum, to_float
from vtg_jax.losses.distill import (
    TOPK_MODES,
    discounted_returns,
    forward_kl,
    generalized_jsd,
    op_fkd_loss,
    op_rkd_loss,
    opd_loss,
    opd_token_rewards,
    teacher_topk,
    topk_forward_kl,
)
from vtg_jax.losses.kl import (
    KL_KINDS,
    exact_kl,
    kl_estimate,
    subset_kl,
    subset_naive_kl,
    token_aware_kl,
    token_aware_kl_estimate,
)
from vtg_jax.losses.logprobs import (
    entropy,
    log_softmax,
    map_sequence_chunks,
    token_logprobs,
    token_logprobs_and_entropy,
)
from vtg_jax.losses.policy_gradient import log_ratio, policy_gradient_loss
from vtg_jax.losses.vocab import decode_token, is_timestamp_text, timestamp_token_mask

__all__ = [
    "AGGREGATIONS",
    "KL_KINDS",
    "TOPK_MODES",
    "aggregate",
    "decode_token",
    "discounted_returns",
    "entropy",
    "exact_kl",
    "forward_kl",
    "generalized_jsd",
    "is_timestamp_text",
    "kl_estimate",
    "log_ratio",
    "log_softmax",
    "map_sequence_chunks",
    "masked_mean",
    "masked_sum",
    "op_fkd_loss",
    "op_rkd_loss",
    "opd_loss",
    "opd_token_rewards",
    "policy_gradient_loss",
    "subset_kl",
    "subset_naive_kl",
    "teacher_topk",
    "timestamp_token_mask",
    "token_aware_kl",
    "token_aware_kl_estimate",
    "to_float",
    "token_logprobs",
    "token_logprobs_and_entropy",
    "topk_forward_kl",
]
