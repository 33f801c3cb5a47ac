"""Teacher-Validated Disagreement Focusing (TVDF), Video-OPD §3.2 and Appendix B.

Step 1, TRPV (§3.2 "Teacher Reliability Pre-Validation", App. B): a sample is teacher-reliable if
the mean IoU ``tau_i`` of the teacher's top-k predicted spans with the annotated span passes a
threshold; unreliable samples are dropped. The paper gives neither k nor the threshold, so both are
required arguments here (``teacher_iou >= threshold`` keeps a sample).

Step 2, DBTP (§3.2 "Disagreement-Based Trajectory Prioritization", App. B): among reliable samples,
prioritise by disagreement, either ``delta_i = tau_i - sigma_i`` (eq. 12; ``sigma_i`` the student's
mean top-k IoU) or the aggregated reverse KL of the student from the teacher along the student's
sampled trajectory (§3.2). Then pick k samples with one of (App. B.1–B.4):

* DSUS  (eqs. 13–15): sort by delta descending, take 1-based ranks ``j_t = floor(1 + (n-1) t/(k-1))``.
* Top-k (eq. 16): the k largest delta (the paper's default).
* BBDS  (eqs. 17–20): B = 5 equal-width buckets on [delta_min, delta_max] (last one closed), budget
  ``k_b = floor(k/B) + [b <= k mod B]``, DSUS spacing inside each bucket.
* GWDS  (eqs. 21–22): draw k without replacement with ``p_i ∝ exp(-(delta_i - c)^2 / (2 sigma^2))``,
  ``c = 0.9, sigma = 0.2``.

Every selector takes a 1-D score array and returns ``(indices, stats)``; ties in sorting keep the
lower index first (stable sort). Requests larger than the candidate set return what is available
and report ``shortfall`` in the stats.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from vtg_jax.curriculum._common import SeedLike, as_values, check_k, selection_stats
from vtg_jax.curriculum.gaussian import gaussian_sample
from vtg_jax.eval.metrics import prediction_ious

__all__ = [
    "GWDS_CENTER",
    "GWDS_SIGMA",
    "BBDS_NUM_BUCKETS",
    "topk_mean_iou",
    "trpv_filter",
    "iou_disagreement",
    "aggregated_reverse_kl",
    "dsus_select",
    "topk_select",
    "bbds_select",
    "bucket_assignment",
    "gwds_select",
    "tvdf_select",
]

GWDS_CENTER = 0.9
GWDS_SIGMA = 0.2
BBDS_NUM_BUCKETS = 5
Strategy = Literal["topk", "dsus", "bbds", "gwds"]


def topk_mean_iou(
    pred_spans: np.ndarray,
    gt_spans: np.ndarray,
    k: int,
    valid: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Mean IoU of each sample's top-k predictions with its GT span (TRPV's ``tau_i``, App. B).

    Args:
      pred_spans: (N, M, 2) predicted spans, M >= k; rank order is column order unless ``scores``.
      gt_spans: (N, 2) annotated spans.
      valid: optional (N, M) mask; False (or a non-finite span) = parse failure, scored IoU 0 and
        counted. The mean is always over k, so failures lower the score.
      scores: optional (N, M) ranking scores (e.g. sequence log-prob); the k highest are used
        (stable, NaN ranks last).
    Returns:
      (mean IoU (N,), stats with ``parse_failures`` among the top-k predictions).
    """
    k = check_k(k)
    spans = np.asarray(pred_spans, dtype=np.float64)
    if spans.ndim != 3 or spans.shape[2] != 2:
        raise ValueError(f"pred_spans must have shape (N, M, 2), got {spans.shape}.")
    n, m, _ = spans.shape
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= k <= M = {m} predictions per sample, got k = {k}.")
    ok = np.ones((n, m), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if ok.shape != (n, m):
        raise ValueError(f"valid must have shape {(n, m)}, got {ok.shape}.")
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (n, m):
            raise ValueError(f"scores must have shape {(n, m)}, got {s.shape}.")
        order = np.argsort(-np.where(np.isnan(s), -np.inf, s), axis=1, kind="stable")[:, :k]
        spans = np.take_along_axis(spans, order[..., None], axis=1)
        ok = np.take_along_axis(ok, order, axis=1)
    top = np.where(ok[:, :k, None], spans[:, :k], np.nan).reshape(n * k, 2)
    iou, parsed = prediction_ious(top, np.repeat(np.asarray(gt_spans, dtype=np.float64), k, axis=0))
    mean = iou.reshape(n, k).mean(axis=1)
    return mean, {"n": n, "k": k, "parse_failures": int(np.sum(~parsed)), "mean_iou": float(np.mean(mean))}


def trpv_filter(teacher_iou: np.ndarray, threshold: float) -> tuple[np.ndarray, dict[str, Any]]:
    """TRPV (§3.2 Step 1): indices with ``teacher_iou >= threshold`` (teacher-reliable samples)."""
    tau = as_values(teacher_iou, "teacher_iou")
    keep = np.nonzero(tau >= threshold)[0].astype(np.int64)
    return keep, {
        "n_total": int(tau.shape[0]),
        "n_reliable": int(keep.shape[0]),
        "threshold": float(threshold),
        "mean_teacher_iou_reliable": float(np.mean(tau[keep])) if keep.size else float("nan"),
    }


def iou_disagreement(teacher_iou: np.ndarray, student_iou: np.ndarray) -> np.ndarray:
    """``delta_i = tau_i - sigma_i`` (App. B, eq. 12)."""
    tau = as_values(teacher_iou, "teacher_iou")
    sig = as_values(student_iou, "student_iou")
    if tau.shape != sig.shape:
        raise ValueError(f"teacher_iou {tau.shape} and student_iou {sig.shape} differ in shape.")
    return tau - sig


def aggregated_reverse_kl(
    student_logprobs: np.ndarray,
    teacher_logprobs: np.ndarray,
    mask: np.ndarray,
    reduction: Literal["sum", "mean"] = "sum",
) -> np.ndarray:
    """Per-trajectory reverse-KL disagreement (§3.2 Step 2), shape (B,).

    On tokens ``a_t`` sampled from the student, ``log pi_theta(a_t|s_t) - log pi_tea(a_t|s_t)`` is the
    single-sample estimate of ``KL(pi_theta || pi_tea)`` at ``s_t`` (the negative of the per-token
    OPD reward, eq. 5). ``"sum"`` aggregates over the masked tokens of the trajectory; ``"mean"``
    divides by the number of masked tokens (0 for an empty trajectory).
    """
    s = np.asarray(student_logprobs, dtype=np.float64)
    t = np.asarray(teacher_logprobs, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if s.ndim != 2 or s.shape != t.shape or s.shape != m.shape:
        raise ValueError(f"logprobs and mask must share a (B, T) shape, got {s.shape}, {t.shape}, {m.shape}.")
    diff = np.where(m, s - t, 0.0)
    if not np.all(np.isfinite(diff)):
        raise ValueError("non-finite log-probabilities on masked tokens.")
    total = diff.sum(axis=1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = m.sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")


def _sorted_desc(values: np.ndarray) -> np.ndarray:
    return np.argsort(-values, kind="stable")


def _uniform_positions(n: int, k: int) -> np.ndarray:
    """0-based positions ``j_t - 1 = floor((n-1) t / (k-1))`` of eq. (14); k = 1 -> [0]; k >= n -> all."""
    if k >= n:
        return np.arange(n)
    if k == 0:
        return np.zeros((0,), dtype=np.int64)
    if k == 1:
        return np.zeros((1,), dtype=np.int64)
    t = np.arange(k)
    return ((n - 1) * t) // (k - 1)


def dsus_select(delta: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """DSUS (App. B.1, eqs. 13–15): evenly spaced ranks of the delta-descending order."""
    d = as_values(delta, "delta")
    k = check_k(k)
    idx = _sorted_desc(d)[_uniform_positions(d.shape[0], k)].astype(np.int64)
    return idx, selection_stats(d, idx, k)


def topk_select(delta: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-k DBS (App. B.2, eq. 16): the k largest delta, largest first."""
    d = as_values(delta, "delta")
    k = check_k(k)
    idx = _sorted_desc(d)[:k].astype(np.int64)
    return idx, selection_stats(d, idx, k)


def bucket_assignment(delta: np.ndarray, num_buckets: int) -> np.ndarray:
    """0-based bucket of each delta under eq. (18): ``[lo + (b-1) w, lo + b w)``, last bucket closed.

    If all deltas are equal (w = 0) every sample lands in the last bucket, which includes delta_max.
    """
    d = as_values(delta, "delta")
    if d.size == 0:
        return np.zeros((0,), dtype=np.int64)
    lo, hi = float(np.min(d)), float(np.max(d))
    edges = lo + np.arange(num_buckets + 1) * ((hi - lo) / num_buckets)
    b = np.searchsorted(edges, d, side="right") - 1
    b = np.where(d >= hi, num_buckets - 1, b)
    return np.clip(b, 0, num_buckets - 1).astype(np.int64)


def bbds_select(
    delta: np.ndarray, k: int, num_buckets: int = BBDS_NUM_BUCKETS, fill_shortfall: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """BBDS (App. B.3, eqs. 17–20), B = 5 by default.

    Bucket b (1-based) gets ``k_b = floor(k/B) + [b <= k mod B]`` (low-delta buckets get the
    remainder); inside a bucket, DSUS spacing over its delta-descending order. As in the paper, a
    bucket smaller than ``k_b`` contributes all its samples, so fewer than k may be returned
    (reported as ``shortfall``). ``fill_shortfall=True`` (not in the paper) hands the unused budget
    round-robin, bucket 1 first, to buckets that still have unselected samples, then re-spaces.
    Output order: bucket 1..B, delta-descending within each bucket.
    """
    d = as_values(delta, "delta")
    k = check_k(k)
    if int(num_buckets) != num_buckets or num_buckets < 1:
        raise ValueError(f"num_buckets must be a positive integer, got {num_buckets!r}.")
    bucket = bucket_assignment(d, num_buckets)
    members = [np.nonzero(bucket == b)[0] for b in range(num_buckets)]
    sizes = np.array([m.size for m in members], dtype=np.int64)
    alloc = np.array([k // num_buckets + (1 if b < k % num_buckets else 0) for b in range(num_buckets)])
    take = np.minimum(alloc, sizes)
    if fill_shortfall:
        left = min(k, d.size) - int(take.sum())
        while left > 0:
            for b in range(num_buckets):
                if left > 0 and take[b] < sizes[b]:
                    take[b] += 1
                    left -= 1
    chosen = []
    for b in range(num_buckets):
        mb = members[b]
        order = mb[_sorted_desc(d[mb])]
        chosen.append(order[_uniform_positions(mb.size, int(take[b]))])
    idx = np.concatenate(chosen).astype(np.int64) if chosen else np.zeros((0,), np.int64)
    stats = selection_stats(d, idx, k)
    stats.update(bucket_sizes=sizes.tolist(), bucket_budget=alloc.tolist(), bucket_selected=take.tolist())
    return idx, stats


def gwds_select(
    delta: np.ndarray,
    k: int,
    center: float = GWDS_CENTER,
    sigma: float = GWDS_SIGMA,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """GWDS (App. B.4, eqs. 21–22): k draws without replacement, ``p_i ∝ exp(-(delta_i-c)^2/(2 sigma^2))``."""
    return gaussian_sample(as_values(delta, "delta"), k, center=center, sigma=sigma, seed=seed)


def tvdf_select(
    teacher_iou: np.ndarray,
    k: int,
    *,
    reliability_threshold: float,
    student_iou: np.ndarray | None = None,
    disagreement: np.ndarray | None = None,
    strategy: Strategy = "topk",
    num_buckets: int = BBDS_NUM_BUCKETS,
    bbds_fill_shortfall: bool = False,
    center: float = GWDS_CENTER,
    sigma: float = GWDS_SIGMA,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Full TVDF: TRPV on ``teacher_iou`` then DBTP ``strategy`` on the reliable samples.

    The DBTP score is ``teacher_iou - student_iou`` (eq. 12) or, if given instead, ``disagreement``
    (e.g. ``aggregated_reverse_kl``), one per dataset sample. Returns dataset indices and stats
    (``n_total``, ``n_reliable``, ``n_selected``, ``shortfall``, ``strategy``, ...).
    """
    tau = as_values(teacher_iou, "teacher_iou")
    if (student_iou is None) == (disagreement is None):
        raise ValueError("pass exactly one of student_iou (eq. 12 delta) or disagreement.")
    score = iou_disagreement(tau, student_iou) if disagreement is None else as_values(disagreement, "disagreement")
    if score.shape != tau.shape:
        raise ValueError(f"disagreement {score.shape} and teacher_iou {tau.shape} differ in shape.")
    reliable, trpv_stats = trpv_filter(tau, reliability_threshold)
    sub = score[reliable]
    if strategy == "topk":
        local, sel_stats = topk_select(sub, k)
    elif strategy == "dsus":
        local, sel_stats = dsus_select(sub, k)
    elif strategy == "bbds":
        local, sel_stats = bbds_select(sub, k, num_buckets=num_buckets, fill_shortfall=bbds_fill_shortfall)
    elif strategy == "gwds":
        local, sel_stats = gwds_select(sub, k, center=center, sigma=sigma, seed=seed)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected topk, dsus, bbds or gwds.")
    stats = {**trpv_stats, **sel_stats, "strategy": strategy}
    return reliable[local], stats
