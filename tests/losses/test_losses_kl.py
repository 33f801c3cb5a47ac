"""KL estimators, exact KL, token-aware subset KL (LongVTG-R1 eq. 4-5) and the naive masked KL."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vtg_jax.losses import (
    exact_kl,
    kl_estimate,
    subset_kl,
    subset_naive_kl,
    token_aware_kl,
    token_aware_kl_estimate,
)

V = 6
_logits = arrays(np.float64, (V,), elements=st.floats(-4.0, 4.0))
_subset = arrays(np.bool_, (V,), elements=st.booleans())
_SETTINGS = settings(max_examples=15, deadline=None)


def _probs(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _np_subset_kl(p, q, s):
    return q[s].sum() - p[s].sum() + np.sum(p[s] * np.log(p[s] / q[s]))


def test_estimator_hand_values_and_clamp():
    logp, ref = jnp.log(jnp.array([[0.5]])), jnp.log(jnp.array([[0.25]]))
    np.testing.assert_allclose(kl_estimate(logp, ref, "k1"), [[math.log(2)]], rtol=1e-6)
    np.testing.assert_allclose(kl_estimate(logp, ref, "k2"), [[0.5 * math.log(2) ** 2]], rtol=1e-6)
    np.testing.assert_allclose(kl_estimate(logp, ref, "k3"), [[0.5 + math.log(2) - 1]], rtol=1e-6)
    np.testing.assert_allclose(kl_estimate(jnp.array([[0.0]]), jnp.array([[5.0]]), "k3", clamp=10.0),
                               [[10.0]])  # e^5 - 5 - 1 = 142.4 clamped
    np.testing.assert_allclose(kl_estimate(logp, logp, "k3"), [[0.0]], atol=0)
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")


@_SETTINGS
@given(_logits, _logits)
def test_estimator_expectations_on_enumerated_distribution(pl, ql):
    """Sum over all tokens weighted by p: E[k1] = E[k3] = KL(p||q); E[k2] = E[(log r)^2]/2."""
    with jax.enable_x64(True):
        p, q = _probs(pl), _probs(ql)
        logp, logq = jnp.log(jnp.asarray(p))[None], jnp.log(jnp.asarray(q))[None]
        kl = np.sum(p * np.log(p / q))
        e = {k: float(jnp.sum(p * kl_estimate(logp, logq, k)[0])) for k in ("k1", "k2", "k3")}
        np.testing.assert_allclose(e["k1"], kl, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(e["k3"], kl, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(e["k2"], 0.5 * np.sum(p * np.log(q / p) ** 2), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(exact_kl(jnp.asarray(pl), jnp.asarray(ql)), kl, rtol=1e-9, atol=1e-12)


def test_exact_kl_temperature_and_chunking():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 7)), rng.normal(size=(2, 5, 7))
    p, q = _probs_rows(a / 0.8), _probs_rows(b / 0.8)
    ref = np.sum(p * np.log(p / q), -1)
    for cs in (None, 2, 5):
        np.testing.assert_allclose(exact_kl(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 0.8, cs),
                                   ref, rtol=1e-4, atol=1e-6)


def _probs_rows(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@_SETTINGS
@given(_logits, _logits, _subset)
def test_subset_kl_matches_definition_and_is_nonnegative(pl, ql, s):
    p, q = _probs(pl), _probs(ql)
    d = np.asarray(subset_kl(jnp.asarray(pl, jnp.float32), jnp.asarray(ql, jnp.float32), jnp.asarray(s)))
    assert d >= 0.0  # exactly, in float32: every summand q - p + p log(p/q) is computed >= 0
    expected = _np_subset_kl(p, q, s) if s.any() else 0.0
    np.testing.assert_allclose(d, expected, rtol=1e-4, atol=1e-6)
    # LongVTG-R1 App. B eq. 9: D^S = phi(m) + m KL(r||s) with m = p(S), q_S = q(S).
    if s.any():
        m, qs = p[s].sum(), q[s].sum()
        r, sh = p[s] / m, q[s] / qs
        eq9 = qs - m + m * np.log(m / qs) + m * np.sum(r * np.log(r / sh))
        np.testing.assert_allclose(d, eq9, rtol=1e-4, atol=1e-6)


@_SETTINGS
@given(_logits, arrays(np.float64, (V,), elements=st.floats(0.05, 1.0)), _subset)
def test_subset_kl_zero_iff_equal_on_subset(ql, off, s):
    """p = q on S (any p off S) gives 0; p != q on S gives > 0."""
    q = _probs(ql)
    p = q.copy()
    if (~s).any():  # redistribute the mass off S arbitrarily
        p[~s] = off[~s] / off[~s].sum() * q[~s].sum()
    with jax.enable_x64(True):
        d = float(subset_kl(jnp.log(jnp.asarray(p)), jnp.asarray(ql), jnp.asarray(s)))
        assert abs(d) < 1e-12
        if s.any():
            idx = int(np.argmax(s))
            p2 = p.copy()
            p2[idx] *= 0.5
            p2 /= p2.sum()
            assert float(subset_kl(jnp.log(jnp.asarray(p2)), jnp.asarray(ql), jnp.asarray(s))) > 1e-6


def test_naive_masked_kl_goes_negative_to_minus_qS_over_e():
    """LongVTG-R1 §3.2: sum_S p log(p/q) is minimised at p = q/e on S with value -q(S)/e."""
    q = np.array([0.3, 0.2, 0.1, 0.4])
    s = np.array([True, True, False, False])
    p = np.where(s, q / math.e, 0.0)
    p[~s] = (1 - p.sum()) / 2
    with jax.enable_x64(True):
        pl, ql = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))
        naive = float(subset_naive_kl(pl, ql, jnp.asarray(s)))
        np.testing.assert_allclose(naive, -q[s].sum() / math.e, rtol=1e-12)
        # token-aware KL at the same p: q(S) - q(S)/e - q(S)/e = q(S)(1 - 2/e) > 0.
        np.testing.assert_allclose(float(subset_kl(pl, ql, jnp.asarray(s))), q[s].sum() * (1 - 2 / math.e), rtol=1e-12)
    # Per token, min_x x log(x/q) = -q/e at x = q/e (grid check of the analytic bound).
    xs = np.linspace(1e-6, 0.3, 200001)
    f = xs * np.log(xs / 0.3)
    np.testing.assert_allclose(f.min(), -0.3 / math.e, rtol=1e-8)
    np.testing.assert_allclose(xs[f.argmin()], 0.3 / math.e, atol=2e-6)
    # and over the simplex the naive sum never goes below -q(S)/e.
    rng = np.random.default_rng(0)
    for _ in range(200):
        pr = rng.dirichlet(np.ones(4) * 0.5)
        val = np.sum(pr[s] * np.log(pr[s] / q[s]))
        assert val >= -q[s].sum() / math.e - 1e-12


def test_subset_kl_edge_cases():
    logits = jnp.array([0.0, 1.0, -jnp.inf, 2.0])
    ref = jnp.array([1.0, 0.0, 0.5, 2.0])
    s = jnp.array([False, False, True, False])
    # p = 0 on S: D^S = q(S).
    q = _probs(np.array([1.0, 0.0, 0.5, 2.0]))
    np.testing.assert_allclose(subset_kl(logits, ref, s), q[2], rtol=1e-6)
    # empty subset -> 0; full subset -> exact KL.
    assert float(subset_kl(logits, ref, jnp.zeros(4, bool))) == 0.0
    np.testing.assert_allclose(subset_kl(ref, logits[::-1], jnp.ones(4, bool)), exact_kl(ref, logits[::-1]), rtol=1e-6)
    # q = 0 < p on S: +inf (LongVTG-R1 App. B case 2).
    assert float(subset_kl(ref, logits, s)) == np.inf
    # gradient is finite where the value is finite, including p = 0 entries.
    g = jax.jit(jax.grad(lambda x: subset_kl(x, ref, jnp.array([True, True, True, False]))))(logits)
    assert np.isfinite(np.asarray(g)[[0, 1, 3]]).all()
    with pytest.raises(ValueError):
        subset_kl(logits, ref, jnp.ones(3, bool))


def test_subset_kl_extreme_ratios_are_stable():
    # q >> p on S (log ratio ~ 90): no overflow, value ~ q(S).
    p_logits = jnp.array([[-90.0, 0.0, 0.0]])
    q_logits = jnp.array([[0.0, 0.0, 0.0]])
    s = jnp.array([True, False, False])
    np.testing.assert_allclose(subset_kl(p_logits, q_logits, s), [1 / 3], rtol=1e-5)


def test_token_aware_kl_weighted_sum_and_chunking():
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    time = jnp.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    expected = 0.04 * subset_kl(a, b, ~time) + 0.3 * subset_kl(a, b, time)
    np.testing.assert_allclose(token_aware_kl(a, b, time, 0.04, 0.3), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(token_aware_kl(a, b, time, 0.04, 0.3, chunk_size=2), expected, rtol=1e-5, atol=1e-7)
    # beta_text = beta_time = 1 recovers the exact KL; the paper's defaults ignore S_time.
    np.testing.assert_allclose(token_aware_kl(a, b, time, 1.0, 1.0), exact_kl(a, b), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(token_aware_kl(a, b, time), 0.04 * subset_kl(a, b, ~time), rtol=1e-5, atol=1e-8)


def test_token_aware_estimate_is_unbiased_for_eq5():
    """E_{o ~ p}[w(o) k3(o)] = beta_text D^{S_text} + beta_time D^{S_time}, enumerated exactly."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        pl, ql = rng.normal(size=V), rng.normal(size=V)
        time = jnp.array([True, False, True, False, False, True])
        logp = jax.nn.log_softmax(jnp.asarray(pl))
        logq = jax.nn.log_softmax(jnp.asarray(ql))
        tokens = jnp.arange(V)[None]
        est = token_aware_kl_estimate(logp[None], logq[None], tokens, time, 0.04, 0.5)[0]
        expected = token_aware_kl(jnp.asarray(pl), jnp.asarray(ql), time, 0.04, 0.5)
        np.testing.assert_allclose(float(jnp.sum(jnp.exp(logp) * est)), float(expected), rtol=1e-10)
