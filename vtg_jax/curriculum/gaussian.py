"""Gaussian-weighted sampling without replacement.

Used twice in Video-OPD:

* App. D.1, eqs. (30)–(31): the Time-R1 / TimeLens difficulty-aware selection for the GRPO baseline,
  ``P(i) = exp(-(x_i - mu)^2 / (2 sigma^2)) / Z`` over the model's IoU ``x_i`` with
  ``mu = 0.3, sigma = 0.2`` (2,500 samples drawn).
* App. B.4, eqs. (21)–(22): GWDS over teacher–student IoU differences ``delta_i`` with
  ``c = 0.9, sigma = 0.2`` (see ``vtg_jax.curriculum.tvdf.gwds_select``).

"Drawn without replacement from Categorical({p_i}, k)" is implemented as successive categorical
draws, each renormalised over the samples not yet chosen. We realise it with the Gumbel-top-k trick
(keys ``log p_i + G_i`` with ``G_i ~ Gumbel(0, 1)``, keep the k largest), which has exactly that
distribution and works in log space, so far-from-centre weights never underflow to an impossible
draw. Note that the resulting *inclusion* probability of a sample is not ``k * p_i`` in general;
for k = 1 it is ``p_i``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vtg_jax.curriculum._common import SeedLike, as_values, check_k, make_rng, selection_stats

__all__ = [
    "TIME_R1_MU",
    "TIME_R1_SIGMA",
    "gaussian_log_weights",
    "gaussian_probabilities",
    "sample_without_replacement",
    "gaussian_sample",
    "time_r1_gaussian_sample",
]

TIME_R1_MU = 0.3
TIME_R1_SIGMA = 0.2


def gaussian_log_weights(values: np.ndarray, center: float, sigma: float) -> np.ndarray:
    """Unnormalised log-weights ``-(v - center)^2 / (2 sigma^2)`` (eq. 21 / eq. 30 numerator)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    v = as_values(values, "values")
    return -((v - center) ** 2) / (2.0 * sigma**2)


def gaussian_probabilities(values: np.ndarray, center: float, sigma: float) -> np.ndarray:
    """Normalised ``p_i`` of eq. (21) / eqs. (30)–(31), computed stably (max-shifted)."""
    logw = gaussian_log_weights(values, center, sigma)
    if logw.size == 0:
        return logw
    w = np.exp(logw - np.max(logw))
    return w / np.sum(w)


def sample_without_replacement(log_weights: np.ndarray, k: int, seed: SeedLike = 0) -> np.ndarray:
    """k indices drawn by successive renormalised categorical draws ∝ exp(log_weights), in draw order.

    If ``k >= n`` every index is returned (in a random order of the same process).
    """
    k = check_k(k)
    logw = np.asarray(log_weights, dtype=np.float64)
    if logw.ndim != 1 or np.any(np.isnan(logw)) or np.any(logw == np.inf):
        raise ValueError("log_weights must be 1-D without NaN or +inf.")
    rng = make_rng(seed)
    keys = logw + rng.gumbel(size=logw.shape)
    order = np.argsort(-keys, kind="stable")
    return order[: min(k, logw.shape[0])].astype(np.int64)


def gaussian_sample(
    values: np.ndarray, k: int, *, center: float, sigma: float, seed: SeedLike = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw ``min(k, n)`` indices without replacement with probability ∝ Gaussian(values; center, sigma)."""
    v = as_values(values, "values")
    k = check_k(k)
    idx = sample_without_replacement(gaussian_log_weights(v, center, sigma), k, seed)
    stats = selection_stats(v, idx, k)
    stats.update(center=float(center), sigma=float(sigma))
    return idx, stats


def time_r1_gaussian_sample(
    ious: np.ndarray,
    k: int,
    *,
    mu: float = TIME_R1_MU,
    sigma: float = TIME_R1_SIGMA,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Time-R1 difficulty-aware data selection (Video-OPD App. D.1, eqs. 30–31).

    ``ious[i]`` is the model's IoU on sample i (parse failures already scored 0). Samples are drawn
    without replacement with ``P(i) ∝ exp(-(x_i - mu)^2 / (2 sigma^2))``, so medium-difficulty samples
    (IoU near 0.3) are preferred. Returns (indices in draw order, stats).
    """
    return gaussian_sample(ious, k, center=mu, sigma=sigma, seed=seed)
