"""Hand-computed checks of temporal IoU, R@m and mIoU (vtg_jax.eval.metrics)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.eval import grounding_metrics, mean_iou, recall_at_iou, temporal_iou, temporal_iou_matrix


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ((0, 5), (0, 10), 0.5),
        ((2, 8), (4, 10), 0.5),  # inter 4, union 8
        ((0, 2), (3, 5), 0.0),  # disjoint
        ((0, 2), (2, 4), 0.0),  # touching
        ((1, 4), (1, 4), 1.0),
        ((5, 3), (0, 10), 0.0),  # reversed prediction
        ((3, 3), (3, 3), 0.0),  # zero union
        ((3, 3), (0, 10), 0.0),  # point prediction
        ((0, 20), (5, 10), 0.25),
    ],
)
def test_temporal_iou_hand_values(pred, gt, expected):
    assert temporal_iou(np.array(pred, float), np.array(gt, float)) == pytest.approx(expected, abs=1e-12)


def test_temporal_iou_matrix():
    m = temporal_iou_matrix(np.array([[0.0, 10.0], [5.0, 15.0]]), np.array([[0.0, 10.0], [10.0, 20.0], [0.0, 5.0]]))
    np.testing.assert_allclose(m, [[1.0, 0.0, 0.5], [1 / 3, 1 / 3, 0.0]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=4, max_size=4))
def test_iou_symmetric_and_bounded(x):
    a = np.array(sorted(x[:2]))
    b = np.array(sorted(x[2:]))
    iou_ab, iou_ba = temporal_iou(a, b), temporal_iou(b, a)
    assert 0.0 <= iou_ab <= 1.0
    assert iou_ab == pytest.approx(iou_ba)
    if a[1] > a[0]:
        assert temporal_iou(a, a) == 1.0


GT = [(0, 10)] * 5
# IoUs: 0.3, parse failure (0), 0.5, 0.7, 0 -- the first, third and fourth sit exactly on thresholds.
PRED = [(0, 3), None, (0, 5), (0, 7), (20, 30)]


def test_threshold_values_are_exact():
    ious = temporal_iou(np.array([(0, 3), (0, 5), (0, 7)], float), np.array(GT[:3], float))
    assert ious.tolist() == [0.3, 0.5, 0.7]


def test_recall_non_strict_counts_ties():
    r = recall_at_iou(PRED, GT)
    assert r == {"R@0.3": 3 / 5, "R@0.5": 2 / 5, "R@0.7": 1 / 5}


def test_recall_strict_excludes_ties():
    r = recall_at_iou(PRED, GT, strict=True)
    assert r == {"R@0.3": 2 / 5, "R@0.5": 1 / 5, "R@0.7": 0.0}


def test_mean_iou_with_none():
    assert mean_iou(PRED, GT) == pytest.approx((0.3 + 0.5 + 0.7) / 5)


def test_grounding_metrics_counts():
    out = grounding_metrics(PRED + [(9, 1)], GT + [(0, 10)])
    assert out["n"] == 6
    assert out["parse_failures"] == 1
    assert out["reversed_predictions"] == 1
    assert out["R@0.3"] == pytest.approx(3 / 6)
    assert out["mIoU"] == pytest.approx(1.5 / 6)
    assert set(out) == {"R@0.3", "R@0.5", "R@0.7", "mIoU", "n", "parse_failures", "reversed_predictions"}


def test_array_input_nan_is_parse_failure():
    pred = np.array([[0.0, 5.0], [np.nan, 3.0]])
    out = grounding_metrics(pred, np.array([[0.0, 10.0], [0.0, 10.0]]), thresholds=(0.5,))
    assert out == {"R@0.5": 0.5, "mIoU": 0.25, "n": 2, "parse_failures": 1, "reversed_predictions": 0}


def test_custom_threshold_key():
    assert list(recall_at_iou([(0, 1)], [(0, 1)], thresholds=(0.25,))) == ["R@0.25"]


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        recall_at_iou([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="empty"):
        mean_iou([], np.zeros((0, 2)))


@pytest.mark.parametrize(
    "pred, gt, match",
    [
        ([(0, 1)], [(0, 1), (0, 2)], "predictions"),
        ([(0, 1)], [(2, 1)], "start > end"),
        ([(0, 1)], [(0, np.nan)], "NaN"),
        ([(0, 1, 2)], [(0, 1)], "pair"),
        (["abc"], [(0, 1)], "pair"),
    ],
)
def test_bad_input_raises(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        grounding_metrics(pred, gt)


def test_jax_array_input():
    import jax.numpy as jnp

    out = grounding_metrics(jnp.array([[0.0, 5.0], [0.0, 10.0]]), np.array([[0.0, 10.0], [0.0, 10.0]]))
    assert out["mIoU"] == pytest.approx(0.75) and out["parse_failures"] == 0
