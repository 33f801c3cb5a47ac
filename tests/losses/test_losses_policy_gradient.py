"""policy_gradient_loss: hand values, clip-higher, dual clip, GSPO, gradients, TRL parity (torch)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vtg_jax.losses import kl_estimate, policy_gradient_loss


def _lp(ratios):
    return jnp.log(jnp.asarray(ratios, jnp.float32))


def test_hand_values_token_level():
    # Ratios 1.5 (A=+1, clipped at 1.2), 0.5 (A=-1, clipped at 0.8), 1.1 (A=+1, not clipped), pad.
    logp = _lp([[1.5, 0.5, 1.1, 7.0]])
    old = jnp.zeros((1, 4))
    adv = jnp.array([[1.0, -1.0, 1.0, 1.0]])
    mask = jnp.array([[1, 1, 1, 0]])
    loss, m = policy_gradient_loss(logp, old, adv, mask, 0.2, 0.2)
    # per token: -min(1.5, 1.2) = -1.2; -min(-0.5, -0.8) = 0.8; -1.1 -> mean -1.5/3.
    np.testing.assert_allclose(loss, (-1.2 + 0.8 - 1.1) / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg/clip_frac"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg/clip_frac_high"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg/clip_frac_low"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg/ratio_mean"], (1.5 + 0.5 + 1.1) / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg/ratio_max"], 1.5, rtol=1e-6)
    np.testing.assert_allclose(m["pg/ratio_min"], 0.5, rtol=1e-6)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    np.testing.assert_allclose(m["pg/approx_kl"], sum(kl) / 3, rtol=1e-5)


def test_clip_higher_and_per_sequence_advantages():
    logp = _lp([[1.25, 1.25], [0.7, 1.0]])
    adv = jnp.array([2.0, -1.0])  # [B] broadcast over T
    mask = jnp.ones((2, 2))
    loss, m = policy_gradient_loss(logp, jnp.zeros((2, 2)), adv, mask, eps_low=0.2, eps_high=0.28)
    # Row 0: ratio 1.25 < 1.28 not clipped -> -2.5 each. Row 1: 0.7 -> -min(-0.7, -0.8) = 0.8; 1.0 -> 1.0.
    np.testing.assert_allclose(loss, (-2.5 - 2.5 + 0.8 + 1.0) / 4, rtol=1e-6)
    np.testing.assert_allclose(m["pg/clip_frac"], 1 / 4, rtol=1e-6)


def test_no_clip_is_plain_importance_weighting():
    logp = _lp([[3.0, 0.1]])
    loss, m = policy_gradient_loss(logp, jnp.zeros((1, 2)), jnp.array([[1.0, 2.0]]), jnp.ones((1, 2)), None, None)
    np.testing.assert_allclose(loss, -(3.0 + 0.2) / 2, rtol=1e-6)
    assert float(m["pg/clip_frac"]) == 0.0


def test_dual_clip_caps_negative_advantages():
    logp = _lp([[10.0, 10.0]])
    adv = jnp.array([[-1.0, 1.0]])
    loss, m = policy_gradient_loss(logp, jnp.zeros((1, 2)), adv, jnp.ones((1, 2)), 0.2, 0.2, dual_clip=3.0)
    # A<0: -min(-10, -1.2) = 10 capped at -c A = 3; A>0: -min(10, 1.2) = -1.2.
    np.testing.assert_allclose(loss, (3.0 - 1.2) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["pg/dual_clip_frac"], 0.5)
    g = jax.grad(lambda lp: policy_gradient_loss(lp, jnp.zeros((1, 2)), adv, jnp.ones((1, 2)), dual_clip=3.0)[0])(logp)
    np.testing.assert_allclose(g, [[0.0, 0.0]], atol=1e-7)  # both branches are constants
    with pytest.raises(ValueError):
        policy_gradient_loss(logp, logp, adv, jnp.ones((1, 2)), dual_clip=0.5)


def test_empty_mask_gives_zero_loss_and_finite_metrics():
    logp = _lp([[2.0, 3.0]])
    loss, m = policy_gradient_loss(logp, jnp.zeros((1, 2)), jnp.ones((1,)), jnp.zeros((1, 2)))
    assert float(loss) == 0.0
    assert all(np.isfinite(float(v)) for v in m.values())


def test_gradient_at_ratio_one_is_advantage_times_grad_logp():
    """At theta = theta_old the surrogate's gradient is -A * grad log pi (token-mean: / n_tokens)."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 5, size=(2, 3)))
    adv = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])

    def logp_of(x):
        return jnp.take_along_axis(jax.nn.log_softmax(x), tokens[..., None], -1)[..., 0]

    old = jax.lax.stop_gradient(logp_of(logits))
    g = jax.jit(jax.grad(lambda x: policy_gradient_loss(logp_of(x), old, adv, mask, 0.2, 0.28)[0]))(logits)
    expected = jax.jit(jax.grad(lambda x: -jnp.sum(jnp.where(mask > 0, adv * logp_of(x), 0.0)) / 5))(logits)
    np.testing.assert_allclose(g, expected, atol=1e-6)


def test_gspo_sequence_ratio():
    logp = jnp.log(jnp.array([[2.0, 0.5, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0]]))
    old = jnp.zeros((2, 4))
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = jnp.array([1.0, -1.0])
    loss, m = policy_gradient_loss(logp, old, adv, mask, 10.0, 10.0, "seq-mean-token-mean", ratio_level="sequence")
    s0 = math.exp((math.log(2.0) + math.log(0.5) + math.log(4.0)) / 3)  # geometric mean = 4^(1/3)
    np.testing.assert_allclose(loss, (-s0 + 1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["pg/ratio_mean"], (3 * s0 + 2) / 5, rtol=1e-6)
    # Gradient equals that of the sequence objective -(1/G) sum_i s_i A_i with s_i = exp(mean log-ratio).
    g = jax.jit(jax.grad(lambda lp: policy_gradient_loss(lp, old, adv, mask, 10.0, 10.0, "seq-mean-token-mean",
                                                         ratio_level="sequence")[0]))(logp)

    def seq_obj(lp):
        s = jnp.exp(jnp.sum(jnp.where(mask > 0, lp - old, 0.0), -1) / jnp.sum(mask, -1))
        return -jnp.mean(s * adv)

    np.testing.assert_allclose(g, jax.jit(jax.grad(seq_obj))(logp), atol=1e-6)
    # Clipping acts on the sequence ratio: s0 = 1.587 > 1.2 with A > 0 -> every token clipped.
    _, m2 = policy_gradient_loss(logp, old, adv, mask, 0.2, 0.2, ratio_level="sequence")
    np.testing.assert_allclose(m2["pg/clip_frac"], 3 / 5, rtol=1e-6)


def test_kl_penalty_is_added_per_token():
    logp = jnp.log(jnp.array([[0.5, 0.25]]))
    ref = jnp.log(jnp.array([[0.25, 0.25]]))
    k3 = kl_estimate(logp, ref)
    loss, m = policy_gradient_loss(logp, logp, jnp.zeros((1,)), jnp.ones((1, 2)), kl_penalty=k3, kl_coef=0.1)
    k3_0 = 0.5 - math.log(0.5) - 1
    np.testing.assert_allclose(loss, 0.1 * k3_0 / 2, rtol=1e-6)
    np.testing.assert_allclose(m["pg/kl_penalty"], k3_0 / 2, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Parity with TRL's GRPO loss formula, re-derived independently in torch.


def _trl_grpo_loss_torch(logp, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta, loss_type, max_len):
    logp, old_logp, ref_logp, adv, mask = (torch.tensor(np.asarray(a, np.float64)) for a in
                                           (logp, old_logp, ref_logp, adv, mask))
    coef_1 = torch.exp(logp - old_logp)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    per_token_kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    per_token = per_token + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean().item()
    if loss_type in ("bnpo", "dapo"):
        return ((per_token * mask).sum() / mask.sum().clamp(min=1.0)).item()
    if loss_type == "dr_grpo":
        return ((per_token * mask).sum() / (per_token.size(0) * max_len)).item()
    raise ValueError(loss_type)


_TRL_TO_OURS = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
                "dr_grpo": "seq-mean-token-sum-norm"}


@pytest.mark.parity
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("seed", [0, 1])
def test_trl_grpo_parity(loss_type, seed):
    rng = np.random.default_rng(seed)
    b, t, max_len = 6, 9, 12
    logp = (-rng.exponential(1.0, size=(b, t))).astype(np.float32)
    old = (logp + rng.normal(scale=0.3, size=(b, t))).astype(np.float32)
    ref = (logp + rng.normal(scale=0.3, size=(b, t))).astype(np.float32)
    adv = rng.normal(size=(b,)).astype(np.float32)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    eps_low, eps_high, beta = 0.2, 0.28, 0.04
    expected = _trl_grpo_loss_torch(logp, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, max_len)
    kl = kl_estimate(jnp.asarray(logp), jnp.asarray(ref), "k3")
    loss, _ = policy_gradient_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                                   eps_low, eps_high, _TRL_TO_OURS[loss_type], kl_penalty=kl, kl_coef=beta,
                                   max_len=max_len)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6, atol=1e-6)
