"""Distillation: OPD rewards/returns/loss, exact gradient identities on an enumerable toy policy,
OP-RKD, OP-FKD forward KL (full and top-k), generalised JSD."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vtg_jax.losses import (
    discounted_returns,
    exact_kl,
    forward_kl,
    generalized_jsd,
    op_fkd_loss,
    op_rkd_loss,
    opd_loss,
    opd_token_rewards,
    teacher_topk,
    token_logprobs,
    topk_forward_kl,
)


# Jitted aliases: one compile per test instead of op-by-op dispatch (keeps the suite fast on CPU).
forward_kl_j = jax.jit(forward_kl, static_argnames=("chunk_size",))
topk_j = jax.jit(topk_forward_kl, static_argnames=("mode",))
teacher_topk_j = jax.jit(teacher_topk, static_argnames=("k",))
gjsd_j = jax.jit(generalized_jsd, static_argnames=("beta", "chunk_size"))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_opd_rewards_and_returns_hand_values():
    s = jnp.log(jnp.array([[0.5, 0.25, 0.9]]))
    t = jnp.log(jnp.array([[0.25, 0.25, 0.1]]))
    mask = jnp.array([[1, 1, 0]])
    np.testing.assert_allclose(opd_token_rewards(s, t, mask), [[-math.log(2), 0.0, 0.0]], atol=1e-7)
    r = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    m = jnp.array([[1, 1, 1, 0]])
    np.testing.assert_allclose(discounted_returns(r, m, 0.5), [[2.75, 3.5, 3.0, 0.0]])
    np.testing.assert_allclose(discounted_returns(r, m, 0.0), [[1.0, 2.0, 3.0, 0.0]])
    np.testing.assert_allclose(discounted_returns(r, m, 1.0), [[6.0, 5.0, 3.0, 0.0]])


def test_opd_loss_hand_values_and_metrics():
    logp = jnp.log(jnp.array([[0.5, 0.2], [0.4, 0.1]]))
    teacher = jnp.log(jnp.array([[0.25, 0.2], [0.8, 0.3]]))
    mask = jnp.array([[1, 1], [1, 0]])
    loss, m = opd_loss(logp, logp, teacher, mask)
    r = np.array([math.log(0.5), 0.0, math.log(2.0)])
    np.testing.assert_allclose(loss, -r.mean(), rtol=1e-6)  # ratio 1, token-mean of -r_t
    np.testing.assert_allclose(m["opd/reverse_kl"], -r.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["opd/seq_reverse_kl"], -(r[0] + r[1] + r[2]) / 2, rtol=1e-6)
    loss_sum, _ = opd_loss(logp, logp, teacher, mask, aggregation="seq-mean-token-sum")
    np.testing.assert_allclose(loss_sum, -(r[0] + r[1] + r[2]) / 2, rtol=1e-6)
    # Ratio 2 on token (0, 0), clipped at 1.2 with A = log 0.5 < 0: -min(2A, 1.2A) = -2A.
    new = logp.at[0, 0].add(math.log(2.0))
    l_clip, _ = opd_loss(new, logp, teacher, mask, eps_low=0.2, eps_high=0.2, aggregation="seq-mean-token-sum")
    np.testing.assert_allclose(l_clip, -(2 * r[0] + r[1] + r[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(op_rkd_loss(logp, logp, teacher, mask)[0], loss)
    # Empty mask: 0.
    assert float(opd_loss(logp, logp, teacher, jnp.zeros((2, 2)))[0]) == 0.0


def test_opd_reward_is_stop_gradient():
    logp = jnp.log(jnp.array([[0.5, 0.2]]))
    teacher = jnp.log(jnp.array([[0.25, 0.4]]))
    g = jax.grad(lambda lp: opd_loss(lp, jax.lax.stop_gradient(lp), teacher, jnp.ones((1, 2)))[0])(logp)
    # d/dlogp of -sg(r) * exp(logp - sg(logp)) / n = -r / n.
    np.testing.assert_allclose(g, [[-math.log(0.5) / 2, -math.log(2.0) / 2]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Enumerable toy policy: vocab 3, length 3, one logits table per prefix.

VOCAB, LENGTH = 3, 3
SEQS = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)))  # [27, 3]


def _init_tables(rng, scale=1.0):
    return [jnp.asarray(rng.normal(scale=scale, size=(VOCAB,) * (t + 1)), jnp.float64) for t in range(LENGTH)]


def _seq_logits(tables):
    """[27, T, V] logits of every sequence under the autoregressive table policy."""
    n = len(SEQS)
    per_t = [jnp.broadcast_to(tables[t][tuple(SEQS[:, :t].T)], (n, VOCAB)) for t in range(LENGTH)]
    return jnp.stack(per_t, axis=1)


def _opd_expected_objective(student, teacher_logp, gamma):
    """sum_tau sg(pi(tau)) * L_tau(theta): its gradient is the exact expectation of the estimator's."""
    seqs = jnp.asarray(SEQS)
    logp = token_logprobs(_seq_logits(student), seqs)
    old = jax.lax.stop_gradient(logp)
    ones = jnp.ones((1, LENGTH))

    def one(lp, o, te):
        return opd_loss(lp[None], o[None], te[None], ones, gamma=gamma, aggregation="seq-mean-token-sum")[0]

    per_seq = jax.vmap(one)(logp, old, teacher_logp)
    weights = jax.lax.stop_gradient(jnp.exp(jnp.sum(logp, -1)))
    return jnp.sum(weights * per_seq)


def test_opd_expected_gradient_equals_sequence_reverse_kl_gradient():
    """Video-OPD eq. 11 at sequence level: with return-to-go (gamma = 1), E_tau[grad L_OPD] =
    grad KL(pi_theta(tau) || pi_tea(tau)), checked by exact enumeration in float64.

    With gamma = 0 (eq. 6 as written) the expectation is instead the sum over visited states of the
    per-state reverse-KL gradient with the state distribution held fixed (eq. 11 per state), which
    is not the sequence-level gradient for T > 1 (it misses the future rewards)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        student, teacher = _init_tables(rng), _init_tables(rng, 1.5)
        seqs = jnp.asarray(SEQS)

        @jax.jit
        def all_grads(tables, teacher_tables):
            teacher_logits = _seq_logits(teacher_tables)
            teacher_logp = token_logprobs(teacher_logits, seqs)

            def seq_reverse_kl(tb):
                lp = jnp.sum(token_logprobs(_seq_logits(tb), seqs), -1)
                return jnp.sum(jnp.exp(lp) * (lp - jnp.sum(teacher_logp, -1)))

            def per_state_kl(tb):
                lg = _seq_logits(tb)
                w = jax.lax.stop_gradient(jnp.exp(jnp.sum(token_logprobs(lg, seqs), -1)))
                return jnp.sum(w * jnp.sum(exact_kl(lg, teacher_logits), -1))

            return (jax.grad(_opd_expected_objective)(tables, teacher_logp, 1.0), jax.grad(seq_reverse_kl)(tables),
                    jax.grad(_opd_expected_objective)(tables, teacher_logp, 0.0), jax.grad(per_state_kl)(tables),
                    teacher_logp.dtype == jnp.float64)

        g_est, g_kl, g0, g_state, is_f64 = all_grads(student, teacher)
        assert bool(is_f64)
        for a, b in zip(g_est, g_kl):
            np.testing.assert_allclose(a, b, atol=1e-10)
        assert max(float(jnp.abs(g).max()) for g in g_kl) > 1e-2  # non-trivial
        for a, b in zip(g0, g_state):
            np.testing.assert_allclose(a, b, atol=1e-10)
        assert max(float(jnp.abs(a - b).max()) for a, b in zip(g0, g_kl)) > 1e-3


# ---------------------------------------------------------------------------------------------
# OP-FKD and top-k.


def test_forward_kl_values_and_eq28_gradient():
    rng = np.random.default_rng(1)
    s = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
    ps, pt = _softmax(np.asarray(s) / 0.9), _softmax(np.asarray(t) / 0.9)
    np.testing.assert_allclose(forward_kl_j(s, t, 0.9), np.sum(pt * np.log(pt / ps), -1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(forward_kl_j(s, t, 0.9, chunk_size=2), forward_kl_j(s, t, 0.9), atol=1e-6)
    gs, gt = jax.jit(jax.grad(lambda a, b: forward_kl(a, b, 0.9).sum(), argnums=(0, 1)))(s, t)
    np.testing.assert_allclose(gs, (ps - pt) / 0.9, atol=1e-6)  # -sum_w P_tea grad log P_stu
    assert float(jnp.abs(gt).max()) == 0.0  # teacher is constant
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    kl = np.sum(pt * np.log(pt / ps), -1)
    loss, m = jax.jit(op_fkd_loss)(s, t, mask, temperature=0.9)
    np.testing.assert_allclose(loss, (kl[0, 0] + kl[0, 1] + kl[1, 0]) / 2, rtol=1e-5)
    np.testing.assert_allclose(m["fkd/forward_kl"], (kl[0, 0] + kl[0, 1] + kl[1, 0]) / 3, rtol=1e-5)
    assert float(op_fkd_loss(s, t, jnp.zeros((2, 3)))[0]) == 0.0


def test_topk_forward_kl_modes():
    tea = np.array([0.5, 0.3, 0.15, 0.05])
    stu = np.array([0.1, 0.6, 0.1, 0.2])
    sl, tl = jnp.log(jnp.asarray(stu, jnp.float32)), jnp.log(jnp.asarray(tea, jnp.float32))
    ids, lps = teacher_topk_j(tl, 2)
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_allclose(lps, np.log(tea[:2]), rtol=1e-6)
    k = tea[:2]
    trunc = np.sum(k * np.log(k / stu[:2]))
    ren = np.sum(k / k.sum() * np.log(k / k.sum() / stu[:2]))
    tail = trunc + (1 - k.sum()) * np.log((1 - k.sum()) / (1 - stu[:2].sum()))
    np.testing.assert_allclose(topk_j(sl, ids, lps, "truncated"), trunc, rtol=1e-5)
    np.testing.assert_allclose(topk_j(sl, ids, lps, "renormalized"), ren, rtol=1e-5)
    np.testing.assert_allclose(topk_j(sl, ids, lps, "tail"), tail, rtol=1e-5)
    full = float(forward_kl_j(sl, tl))
    assert 0 <= tail <= full
    # k = V: all modes are the full forward KL (eq. 27).
    ids4, lps4 = teacher_topk_j(tl, 4)
    for mode in ("truncated", "renormalized", "tail"):
        np.testing.assert_allclose(topk_j(sl, ids4, lps4, mode), full, rtol=1e-5)
    # The truncated sum is not a divergence: it goes negative when the student over-covers the top-k.
    stu2 = jnp.log(jnp.array([0.9, 0.05, 0.03, 0.02]))
    assert float(topk_j(stu2, ids[:1], lps[:1], "truncated")) < 0
    assert float(topk_j(stu2, ids[:1], lps[:1], "renormalized")) >= 0
    with pytest.raises(ValueError):
        topk_forward_kl(sl, ids, lps, "bogus")


def _torch_gjsd(student_logits, teacher_logits, beta):
    """TRL's generalized_jsd_loss per position, re-derived in torch."""
    s = torch.log_softmax(torch.tensor(np.asarray(student_logits, np.float64)), -1)
    t = torch.log_softmax(torch.tensor(np.asarray(teacher_logits, np.float64)), -1)
    if beta == 0:
        return (t.exp() * (t - s)).sum(-1).numpy()
    if beta == 1:
        return (s.exp() * (s - t)).sum(-1).numpy()
    b = torch.tensor(beta, dtype=torch.float64)
    m = torch.logsumexp(torch.stack([s + torch.log(1 - b), t + torch.log(b)]), dim=0)
    kl_t = (t.exp() * (t - m)).sum(-1)
    kl_s = (s.exp() * (s - m)).sum(-1)
    return (b * kl_t + (1 - b) * kl_s).numpy()


@pytest.mark.parity
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd(beta):
    rng = np.random.default_rng(2)
    s = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
    np.testing.assert_allclose(gjsd_j(s, t, beta), _torch_gjsd(s, t, beta), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gjsd_j(s, t, beta, chunk_size=2), gjsd_j(s, t, beta), atol=1e-6)
    if beta == 0.0:
        np.testing.assert_allclose(gjsd_j(s, t, beta), forward_kl_j(s, t), rtol=1e-6)
    if beta == 1.0:
        np.testing.assert_allclose(gjsd_j(s, t, beta), jax.jit(exact_kl)(s, t), rtol=1e-6)


def test_generalized_jsd_small_beta_limit_and_range():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        s, t = jnp.asarray(rng.normal(size=5)), jnp.asarray(rng.normal(size=5))
        b = 1e-7
        np.testing.assert_allclose(gjsd_j(s, t, b) / b, forward_kl_j(s, t), rtol=1e-4)
        np.testing.assert_allclose(gjsd_j(s, t, 1 - b) / b, jax.jit(exact_kl)(s, t), rtol=1e-4)
    with pytest.raises(ValueError):
        generalized_jsd(s, t, 1.5)
