"""TempSamp-R1 eqs. 2–4 checked against hand computation from the paper's equations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtg_jax.rl import (
    anchored_advantages,
    downscale_off_reward,
    group_advantages,
    mixed_advantages,
    shape_rewards,
    tempsamp_advantages,
)

ON = np.array([[0.2, 0.5, 0.9]], np.float32)
OFF = np.array([1.0], np.float32)
EPS = 1e-6


def _norm(values):
    """Hand GRPO normalisation of one group with the biased std."""
    v = np.asarray(values, np.float64)
    return (v - v.mean()) / (v.std() + EPS)


def test_mixed_eq2_hand_values():
    # group {0.2, 0.5, 0.9, 1.0}: mean 0.65, deviations (-0.45, -0.15, 0.25, 0.35), var 0.41 / 4
    sd = math.sqrt(0.41 / 4)
    expected = np.array([-0.45, -0.15, 0.25, 0.35]) / (sd + EPS)
    a = tempsamp_advantages(ON, OFF, mode="mixed")
    assert a.shape == (1, 4) and a.dtype == jnp.float32
    np.testing.assert_allclose(a[0], expected, rtol=1e-5)
    np.testing.assert_allclose(mixed_advantages(ON, OFF), a)


def test_downscale_hand_values():
    # off-policy 1.0 -> min(1.0, 0.8 · 1.0) = 0.8; group {0.2, 0.5, 0.9, 0.8}: mean 0.6, var 0.3 / 4
    assert float(downscale_off_reward(1.0)) == pytest.approx(0.8)
    assert float(downscale_off_reward(0.5)) == pytest.approx(0.5)  # already below the bound
    assert float(downscale_off_reward(0.5, max_reward=None)) == pytest.approx(0.4)  # multiplicative
    assert float(downscale_off_reward(2.0, 0.8, max_reward=2.0)) == pytest.approx(1.6)
    sd = math.sqrt(0.3 / 4)
    expected = np.array([-0.4, -0.1, 0.3, 0.2]) / (sd + EPS)
    np.testing.assert_allclose(tempsamp_advantages(ON, OFF, mode="downscale")[0], expected, rtol=1e-5)


def test_anchor_eq3_hand_values():
    # on-policy-only stats: mean 8/15; A_G = 1.2 · max A_i
    a_on = _norm([0.2, 0.5, 0.9])
    expected = np.concatenate([a_on, [1.2 * a_on.max()]])
    np.testing.assert_allclose(tempsamp_advantages(ON, OFF, mode="anchor")[0], expected, rtol=1e-5)
    np.testing.assert_allclose(expected, [-1.1624722, -0.1162472, 1.2787194, 1.5344634], rtol=1e-5)
    a = anchored_advantages(ON, OFF, lam_off=2.0)
    np.testing.assert_allclose(a[0, -1], 2.0 * a_on.max(), rtol=1e-5)
    # the off-policy reward value itself does not enter eq. 3
    np.testing.assert_allclose(anchored_advantages(ON, np.array([0.0])), anchored_advantages(ON, OFF))


def test_shaping_eq4_hand_values():
    # τ = 0.8, α1 = 0.01, α2 = 1:
    #   r < τ: 0.8 − (e^{0.8 − r} − 1)/(e − 1);   r ≥ τ: 0.8 + 0.01 · ln(r − 0.8 + 1)
    e1 = math.e - 1
    hand = {
        0.0: 0.8 - (math.exp(0.8) - 1) / e1,  # 0.0867637
        0.2: 0.8 - (math.exp(0.6) - 1) / e1,  # 0.3215460
        0.5: 0.8 - (math.exp(0.3) - 1) / e1,  # 0.5963904
        0.8: 0.8,
        0.9: 0.8 + 0.01 * math.log(1.1),  # 0.8009531
        1.0: 0.8 + 0.01 * math.log(1.2),  # 0.8018232
    }
    r = np.array(list(hand), np.float32)
    np.testing.assert_allclose(shape_rewards(r), list(hand.values()), rtol=1e-6)
    np.testing.assert_allclose(shape_rewards(np.array([0.2])), [0.3215460], rtol=1e-6)
    # monotone, compresses above τ and expands below
    assert np.all(np.diff(np.asarray(shape_rewards(r))) > 0)
    # the full mode: shape all G rewards, then eq. 2 over the joint group
    expected = _norm([hand[0.2], hand[0.5], hand[0.9], hand[1.0]])
    np.testing.assert_allclose(tempsamp_advantages(ON, OFF, mode="shaping")[0], expected, rtol=1e-4)
    np.testing.assert_allclose(tempsamp_advantages(ON, OFF)[0], expected, rtol=1e-4)  # default mode


def test_shaping_alpha2_zero_limit_is_identity_below_tau():
    r = np.array([0.0, 0.3, 0.79], np.float32)
    np.testing.assert_allclose(shape_rewards(r, alpha2=0.0), r, atol=1e-6)


def test_paper_motivation_mixed_vs_anchor():
    # Off-policy dominates: in eq. 2 every on-policy sample, even the best, gets a negative advantage.
    on, off = np.array([[0.2, 0.3, 0.4]]), np.array([1.0])
    assert np.all(np.asarray(tempsamp_advantages(on, off, mode="mixed"))[0, :3] < 0)
    # anchoring keeps the best on-policy sample positive and ranks the off-policy one highest
    a = np.asarray(tempsamp_advantages(on, off, mode="anchor"))[0]
    assert a[2] > 0 and a[3] == pytest.approx(1.2 * a[2])


@pytest.mark.parametrize("mode", ["mixed", "downscale", "anchor", "shaping"])
def test_degenerate_cases_no_nan(mode):
    # all on-policy equal and off equal to them
    a = np.asarray(tempsamp_advantages(np.full((2, 3), 0.5), np.full((2,), 0.5), mode=mode))
    assert np.all(a == 0.0)  # (downscaling leaves 0.5 < 0.8 unchanged)
    # no on-policy samples (G = 1)
    a = np.asarray(tempsamp_advantages(np.zeros((2, 0)), np.array([1.0, 0.3]), mode=mode))
    assert a.shape == (2, 1) and np.all(a == 0.0)
    # NaN rewards are masked, never propagate
    a = np.asarray(tempsamp_advantages(np.array([[np.nan, 0.2, 0.9]]), np.array([np.nan]), mode=mode))
    assert np.all(np.isfinite(a)) and a[0, 0] == 0.0 and a[0, 3] == 0.0


def test_anchor_all_equal_on_policy_gives_zero_off_advantage():
    a = np.asarray(tempsamp_advantages(np.zeros((1, 3)), np.ones((1,)), mode="anchor"))
    assert np.all(a == 0.0)  # eq. 3 as written: λ_off · max(0, 0, 0) = 0


def test_masks():
    on = np.array([[0.2, 0.5, 0.9, 0.1]])
    on_mask = np.array([[True, True, True, False]])
    a = np.asarray(tempsamp_advantages(on, OFF, mode="mixed", on_mask=on_mask))[0]
    np.testing.assert_allclose(a, np.r_[_norm([0.2, 0.5, 0.9, 1.0])[:3], 0.0, _norm([0.2, 0.5, 0.9, 1.0])[3]],
                               rtol=1e-5)
    a = np.asarray(tempsamp_advantages(on, OFF, mode="anchor", on_mask=on_mask, off_mask=np.array([False])))[0]
    np.testing.assert_allclose(a, np.r_[_norm([0.2, 0.5, 0.9]), 0.0, 0.0], rtol=1e-5)
    a = np.asarray(tempsamp_advantages(on, OFF, mode="mixed", off_mask=np.array([False])))[0]
    np.testing.assert_allclose(a, np.r_[_norm([0.2, 0.5, 0.9, 0.1]), 0.0], rtol=1e-5)


def test_unbiased_and_drgrpo_pass_through():
    a = tempsamp_advantages(ON, OFF, mode="mixed", std=None)
    np.testing.assert_allclose(a[0], [-0.45, -0.15, 0.25, 0.35], atol=1e-6)
    a = tempsamp_advantages(ON, OFF, mode="mixed", std="unbiased")
    np.testing.assert_allclose(a, group_advantages(np.c_[ON, OFF], std="unbiased"), rtol=1e-6)


def test_batch_and_jit():
    rng = np.random.default_rng(0)
    on = rng.uniform(size=(5, 7)).astype(np.float32)
    off = rng.uniform(0.8, 1.0, size=(5,)).astype(np.float32)
    for mode in ("mixed", "downscale", "anchor", "shaping"):
        eager = np.asarray(tempsamp_advantages(on, off, mode=mode))
        jitted = jax.jit(lambda x, y, m=mode: tempsamp_advantages(x, y, mode=m))(on, off)
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)
        for b in range(5):  # rows are independent
            row = np.asarray(tempsamp_advantages(on[b:b + 1], off[b:b + 1], mode=mode))[0]
            np.testing.assert_allclose(eager[b], row, rtol=1e-5, atol=1e-6)


def test_unknown_mode():
    with pytest.raises(ValueError):
        tempsamp_advantages(ON, OFF, mode="bogus")
