"""Temporal-grounding metrics: temporal IoU, R@m and mIoU.

These are the metrics every implemented paper reports for TVG (Video-OPD §4.1 "Evaluation
Benchmarks and Metrics": R@0.3/0.5/0.7 and mIoU; TempSamp-R1 §4 "Benchmarks": R1@m, mIoU; TVG-R1 §4).

Definitions implemented here (all values are fractions in [0, 1], not percentages):

* temporal IoU of spans ``[s_p, e_p]`` and ``[s_g, e_g]``::

      inter = max(0, min(e_p, e_g) - max(s_p, s_g))
      union = len_p + len_g - inter,   len = max(0, e - s)
      IoU   = inter / union            (0 when union == 0)

  A reversed prediction (``s_p > e_p``) therefore has length 0 and IoU 0. A reversed ground truth
  is a data error and raises ``ValueError``.
* ``R@m`` = fraction of queries whose (single, top-1) prediction has ``IoU >= m`` (``strict=False``,
  the common convention, e.g. the Time-R1 / TimeLens evaluation scripts) or ``IoU > m``
  (``strict=True``; some published code uses the strict comparison).
* ``mIoU`` = mean IoU over all queries.

A prediction of ``None`` (or one containing NaN/inf) is a parse failure: it scores IoU 0, is kept in
the denominator and is counted in ``parse_failures`` (never silently dropped, never a crash).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "temporal_iou",
    "temporal_iou_matrix",
    "predictions_to_array",
    "prediction_ious",
    "recall_at_iou",
    "mean_iou",
    "grounding_metrics",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


def _check_gt(gt: np.ndarray, name: str = "gt_spans") -> None:
    if not np.all(np.isfinite(gt)):
        raise ValueError(f"{name} contains NaN or inf.")
    if np.any(gt[..., 0] > gt[..., 1]):
        bad = np.argwhere(gt[..., 0] > gt[..., 1])[:5].tolist()
        raise ValueError(f"{name} has spans with start > end (first indices: {bad}).")


def temporal_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Element-wise temporal IoU of spans ``pred[..., :2]`` and ``gt[..., :2]`` (broadcasting).

    Reversed predictions get length 0 (IoU 0). Float64. No validation of ``gt``: callers validate.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[-1] < 2 or gt.shape[-1] < 2:
        raise ValueError(f"spans need a last axis of size >= 2, got {pred.shape} and {gt.shape}.")
    ps, pe = pred[..., 0], pred[..., 1]
    gs, ge = gt[..., 0], gt[..., 1]
    len_p = np.maximum(pe - ps, 0.0)
    len_g = np.maximum(ge - gs, 0.0)
    # For a reversed prediction min(pe, ge) <= pe < ps <= max(ps, gs), so inter is 0.
    inter = np.maximum(np.minimum(pe, ge) - np.maximum(ps, gs), 0.0)
    union = len_p + len_g - inter
    safe = np.where(union > 0, union, 1.0)
    return np.where(union > 0, inter / safe, 0.0)


def temporal_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Cross IoU: ``pred`` (P, >=2), ``gt`` (G, >=2) -> (P, G) float64."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"pred and gt must be 2-D (P, >=2) / (G, >=2), got {pred.shape}, {gt.shape}.")
    return temporal_iou(pred[:, None, :2], gt[None, :, :2])


def predictions_to_array(pred_spans: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert a list of ``(start, end)`` / ``None`` predictions into ``(spans (N, 2), valid (N,))``.

    ``valid[i]`` is False for ``None`` or non-finite predictions (parse failures); their span row is 0.
    A prediction that is neither ``None`` nor a length-2 sequence of numbers raises ``ValueError``.
    """
    if not isinstance(pred_spans, (list, tuple, np.ndarray)) and hasattr(pred_spans, "__array__"):
        pred_spans = np.asarray(pred_spans)  # e.g. a jax.Array
    if isinstance(pred_spans, np.ndarray) and pred_spans.dtype != object:
        arr = np.asarray(pred_spans, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"pred_spans array must have shape (N, 2), got {arr.shape}.")
        valid = np.all(np.isfinite(arr), axis=1)
        return np.where(valid[:, None], arr, 0.0), valid
    n = len(pred_spans)
    spans = np.zeros((n, 2), dtype=np.float64)
    valid = np.zeros((n,), dtype=bool)
    for i, p in enumerate(pred_spans):
        if p is None:
            continue
        try:
            row = np.asarray(p, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"prediction {i} is not None or a (start, end) pair: {p!r}") from e
        if row.shape != (2,):
            raise ValueError(f"prediction {i} must be None or a (start, end) pair, got {p!r}.")
        if np.all(np.isfinite(row)):
            spans[i] = row
            valid[i] = True
    return spans, valid


def prediction_ious(
    pred_spans: Sequence[Any] | np.ndarray, gt_spans: Sequence[Sequence[float]] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query IoU (N,) with parse failures scored 0, and the validity mask (N,).

    Raises ``ValueError`` on empty input, length mismatch or malformed ground truth.
    """
    gt = np.asarray(gt_spans, dtype=np.float64)
    if gt.ndim != 2 or gt.shape[1] != 2:
        raise ValueError(f"gt_spans must have shape (N, 2), got {gt.shape}.")
    if len(pred_spans) != gt.shape[0]:
        raise ValueError(f"{len(pred_spans)} predictions but {gt.shape[0]} ground-truth spans.")
    if gt.shape[0] == 0:
        raise ValueError("empty input: no predictions to evaluate.")
    _check_gt(gt)
    spans, valid = predictions_to_array(pred_spans)
    iou = np.where(valid, temporal_iou(spans, gt), 0.0)
    return iou, valid


def _threshold_key(prefix: str, t: float) -> str:
    return f"{prefix}{float(t):g}"


def recall_at_iou(
    pred_spans: Sequence[Any] | np.ndarray,
    gt_spans: Sequence[Sequence[float]] | np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    strict: bool = False,
) -> dict[str, float]:
    """R@m for each threshold m: fraction of queries with ``IoU >= m`` (``IoU > m`` if ``strict``).

    Returns ``{"R@0.3": ..., "R@0.5": ..., ...}`` (fractions). ``None`` predictions count as misses.
    """
    iou, _ = prediction_ious(pred_spans, gt_spans)
    out: dict[str, float] = {}
    for t in thresholds:
        hit = iou > t if strict else iou >= t
        out[_threshold_key("R@", t)] = float(np.mean(hit))
    return out


def mean_iou(
    pred_spans: Sequence[Any] | np.ndarray, gt_spans: Sequence[Sequence[float]] | np.ndarray
) -> float:
    """mIoU over all queries; ``None`` predictions contribute IoU 0."""
    iou, _ = prediction_ious(pred_spans, gt_spans)
    return float(np.mean(iou))


def grounding_metrics(
    pred_spans: Sequence[Any] | np.ndarray,
    gt_spans: Sequence[Sequence[float]] | np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    strict: bool = False,
) -> dict[str, float]:
    """R@{thresholds}, mIoU, ``n`` (queries) and ``parse_failures`` (None / non-finite predictions).

    ``reversed_predictions`` counts parsed predictions with start > end (scored IoU 0).
    """
    iou, valid = prediction_ious(pred_spans, gt_spans)
    spans, _ = predictions_to_array(pred_spans)
    out: dict[str, float] = {}
    for t in thresholds:
        hit = iou > t if strict else iou >= t
        out[_threshold_key("R@", t)] = float(np.mean(hit))
    out["mIoU"] = float(np.mean(iou))
    out["n"] = int(iou.shape[0])
    out["parse_failures"] = int(np.sum(~valid))
    out["reversed_predictions"] = int(np.sum(valid & (spans[:, 0] > spans[:, 1])))
    return out
