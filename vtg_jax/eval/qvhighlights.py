"""QVHighlights moment-retrieval (MR) and highlight-detection (HL) metrics.

TempSamp-R1 §4 ("Benchmarks") reports QVHighlights with mAP (MR, averaged over IoU 0.5:0.05:0.95,
plus mAP@0.5 / @0.75), R1@0.5 / @0.7 and HL mAP / HIT@1 ("whether the top-ranked clip is labeled as
Very Good"), following the benchmark's standard evaluation (Lei et al., 2021, Moment-DETR). This is
an independent implementation written from that definition. All values are fractions in [0, 1]
(the official script prints percentages: multiply by 100 to compare).

Moment retrieval, per query with ranked predicted windows ``(start, end, score)`` and GT windows:

1. Predictions are sorted by descending score (stable: ties keep input order) and the first
   ``max_pred_windows`` (10) are kept.
2. For each IoU threshold θ, predictions are visited in rank order; a prediction is a true positive
   if the not-yet-matched GT window with the highest IoU has ``IoU >= θ`` (that GT window is then
   locked), otherwise a false positive. IoU ties between GT windows go to the higher GT index (as
   the reference's reversed argsort does).
3. ``precision_j = TP_j / j`` and ``recall_j = TP_j / |GT|`` over the ranked list; AP is the
   interpolated area: with ``mrec = [0, recall, 1]`` and ``mprec = [0, precision, 0]`` made
   non-increasing from the right (``mprec_i = max_{j >= i} mprec_j``),
   ``AP = sum_i (mrec_i - mrec_{i-1}) * mprec_i`` over the indices where recall changes.
4. mAP@θ is the mean of per-query AP; ``MR-mAP`` averages mAP@θ over θ in {0.5, 0.55, ..., 0.95}.
   A query with no (or unparsable) predictions has AP 0 and stays in the mean (the reference script
   only averages over queries that have predictions; house rule 7 scores failures 0 instead).

Differences from the reference script on malformed input only: it truncates to 10 windows in the
given order and takes the first window for R1 (it assumes windows arrive sorted by score); we sort
by score first.

``MR-R1@θ`` (the official ``compute_mr_r1``): the highest-scoring prediction ``p`` picks the GT window
``g`` with the highest IoU (``argmax``, first on ties), and the query counts if the *paired* IoU
``max(0, min(e_p, e_g) - max(s_p, s_g)) / (max(e_p, e_g) - min(s_p, s_g))`` is ``>= θ`` (0 when that
hull length is 0). For overlapping windows the hull equals ``len_p + len_g - inter`` in exact
arithmetic, but not always in float64: ``(0, 1.3)`` against ``(0, 2.6)`` is ``1.3 / 2.6 = 0.5`` by the
hull and ``0.4999999999999999`` by lengths, a hit at θ = 0.5 only with the official formula. (The AP
above uses the length formula, as the official ``compute_temporal_iou_batch_cross`` does.)

Highlight detection, per query with predicted clip saliency ``(P,)`` and GT scores ``(C, A)`` from
A = 3 annotators on the 0–4 scale over *every* clip of the video (0 for clips outside the relevant
clips; see ``full_video_saliency``, the official ``mk_gt_scores``):

* labels ``y[c, a] = gt[c, a] >= min_score`` with ``min_score`` 4 ("VeryGood"; 3 "Good", 2 "Fair").
* A predicted vector of the wrong length is handled as the official ``compute_ap_from_tuple`` /
  ``compute_hl_hit1`` do, not rejected: for AP it is cut to its first ``C`` entries (``P > C``) or
  padded with zeros (``P < C``); HIT@1 takes ``argmax`` of the vector *as given*, and an index
  ``>= C`` (a clip past the end of the video) is a miss. An empty vector, or one with NaN / inf, is a
  parse failure (AP 0, no hit, counted); a vector that is not 1-D raises ``ValueError``.
* ``HL-HIT@1``: clip ``c* = argmax(pred)`` (first on ties) is a hit if ``y[c*, a]`` for any annotator.
* ``HL-mAP``: mean over queries and annotators of the ranking AP of ``pred`` against ``y[:, a]``.
  Ranking AP: clips are grouped by distinct predicted score (descending); at each group boundary
  precision and recall are computed, precision is interpolated as the max precision at any equal or
  higher recall, and AP is the *mean* interpolated precision over the boundaries where recall
  increases (the official ``get_ap`` over sklearn's precision-recall curve). All-negative labels give
  AP 0 and all-positive labels AP 1.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vtg_jax.eval.metrics import temporal_iou_matrix

__all__ = [
    "MR_IOU_THRESHOLDS",
    "interpolated_average_precision",
    "detection_average_precision",
    "moment_retrieval_metrics",
    "ranking_average_precision",
    "highlight_metrics",
    "paired_temporal_iou",
    "full_video_saliency",
    "HL_MIN_SCORES",
]

MR_IOU_THRESHOLDS: tuple[float, ...] = tuple(float(x) for x in np.round(np.linspace(0.5, 0.95, 10), 2))
# The official saliency thresholds (``gt_saliency_score_min_list`` and their names).
HL_MIN_SCORES: tuple[tuple[str, float], ...] = (("Fair", 2.0), ("Good", 3.0), ("VeryGood", 4.0))


def paired_temporal_iou(pred: Any, gt: Any) -> np.ndarray:
    """Row-wise IoU of ``pred`` (N, >=2) and ``gt`` (N, >=2) with the official R1 union: the hull
    ``max(e_p, e_g) - min(s_p, s_g)`` (0 where the hull length is 0). Float64 (N,)."""
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))[:, :2]
    g = np.atleast_2d(np.asarray(gt, dtype=np.float64))[:, :2]
    inter = np.maximum(0.0, np.minimum(p[:, 1], g[:, 1]) - np.maximum(p[:, 0], g[:, 0]))
    hull = np.maximum(p[:, 1], g[:, 1]) - np.minimum(p[:, 0], g[:, 0])
    return np.where(hull != 0, inter / np.where(hull != 0, hull, 1.0), 0.0)


def full_video_saliency(duration: float, saliency: Sequence[Any] | None, clip_seconds: float = 2.0,
                        num_annotators: int = 3) -> np.ndarray:
    """GT saliency ``(C, A)`` over every clip of a video, as the official ``mk_gt_scores``.

    ``C = int(duration / clip_seconds)`` (floor, as the official script: a 149 s video has 74 clips,
    its last second is no clip); labelled clips ``(clip_id, (s_1, ..., s_A))`` get their scores, every
    other clip 0. ``A`` comes from the labels (``num_annotators`` when there are none). A labelled
    clip id ``>= C`` (where the official script raises ``IndexError``) extends ``C`` to that id + 1,
    and a video shorter than one clip has one (the official script fails on 0 clips). Raises ``ValueError`` on a non-positive or non-finite duration, a negative clip id, ragged or
    non-finite scores.
    """
    d = float(duration)
    if not np.isfinite(d) or d <= 0 or not clip_seconds > 0:
        raise ValueError(f"duration must be finite and > 0 (clip_seconds > 0), got {duration}, {clip_seconds}.")
    pairs = list(saliency or ())
    ids = np.asarray([int(c) for c, _ in pairs], dtype=np.int64)
    try:
        scores = np.asarray([list(sc) for _, sc in pairs], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"saliency scores must be equal-length numeric rows: {e}") from None
    if pairs and (scores.ndim != 2 or not np.all(np.isfinite(scores))):
        raise ValueError(f"saliency scores must be finite equal-length rows, got shape {scores.shape}.")
    if np.any(ids < 0):
        raise ValueError(f"negative clip id in {ids.tolist()}.")
    n_clips = max(int(d / clip_seconds), int(ids.max()) + 1 if ids.size else 1)
    out = np.zeros((n_clips, scores.shape[1] if pairs else num_annotators))
    if pairs:
        out[ids] = scores
    return out


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the monotone (right-max) precision envelope, sentinels ``mrec = [0, ..., 1]``."""
    mprec = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _clean_pred_windows(pred: Any, i: int) -> tuple[np.ndarray, int]:
    """(P, 3) float64 rows ``(start, end, score)``; non-finite rows are dropped and counted."""
    arr = np.asarray(pred, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3)), 0
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"query {i}: predicted windows must have shape (P, 3) (start, end, score), got {arr.shape}.")
    ok = np.all(np.isfinite(arr), axis=1)
    return arr[ok], int(np.sum(~ok))


def _clean_gt_windows(gt: Any, i: int) -> np.ndarray:
    arr = np.asarray(gt, dtype=np.float64)
    if arr.ndim == 1 and arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"query {i}: GT windows must have shape (G >= 1, 2), got {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] > arr[:, 1]):
        raise ValueError(f"query {i}: GT windows must be finite with start <= end, got {arr.tolist()}.")
    return arr


def _rank(pred: np.ndarray, max_pred_windows: int | None) -> np.ndarray:
    order = np.argsort(-pred[:, 2], kind="stable")
    pred = pred[order]
    return pred if max_pred_windows is None else pred[:max_pred_windows]


def detection_average_precision(
    pred: np.ndarray, gt: np.ndarray, iou_thresholds: Sequence[float] = MR_IOU_THRESHOLDS
) -> np.ndarray:
    """Per-threshold AP (T,) of ranked windows ``pred`` (P, 3), already sorted, against ``gt`` (G, 2)."""
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    n_pred, n_gt = pred.shape[0], gt.shape[0]
    if n_pred == 0:
        return np.zeros(thresholds.shape)
    iou = temporal_iou_matrix(pred[:, :2], gt)  # (P, G)
    gt_order = np.argsort(iou, axis=1, kind="stable")[:, ::-1]  # best GT first, ties -> higher GT index
    ap = np.zeros(thresholds.shape)
    for t, thr in enumerate(thresholds):
        locked = np.zeros(n_gt, dtype=bool)
        tp = np.zeros(n_pred)
        for p in range(n_pred):
            for g in gt_order[p]:
                if iou[p, g] < thr:
                    break
                if not locked[g]:
                    locked[g] = True
                    tp[p] = 1.0
                    break
        tp_cum = np.cumsum(tp)
        precision = tp_cum / np.arange(1, n_pred + 1)
        recall = tp_cum / n_gt
        ap[t] = interpolated_average_precision(precision, recall)
    return ap


def _key(prefix: str, t: float) -> str:
    return f"{prefix}{float(t):g}"


def moment_retrieval_metrics(
    pred_windows: Sequence[Any],
    gt_windows: Sequence[Any],
    iou_thresholds: Sequence[float] = MR_IOU_THRESHOLDS,
    r1_thresholds: Sequence[float] = (0.5, 0.7),
    max_pred_windows: int | None = 10,
) -> dict[str, float]:
    """QVHighlights MR metrics over queries.

    Args:
      pred_windows: per query, ``None`` (parse failure) or an array-like (P, 3) of
        ``(start, end, score)``; P may be 0. Non-finite rows are dropped and counted.
      gt_windows: per query, an array-like (G >= 1, 2) of GT windows.
    Returns:
      ``MR-mAP`` (mean over ``iou_thresholds``), ``MR-mAP@θ`` per threshold, ``MR-R1@θ`` for
      ``r1_thresholds`` (paired IoU of the top window with its best GT window, see the module doc),
      ``n``, ``parse_failures`` and ``invalid_windows``.
    """
    if len(pred_windows) != len(gt_windows):
        raise ValueError(f"{len(pred_windows)} predictions but {len(gt_windows)} ground truths.")
    if len(gt_windows) == 0:
        raise ValueError("empty input: no queries to evaluate.")
    n = len(gt_windows)
    aps = np.zeros((n, len(iou_thresholds)))
    top1_iou = np.zeros(n)
    parse_failures = invalid = 0
    for i, (pred, gt) in enumerate(zip(pred_windows, gt_windows)):
        gt_arr = _clean_gt_windows(gt, i)
        if pred is None:
            parse_failures += 1
            continue
        pred_arr, n_bad = _clean_pred_windows(pred, i)
        invalid += n_bad
        ranked = _rank(pred_arr, max_pred_windows)
        aps[i] = detection_average_precision(ranked, gt_arr, iou_thresholds)
        if ranked.shape[0]:
            best = int(np.argmax(temporal_iou_matrix(ranked[:1, :2], gt_arr)[0]))  # first on ties
            top1_iou[i] = float(paired_temporal_iou(ranked[:1, :2], gt_arr[best:best + 1])[0])
    out: dict[str, float] = {"MR-mAP": float(np.mean(aps))}
    for t, thr in enumerate(iou_thresholds):
        out[_key("MR-mAP@", thr)] = float(np.mean(aps[:, t]))
    for thr in r1_thresholds:
        out[_key("MR-R1@", thr)] = float(np.mean(top1_iou >= thr))
    out["n"] = n
    out["parse_failures"] = parse_failures
    out["invalid_windows"] = invalid
    return out


def ranking_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """AP of scores against binary labels, as the official QVHighlights ``get_ap`` (see module doc)."""
    y = np.asarray(y_true, dtype=bool).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape.")
    n_pos = int(np.sum(y))
    if n_pos == 0:
        return 0.0
    if n_pos == y.size:
        return 1.0
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.concatenate([np.nonzero(np.diff(s))[0], [s.size - 1]])
    tp = np.cumsum(y)[last_of_group].astype(np.float64)
    precision = tp / (last_of_group + 1)
    recall = tp / n_pos
    interp = np.maximum.accumulate(precision[::-1])[::-1]
    increases = np.diff(np.concatenate([[0.0], recall])) > 0
    return float(np.mean(interp[increases]))


def highlight_metrics(
    pred_saliency: Sequence[Any],
    gt_saliency: Sequence[Any],
    min_score: float = 4.0,
) -> dict[str, float]:
    """QVHighlights HL-mAP and HL-HIT@1 at ``gt >= min_score`` (4 = "VeryGood").

    Args:
      pred_saliency: per query, ``None`` (parse failure: AP 0, no hit) or a 1-D vector of predicted
        clip scores, normally (C,); another length is cut / zero-padded as the official eval does
        (see the module doc). Empty or non-finite vectors are parse failures; non-1-D raises.
      gt_saliency: per query, (C, A) annotator scores over every clip (A = 3 on QVHighlights, see
        ``full_video_saliency``), or (C,) for A = 1.
    """
    if len(pred_saliency) != len(gt_saliency):
        raise ValueError(f"{len(pred_saliency)} predictions but {len(gt_saliency)} ground truths.")
    if len(gt_saliency) == 0:
        raise ValueError("empty input: no queries to evaluate.")
    aps: list[float] = []
    hits: list[float] = []
    parse_failures = 0
    for i, (pred, gt) in enumerate(zip(pred_saliency, gt_saliency)):
        g = np.asarray(gt, dtype=np.float64)
        g = g[:, None] if g.ndim == 1 else g
        if g.ndim != 2 or g.shape[0] == 0 or not np.all(np.isfinite(g)):
            raise ValueError(f"query {i}: GT saliency must be a finite (C >= 1, A) array, got shape {g.shape}.")
        labels = g >= min_score
        p = None if pred is None else np.asarray(pred, dtype=np.float64)
        if p is not None and p.ndim != 1:
            raise ValueError(f"query {i}: predicted saliency must be a 1-D vector of clip scores, got shape {p.shape}.")
        if p is None or p.size == 0 or not np.all(np.isfinite(p)):
            parse_failures += 1
            aps.extend([0.0] * g.shape[1])
            hits.append(0.0)
            continue
        n_clips = g.shape[0]
        top = int(np.argmax(p))  # on the vector as given: a top clip past the video's end is a miss
        hits.append(float(top < n_clips and np.any(labels[top])))
        ranked = np.zeros(n_clips)
        ranked[:min(n_clips, p.size)] = p[:n_clips]  # cut or zero-pad to the video's clips
        aps.extend(ranking_average_precision(labels[:, a], ranked) for a in range(g.shape[1]))
    return {
        "HL-mAP": float(np.mean(aps)),
        "HL-HIT@1": float(np.mean(hits)),
        "n": len(gt_saliency),
        "parse_failures": parse_failures,
    }
