"""Highlight-detection reward of TempSamp-R1 §3.3 ("Timestamp matching reward").

    R_ts = λ_rec · F2 + λ_score · 1 / (1 + WMSE),   λ_rec = 0.6, λ_score = 0.4.

Definitions used here (the paper gives them in words; QVHighlights scores 2-second clips):

* Timestamps are matched by clip: t ↦ floor(t / clip_len) (clip_len = 2 s). Duplicate predicted
  clips count once (first score kept).
* F2 (recall-weighted F-measure, β = 2) over matched clips:
  P = |pred ∩ gt| / |pred|, R = |pred ∩ gt| / |gt|, F2 = 5 P R / (4 P + R); 0 when P + R = 0.
* WMSE of saliency scores with weights w = s_gt² over the ground-truth clips; a gt clip that was not
  predicted has predicted score 0; predicted clips outside the ground truth have s_gt = 0, hence
  weight 0:  WMSE = Σ_g s_gt(g)² (ŝ(g) − s_gt(g))² / Σ_g s_gt(g)².
  If all gt scores are 0 the weights degenerate and the unweighted MSE over gt clips is used.

Model output (App. E prompt): "The highlight timestamps are in the 82, 84, 86 seconds. Their
saliency scores are 1.3, 1.7, 1.7". Numbers before the first "score" are timestamps, numbers after
are scores; missing scores count as 0 (the paper's own example lists 10 timestamps, 9 scores).
Numbers are read whole or not at all: ``1.5e1`` is 15; a minus sign attached to a number (``-5``,
``−5`` with U+2212) or a number too large to be finite makes the answer unparsable (never 5 or a
dropped entry). Commas separate the list's entries (``100,102,104`` is three timestamps).
Unparsable output or an empty ground truth scores 0.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from vtg_jax.rewards.parse import last_tag_content

_NUM_RE = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SIGNED_RE = re.compile("(?<![\\w.])[\\-\u2212\u2010\u2011\ufe63\uff0d]\\.?\\d")
_SCORE_RE = re.compile(r"score", re.IGNORECASE)


def parse_highlight(text: str) -> tuple[list[float], list[float]] | None:
    """``(timestamps, scores)`` from a highlight answer (last ``<answer>`` if any); None if none."""
    try:
        region = last_tag_content(text, "answer")
        region = text if region is None else region
        m = _SCORE_RE.search(region)
        head, tail = (region[: m.start()], region[m.end():]) if m else (region, "")
        if _SIGNED_RE.search(region):
            return None
        ts = [float(x) for x in _NUM_RE.findall(head)]
        scores = [float(x) for x in _NUM_RE.findall(tail)]
        if not all(math.isfinite(x) for x in ts + scores):
            return None
        return (ts, scores) if ts else None
    except Exception:  # noqa: BLE001
        return None


def _clip_scores(ts: Sequence[float], scores: Sequence[float], clip_len: float) -> dict[int, float]:
    out: dict[int, float] = {}
    for i, t in enumerate(ts):
        c = int(math.floor(float(t) / clip_len + 1e-6))
        if c not in out:
            s = float(scores[i]) if i < len(scores) else 0.0
            out[c] = s if math.isfinite(s) else 0.0
    return out


def f2_score(pred_ts: Sequence[float], gt_ts: Sequence[float], clip_len: float = 2.0) -> float:
    """Recall-weighted F-measure (β = 2) between predicted and gt highlight clips."""
    pred = set(_clip_scores(pred_ts, [], clip_len))
    gt = set(_clip_scores(gt_ts, [], clip_len))
    if not pred or not gt:
        return 0.0
    hit = len(pred & gt)
    p, r = hit / len(pred), hit / len(gt)
    return 0.0 if p + r == 0 else 5 * p * r / (4 * p + r)


def weighted_mse(
    pred_ts: Sequence[float], pred_scores: Sequence[float], gt_ts: Sequence[float],
    gt_scores: Sequence[float], clip_len: float = 2.0,
) -> float:
    """Saliency-score MSE over gt clips weighted by s_gt² (unweighted if all s_gt are 0)."""
    pred = _clip_scores(pred_ts, pred_scores, clip_len)
    gt = _clip_scores(gt_ts, gt_scores, clip_len)
    if not gt:
        return 0.0
    errs = [(pred.get(c, 0.0) - s) ** 2 for c, s in gt.items()]
    weights = [s * s for s in gt.values()]
    total = sum(weights)
    if total <= 0:
        return sum(errs) / len(errs)
    return sum(w * e for w, e in zip(weights, errs)) / total


def highlight_reward(
    pred_ts: Sequence[float], pred_scores: Sequence[float], gt_ts: Sequence[float],
    gt_scores: Sequence[float], clip_len: float = 2.0, lam_rec: float = 0.6, lam_score: float = 0.4,
) -> float:
    """TempSamp-R1 §3.3: λ_rec · F2 + λ_score / (1 + WMSE); 0 for empty predictions or ground truth."""
    try:
        if len(pred_ts) == 0 or len(gt_ts) == 0:
            return 0.0
        f2 = f2_score(pred_ts, gt_ts, clip_len)
        wmse = weighted_mse(pred_ts, pred_scores, gt_ts, gt_scores, clip_len)
        out = lam_rec * f2 + lam_score / (1.0 + wmse)
        return float(out) if math.isfinite(out) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def highlight_reward_text(text: str, gt_ts: Sequence[float], gt_scores: Sequence[float], **kw) -> float | None:
    """Parse then score; None when the completion is unparsable (the caller scores it 0 and counts it)."""
    parsed = parse_highlight(text)
    if parsed is None:
        return None
    return highlight_reward(parsed[0], parsed[1], gt_ts, gt_scores, **kw)
