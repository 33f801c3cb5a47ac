"""TVDF (Video-OPD App. B): TRPV, disagreement scores, DSUS / Top-k / BBDS / GWDS on fixed inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtg_jax.curriculum import (
    aggregated_reverse_kl,
    bbds_select,
    bucket_assignment,
    dsus_select,
    gaussian_probabilities,
    gwds_select,
    iou_disagreement,
    topk_mean_iou,
    topk_select,
    trpv_filter,
    tvdf_select,
)

# Sorted descending: 2 (.9), 7 (.8), 4 (.7), 0 (.5), 3 (.3), 5 (.2), 1 (.1), 6 (0).
DELTA = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.0, 0.8])
SORTED = [2, 7, 4, 0, 3, 5, 1, 6]


def test_topk_mean_iou_and_parse_failures():
    pred = np.array([[[0, 10], [0, 5], [5, 10]], [[0, 1], [9, 9], [0, 2]]], float)
    gt = np.array([[0, 10], [0, 2]], float)
    valid = np.array([[True, True, True], [True, False, True]])
    iou, stats = topk_mean_iou(pred, gt, k=2, valid=valid)
    np.testing.assert_allclose(iou, [0.75, 0.25])
    assert stats["parse_failures"] == 1
    iou3, _ = topk_mean_iou(pred, gt, k=3, valid=valid)
    np.testing.assert_allclose(iou3, [2 / 3, 0.5])
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.9]])
    iou_s, stats_s = topk_mean_iou(pred, gt, k=2, valid=valid, scores=scores)
    np.testing.assert_allclose(iou_s, [0.5, 0.75])
    assert stats_s["parse_failures"] == 0
    with pytest.raises(ValueError, match="k <= M"):
        topk_mean_iou(pred, gt, k=4)


def test_trpv_threshold_inclusive():
    keep, stats = trpv_filter(np.array([0.75, 0.25, 0.5]), threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert stats["n_total"] == 3 and stats["n_reliable"] == 2
    with pytest.raises(ValueError, match="NaN"):
        trpv_filter(np.array([0.5, np.nan]), threshold=0.5)


def test_iou_disagreement_eq12():
    np.testing.assert_allclose(iou_disagreement(np.array([0.9, 0.5]), np.array([0.2, 0.6])), [0.7, -0.1])


def test_aggregated_reverse_kl():
    s = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    t = np.array([[-1.5, -1.0, -np.inf], [-1.0, -1.0, -1.0]])
    mask = np.array([[1, 1, 0], [1, 1, 0]], bool)
    np.testing.assert_allclose(aggregated_reverse_kl(s, t, mask), [-0.5, 1.0])
    np.testing.assert_allclose(aggregated_reverse_kl(s, t, mask, reduction="mean"), [-0.25, 0.5])
    assert aggregated_reverse_kl(s, t, np.zeros_like(mask), reduction="mean").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="non-finite"):
        aggregated_reverse_kl(s, t, np.ones_like(mask))


@pytest.mark.parametrize(
    "k, expected",
    [
        (3, [2, 0, 6]),  # ranks floor(1 + 7t/2) = 1, 4, 8
        (4, [2, 4, 3, 6]),  # ranks floor(1 + 7t/3) = 1, 3, 5, 8
        (1, [2]),
        (8, SORTED),
        (0, []),
    ],
)
def test_dsus_hand(k, expected):
    idx, stats = dsus_select(DELTA, k)
    assert idx.tolist() == expected
    assert stats["n_selected"] == len(expected) and stats["shortfall"] == 0


def test_fewer_candidates_than_requested():
    for fn in (dsus_select, topk_select, gwds_select):
        idx, stats = fn(DELTA, 10)
        assert sorted(idx.tolist()) == list(range(8))
        assert stats["shortfall"] == 2 and stats["n_requested"] == 10
    idx, stats = topk_select(np.zeros((0,)), 3)
    assert idx.size == 0 and stats["shortfall"] == 3


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 60), st.data())
def test_dsus_matches_eq14_literally(n, data):
    k = data.draw(st.integers(2, n))
    delta = np.arange(n, dtype=float)[::-1].copy()  # already descending: position == index
    idx, _ = dsus_select(delta, k)
    literal = [math.floor(1 + (n - 1) * t / (k - 1)) - 1 for t in range(k)]
    assert idx.tolist() == literal
    assert len(set(idx.tolist())) == k and idx[0] == 0 and idx[-1] == n - 1


def test_topk_hand_and_ties():
    assert topk_select(DELTA, 3)[0].tolist() == [2, 7, 4]
    assert topk_select(np.array([0.5, 0.5, 0.1]), 1)[0].tolist() == [0]


# Buckets of width 0.2 on [0, 1]: {0, .05, .1}, {.25, .3}, {.5}, {}, {.85, .9, .95, 1.0}.
BB = np.array([0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.85, 0.9, 0.95, 1.0])


def test_bucket_assignment_edges():
    assert bucket_assignment(BB, 5).tolist() == [0, 0, 0, 1, 1, 2, 4, 4, 4, 4]
    # A value on a lower edge opens the next bucket; delta_max closes the last one.
    assert bucket_assignment(np.array([0.0, 0.2, 0.4, 1.0]), 5).tolist() == [0, 1, 2, 4]
    assert bucket_assignment(np.array([0.3, 0.3]), 5).tolist() == [4, 4]


def test_bbds_hand():
    # k = 7, B = 5: budgets [2, 2, 1, 1, 1]; bucket 4 is empty -> 6 selected.
    idx, stats = bbds_select(BB, 7)
    assert idx.tolist() == [2, 0, 4, 3, 5, 9]
    assert stats["bucket_budget"] == [2, 2, 1, 1, 1]
    assert stats["bucket_sizes"] == [3, 2, 1, 0, 4]
    assert stats["shortfall"] == 1
    filled, fstats = bbds_select(BB, 7, fill_shortfall=True)
    assert filled.tolist() == [2, 1, 0, 4, 3, 5, 9] and fstats["shortfall"] == 0
    # k = 10 with fill: everything.
    assert sorted(bbds_select(BB, 10, fill_shortfall=True)[0].tolist()) == list(range(10))
    # k = 3: budgets [1, 1, 1, 0, 0].
    assert bbds_select(BB, 3)[0].tolist() == [2, 4, 5]


def test_bbds_uniform_spacing_in_bucket():
    # B = 1: a single bucket holding all 10 values; DSUS positions floor(9t/2) = 0, 4, 9 of the
    # descending order 9, 8, ..., 0.
    d = np.linspace(0.0, 0.09, 10)
    idx, _ = bbds_select(d, 3, num_buckets=1)
    assert idx.tolist() == [9, 5, 0]


def test_gwds_deterministic_and_no_duplicates():
    a, sa = gwds_select(DELTA, 5, seed=3)
    b, _ = gwds_select(DELTA, 5, seed=3)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 5 and sa["n_selected"] == 5
    assert any(gwds_select(DELTA, 5, seed=s)[0].tolist() != a.tolist() for s in range(4, 10))


def test_gwds_single_draw_frequencies_follow_eq21():
    rng = np.random.default_rng(0)
    p = gaussian_probabilities(DELTA, 0.9, 0.2)
    n_draws = 6000
    counts = np.bincount([gwds_select(DELTA, 1, seed=rng)[0][0] for _ in range(n_draws)], minlength=8)
    tol = 4.5 * np.sqrt(p * (1 - p) / n_draws) + 1e-3
    np.testing.assert_array_less(np.abs(counts / n_draws - p), tol)


def test_gwds_two_draw_inclusion_probabilities():
    d = np.array([0.9, 0.7, 0.5, 0.1])
    p = gaussian_probabilities(d, 0.9, 0.2)
    # Successive draws without replacement: P(i in S) = p_i + sum_{j != i} p_j p_i / (1 - p_j).
    exact = np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i) for i in range(4)])
    rng = np.random.default_rng(1)
    n_draws = 6000
    counts = np.zeros(4)
    for _ in range(n_draws):
        counts[gwds_select(d, 2, seed=rng)[0]] += 1
    np.testing.assert_allclose(counts / n_draws, exact, atol=0.025)
    assert np.all(np.diff(counts) < 0)  # closer to c = 0.9 -> chosen more often


def test_gwds_far_from_centre_does_not_underflow():
    idx, _ = gwds_select(np.array([-1.0, -0.9]), 2, center=0.9, sigma=0.01, seed=0)
    assert idx.tolist() == [1, 0]


def test_tvdf_pipeline():
    teacher = np.array([0.9, 0.2, 0.8, 0.7, 0.95])
    student = np.array([0.1, 0.0, 0.7, 0.2, 0.05])
    # reliable (>= .5): 0, 2, 3, 4 with delta .8, .1, .5, .9
    idx, stats = tvdf_select(teacher, 2, reliability_threshold=0.5, student_iou=student)
    assert idx.tolist() == [4, 0]
    assert stats["n_reliable"] == 4 and stats["strategy"] == "topk"
    dsus, _ = tvdf_select(teacher, 2, reliability_threshold=0.5, student_iou=student, strategy="dsus")
    assert dsus.tolist() == [4, 2]
    g, _ = tvdf_select(teacher, 4, reliability_threshold=0.5, student_iou=student, strategy="gwds", seed=0)
    assert sorted(g.tolist()) == [0, 2, 3, 4]
    b, _ = tvdf_select(teacher, 4, reliability_threshold=0.5, student_iou=student, strategy="bbds")
    assert set(b.tolist()) <= {0, 2, 3, 4}
    # Reverse-KL disagreement: the unreliable sample 1 is never chosen even with the largest KL.
    kl = np.array([5.0, 100.0, 1.0, 2.0, 3.0])
    assert tvdf_select(teacher, 2, reliability_threshold=0.5, disagreement=kl)[0].tolist() == [0, 4]


def test_tvdf_bad_arguments():
    t = np.array([0.9, 0.8])
    with pytest.raises(ValueError, match="exactly one"):
        tvdf_select(t, 1, reliability_threshold=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        tvdf_select(t, 1, reliability_threshold=0.5, student_iou=t, disagreement=t)
    with pytest.raises(ValueError, match="unknown strategy"):
        tvdf_select(t, 1, reliability_threshold=0.5, student_iou=t, strategy="nope")
    with pytest.raises(ValueError, match="non-negative"):
        topk_select(t, -1)
