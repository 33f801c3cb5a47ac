"""Time-R1 Gaussian difficulty sampling (Video-OPD App. D.1) and TVG-R1 IoU filters."""
import numpy as np
import pytest

from vtg_jax.curriculum import (
    TIME_R1_MU,
    TIME_R1_SIGMA,
    TVG_R1_EPS1,
    TVG_R1_EPS2,
    gaussian_probabilities,
    sample_without_replacement,
    time_r1_gaussian_sample,
    tvg_r1_coldstart_filter,
    tvg_r1_rl_filter,
)


def test_defaults_from_papers():
    assert (TIME_R1_MU, TIME_R1_SIGMA) == (0.3, 0.2)
    assert (TVG_R1_EPS1, TVG_R1_EPS2) == (0.8, 0.4)


def test_gaussian_probabilities_eq30_31():
    p = gaussian_probabilities(np.array([0.3, 0.5, 0.1]), 0.3, 0.2)
    w = np.array([1.0, np.exp(-0.5), np.exp(-0.5)])
    np.testing.assert_allclose(p, w / w.sum())
    with pytest.raises(ValueError, match="sigma"):
        gaussian_probabilities(np.array([0.1]), 0.3, 0.0)


def test_time_r1_sample_size_no_duplicates_and_prefers_centre():
    rng = np.random.default_rng(0)
    ious = rng.uniform(0.0, 1.0, size=10_000)
    idx, stats = time_r1_gaussian_sample(ious, 2500, seed=7)
    assert idx.shape == (2500,) and np.unique(idx).size == 2500
    assert stats["n_selected"] == 2500 and stats["shortfall"] == 0
    near = np.abs(ious - 0.3) < 0.2
    assert near[idx].mean() > near.mean() + 0.2
    assert abs(stats["mean_selected"] - 0.3) < abs(ious.mean() - 0.3)
    again, _ = time_r1_gaussian_sample(ious, 2500, seed=7)
    assert again.tolist() == idx.tolist()


def test_time_r1_single_draw_frequencies():
    ious = np.array([0.0, 0.1, 0.3, 0.5, 0.9])
    p = gaussian_probabilities(ious, 0.3, 0.2)
    rng = np.random.default_rng(3)
    n_draws = 6000
    counts = np.bincount([time_r1_gaussian_sample(ious, 1, seed=rng)[0][0] for _ in range(n_draws)], minlength=5)
    tol = 4.5 * np.sqrt(p * (1 - p) / n_draws) + 1e-3
    np.testing.assert_array_less(np.abs(counts / n_draws - p), tol)
    assert np.argmax(counts) == 2


def test_time_r1_fewer_candidates():
    idx, stats = time_r1_gaussian_sample(np.array([0.2, 0.4]), 5)
    assert sorted(idx.tolist()) == [0, 1] and stats["shortfall"] == 3


def test_sample_without_replacement_validation():
    with pytest.raises(ValueError, match="NaN"):
        sample_without_replacement(np.array([0.0, np.nan]), 1)
    # Zero-weight (-inf) entries come last.
    assert sample_without_replacement(np.array([-np.inf, 0.0]), 2, seed=0).tolist() == [1, 0]


def test_coldstart_filter_strict_gt_eps1():
    keep, stats = tvg_r1_coldstart_filter([0.9, 0.8, None, 0.81, float("nan")])
    assert keep.tolist() == [0, 3]
    assert stats == {"n_total": 5, "n_kept": 2, "parse_failures": 2, "eps1": 0.8}


def test_rl_filter_drops_below_eps2():
    ious = [0.9, 0.4, 0.39, None, 0.5]
    keep, stats = tvg_r1_rl_filter(ious)
    assert keep.tolist() == [0, 1, 4]
    assert stats["n_below_eps2"] == 2 and stats["parse_failures"] == 1
    keep2, stats2 = tvg_r1_rl_filter(ious, exclude=[0, 2])
    assert keep2.tolist() == [1, 4] and stats2["n_excluded"] == 1
    with pytest.raises(ValueError, match="exclude"):
        tvg_r1_rl_filter(ious, exclude=[7])
    with pytest.raises(ValueError, match="1-D"):
        tvg_r1_rl_filter(np.zeros((2, 2)))
