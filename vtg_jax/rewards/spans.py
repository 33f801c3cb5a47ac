"""IoU-family span rewards: IoU, Time-R1 tIoU, LongVTG-R1 CenDist and its IoU mix.

Every function takes spans of shape ``[..., 2]`` (start, end in seconds) and broadcasts over the
leading axes; durations have the leading shape. numpy inputs give numpy float32 outputs, jax inputs
(or tracers) give jax float32 outputs, so the same code scores on the host and inside ``jax.jit``.

Edge-case policy (one place, ``_sanitize``; tested in tests/rewards/test_rewards_spans.py):

* Reversed spans (start > end), predicted or ground truth: sorted by default
  (``reversed_policy="sort"``). An interval is a set; ``17.8 to 12.5`` names the same set as
  ``12.5 to 17.8``, sorting keeps IoU symmetric and total, and ordering discipline is the format
  reward's job. ``reversed_policy="zero"`` instead scores a reversed *prediction* 0.
* Spans beyond the video: clipped to ``[0, D]`` whenever a duration is given (``iou`` without a
  duration does no clipping).
* NaN / ±inf anywhere in the prediction or ground truth (e.g. an unparsable answer encoded as a NaN
  row by ``parse_spans``): reward 0.
* Zero-length ground truth: measure-theoretic IoU, i.e. 0, except when prediction and ground truth
  are the same single point (0/0 on equal sets), which scores 1. We do not use "point inside the
  predicted span" since that would give the whole video IoU 1 and is trivially gamed.
* Duration D <= 0 or non-finite: every duration-dependent reward (tIoU, CenDist, the mix, and IoU
  when a duration is passed) is 0.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # numpy or jax array


def _xp(*xs: Any):
    """jax.numpy if any argument is a jax array/tracer, else numpy."""
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def _sanitize(pred: Array, gt: Array, duration: Array | None, reversed_policy: str = "sort"):
    """Shared edge-case handling; returns (xp, ps, pe, gs, ge, d, valid) with invalid entries zeroed."""
    if reversed_policy not in ("sort", "zero"):
        raise ValueError(f"reversed_policy must be 'sort' or 'zero', got {reversed_policy!r}")
    xp = _xp(pred, gt, duration)
    pred = xp.asarray(pred, dtype=xp.float32)
    gt = xp.asarray(gt, dtype=xp.float32)
    ps, pe, gs, ge = pred[..., 0], pred[..., 1], gt[..., 0], gt[..., 1]
    valid = xp.isfinite(ps) & xp.isfinite(pe) & xp.isfinite(gs) & xp.isfinite(ge)
    if reversed_policy == "zero":
        valid = valid & (ps <= pe)
    ps, pe, gs, ge = (xp.where(valid, x, xp.float32(0)) for x in (ps, pe, gs, ge))
    ps, pe = xp.minimum(ps, pe), xp.maximum(ps, pe)
    gs, ge = xp.minimum(gs, ge), xp.maximum(gs, ge)
    d = None
    if duration is not None:
        d = xp.asarray(duration, dtype=xp.float32)
        dvalid = xp.isfinite(d) & (d > 0)
        valid = valid & dvalid
        d = xp.where(dvalid, d, xp.float32(1))
        ps, pe, gs, ge = (xp.clip(x, 0, d) for x in (ps, pe, gs, ge))
    return xp, ps, pe, gs, ge, d, valid


def _iou_core(xp, ps, pe, gs, ge):
    inter = xp.maximum(xp.float32(0), xp.minimum(pe, ge) - xp.maximum(ps, gs))
    # For overlapping intervals the hull is the union; for disjoint ones inter = 0 anyway.
    union = xp.maximum(pe, ge) - xp.minimum(ps, gs)
    pos = union > 0
    return xp.where(pos, inter / xp.where(pos, union, xp.float32(1)), xp.float32(1))


def iou(pred: Array, gt: Array, duration: Array | None = None, *, reversed_policy: str = "sort") -> Array:
    """Temporal IoU |P ∩ G| / |P ∪ G| (TempSamp-R1 §3.3 R_IoU; TVG-R1 §3.3.1; LongVTG-R1 R_IoU).

    ``duration`` is optional: when given, spans are clipped to [0, D] and D <= 0 scores 0.
    """
    xp, ps, pe, gs, ge, _, valid = _sanitize(pred, gt, duration, reversed_policy)
    out = _iou_core(xp, ps, pe, gs, ge)
    return xp.where(valid, out, xp.float32(0)).astype(xp.float32)


def tiou(pred: Array, gt: Array, duration: Array, *, reversed_policy: str = "sort") -> Array:
    """Time-R1 timestamp-aware IoU: IoU · (1 − |s_gt − s_pred|/D) · (1 − |e_gt − e_pred|/D).

    Computed on the clipped, sorted spans, so each factor is in [0, 1] and tIoU <= IoU.
    """
    xp, ps, pe, gs, ge, d, valid = _sanitize(pred, gt, duration, reversed_policy)
    out = _iou_core(xp, ps, pe, gs, ge) * (1 - xp.abs(gs - ps) / d) * (1 - xp.abs(ge - pe) / d)
    return xp.where(valid, out, xp.float32(0)).astype(xp.float32)


def cendist(pred: Array, gt: Array, duration: Array, *, reversed_policy: str = "sort") -> Array:
    """LongVTG-R1 eq. 6: R_CenDist = 1 − |(l_gt + r_gt)/2 − (l + r)/2| / Duration, in [0, 1]."""
    xp, ps, pe, gs, ge, d, valid = _sanitize(pred, gt, duration, reversed_policy)
    out = 1 - xp.abs((gs + ge) / 2 - (ps + pe) / 2) / d
    return xp.where(valid, out, xp.float32(0)).astype(xp.float32)


def cendist_iou(
    pred: Array, gt: Array, duration: Array, alpha: float = 0.8, *, reversed_policy: str = "sort"
) -> Array:
    """LongVTG-R1 eq. 7: R_tg = α · R_IoU + (1 − α) · R_CenDist, α = 0.8 (§4 implementation)."""
    a = iou(pred, gt, duration, reversed_policy=reversed_policy)
    c = cendist(pred, gt, duration, reversed_policy=reversed_policy)
    return (alpha * a + (1 - alpha) * c).astype(a.dtype)
