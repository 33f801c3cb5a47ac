"""IoU, tIoU, CenDist and the CenDist–IoU mix: hand values, edge-case policy, properties, jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.rewards import cendist, cendist_iou, iou, tiou

NAN = float("nan")


def test_iou_hand_values():
    # [2,6] vs [4,8]: inter 2, union 6
    assert iou(np.array([2.0, 6.0]), np.array([4.0, 8.0])) == pytest.approx(1 / 3)
    # contained: [4,6] in [0,10] -> 2/10
    assert iou(np.array([4.0, 6.0]), np.array([0.0, 10.0])) == pytest.approx(0.2)
    # disjoint and touching -> 0
    assert iou(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert iou(np.array([0.0, 2.0]), np.array([2.0, 3.0])) == 0.0
    # identical -> exactly 1
    assert iou(np.array([12.54, 17.83]), np.array([12.54, 17.83])) == 1.0


def test_tiou_hand_values():
    # IoU 1/3 · (1 − 2/10) · (1 − 2/10) = 0.21333
    assert tiou(np.array([2.0, 6.0]), np.array([4.0, 8.0]), 10.0) == pytest.approx(1 / 3 * 0.8 * 0.8)
    # contained: IoU 0.2 · (1 − 4/10) · (1 − 4/10)
    assert tiou(np.array([4.0, 6.0]), np.array([0.0, 10.0]), 10.0) == pytest.approx(0.2 * 0.6 * 0.6)
    assert tiou(np.array([1.0, 5.0]), np.array([1.0, 5.0]), 30.0) == 1.0


def test_cendist_hand_values():
    # centres 4 and 6, D = 10 -> 1 − 2/10
    assert cendist(np.array([2.0, 6.0]), np.array([4.0, 8.0]), 10.0) == pytest.approx(0.8)
    # non-overlapping still gets a dense signal: centres 0.5 and 9.5, D = 10 -> 0.1
    assert cendist(np.array([0.0, 1.0]), np.array([9.0, 10.0]), 10.0) == pytest.approx(0.1)
    # eq. 7, α = 0.8: 0.8 · (1/3) + 0.2 · 0.8
    assert cendist_iou(np.array([2.0, 6.0]), np.array([4.0, 8.0]), 10.0) == pytest.approx(0.8 / 3 + 0.16)
    assert cendist_iou(np.array([2.0, 6.0]), np.array([4.0, 8.0]), 10.0, alpha=0.5) == pytest.approx(
        0.5 / 3 + 0.4)


def test_reversed_prediction_sorted_by_default_or_zero():
    p, g = np.array([6.0, 2.0]), np.array([4.0, 8.0])
    assert iou(p, g) == pytest.approx(1 / 3)
    assert tiou(p, g, 10.0) == pytest.approx(1 / 3 * 0.64)
    assert cendist(p, g, 10.0) == pytest.approx(0.8)
    assert iou(p, g, reversed_policy="zero") == 0.0
    assert tiou(p, g, 10.0, reversed_policy="zero") == 0.0
    # reversed ground truth is always sorted
    assert iou(np.array([2.0, 6.0]), np.array([8.0, 4.0]), reversed_policy="zero") == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        iou(p, g, reversed_policy="bogus")


def test_beyond_duration_is_clipped():
    # [5, 20] with D = 10 -> [5, 10]; gt [5, 10] -> IoU 1 once clipped, 1/3 without clipping
    p, g = np.array([5.0, 20.0]), np.array([5.0, 10.0])
    assert iou(p, g) == pytest.approx(5 / 15)
    assert iou(p, g, 10.0) == 1.0
    assert tiou(p, g, 10.0) == 1.0
    assert cendist(p, g, 10.0) == 1.0
    # negative start clipped to 0: [-4, 4] -> [0, 4] vs [0, 4]
    assert iou(np.array([-4.0, 4.0]), np.array([0.0, 4.0]), 10.0) == 1.0
    # entirely beyond -> zero-length [10, 10]: IoU 0, CenDist 1 − |5 − 10|/10
    assert iou(np.array([12.0, 15.0]), np.array([0.0, 10.0]), 10.0) == 0.0
    assert cendist(np.array([12.0, 15.0]), np.array([0.0, 10.0]), 10.0) == pytest.approx(0.5)


@pytest.mark.parametrize("fn", [iou, tiou, cendist, cendist_iou])
def test_nan_and_inf_score_zero(fn):
    args = (10.0,) if fn is not iou else ()
    for p, g in [([NAN, 5.0], [1.0, 4.0]), ([1.0, NAN], [1.0, 4.0]), ([1.0, 4.0], [NAN, 4.0]),
                 ([1.0, np.inf], [1.0, 4.0]), ([-np.inf, 4.0], [1.0, 4.0])]:
        assert fn(np.array(p), np.array(g), *args) == 0.0


@pytest.mark.parametrize("fn", [tiou, cendist, cendist_iou])
@pytest.mark.parametrize("d", [0.0, -5.0, NAN, np.inf])
def test_bad_duration_scores_zero(fn, d):
    assert fn(np.array([1.0, 4.0]), np.array([1.0, 4.0]), d) == 0.0
    assert iou(np.array([1.0, 4.0]), np.array([1.0, 4.0]), d) == 0.0


def test_zero_length_ground_truth():
    g = np.array([5.0, 5.0])
    assert iou(np.array([0.0, 10.0]), g) == 0.0  # point inside the prediction: measure 0, not 1
    assert iou(np.array([5.0, 5.0]), g) == 1.0  # identical points: equal sets
    assert iou(np.array([4.0, 4.0]), g) == 0.0
    assert tiou(np.array([5.0, 5.0]), g, 10.0) == 1.0
    assert cendist(np.array([0.0, 10.0]), g, 10.0) == 1.0  # centres coincide


def test_broadcasting_and_dtypes():
    preds = np.array([[[2.0, 6.0], [4.0, 8.0]], [[0.0, 1.0], [NAN, 1.0]]])  # [2, 2, 2]
    gt = np.array([4.0, 8.0])  # broadcast
    d = np.array([[10.0], [10.0]])  # [2, 1]
    out = tiou(preds, gt, d)
    assert out.shape == (2, 2) and out.dtype == np.float32 and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[1 / 3 * 0.64, 1.0], [0.0, 0.0]], rtol=1e-6)
    assert iou([[2, 6]], [[4, 8]]).shape == (1,)
    jout = iou(jnp.asarray(preds), jnp.asarray(gt))
    assert isinstance(jout, jax.Array) and jout.dtype == jnp.float32


@pytest.mark.parametrize("fn", [tiou, cendist, cendist_iou])
def test_jit_matches_numpy(fn):
    rng = np.random.default_rng(0)
    p = rng.uniform(-5, 40, size=(64, 2)).astype(np.float32)
    g = rng.uniform(0, 30, size=(64, 2)).astype(np.float32)
    p[3] = NAN
    d = rng.uniform(-1, 35, size=(64,)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(p, g, d)), fn(p, g, d), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.jit(iou)(p, g)), iou(p, g), rtol=1e-6, atol=1e-7)


_T = st.floats(-50, 200, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None)
@given(_T, _T, _T, _T, st.floats(0.5, 200, width=32))
def test_properties(a, b, c, e, d):
    p, g = np.array([a, b], np.float32), np.array([c, e], np.float32)
    x = float(iou(p, g))
    assert 0.0 <= x <= 1.0
    assert x == float(iou(g, p))  # symmetric
    xd = float(iou(p, g, d))
    t = float(tiou(p, g, d))
    assert 0.0 <= t <= xd <= 1.0
    cd = float(cendist(p, g, d))
    assert 0.0 <= cd <= 1.0
    assert 0.0 <= float(cendist_iou(p, g, d)) <= 1.0
