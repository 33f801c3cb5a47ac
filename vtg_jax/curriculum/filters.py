"""TVG-R1 IoU data filters (TVG-R1 §3.1 "CoT Annotation and Data Filtering", §4.1, App. A.1).

Each source sample carries the IoU of its CoT annotation's final answer (Gemini-2.5-Pro in TVG-R1)
with the ground truth.

* Cold-start SFT data keeps samples with ``IoU > eps1`` (strict: "IoU > ε1", App. A.1 "IoU larger
  than 0.8"), ``eps1 = 0.8``.
* RL data *excludes* samples with ``IoU < eps2`` ("considered low-quality ... excluded from the RL
  stage"); the remaining samples (``IoU >= eps2``) form the RL set, ``eps2 = 0.4``.

The paper's "remaining samples" does not say whether the cold-start samples are also removed from
the RL set; by default they are not (the literal reading). Pass ``exclude=coldstart_indices`` to
remove them. An unparsable annotation (``None`` or NaN IoU) scores 0, so it is dropped by both
filters, and is counted in ``parse_failures``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vtg_jax.curriculum._common import ious_with_failures

__all__ = ["TVG_R1_EPS1", "TVG_R1_EPS2", "tvg_r1_coldstart_filter", "tvg_r1_rl_filter"]

TVG_R1_EPS1 = 0.8
TVG_R1_EPS2 = 0.4


def tvg_r1_coldstart_filter(
    ious: Sequence[float | None] | np.ndarray, eps1: float = TVG_R1_EPS1
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices of samples kept for the SFT cold start: ``IoU > eps1``."""
    iou, failed = ious_with_failures(ious)
    keep = np.nonzero(iou > eps1)[0].astype(np.int64)
    return keep, {
        "n_total": int(iou.size),
        "n_kept": int(keep.size),
        "parse_failures": int(failed.sum()),
        "eps1": float(eps1),
    }


def tvg_r1_rl_filter(
    ious: Sequence[float | None] | np.ndarray,
    eps2: float = TVG_R1_EPS2,
    exclude: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices of samples kept for RL: drop ``IoU < eps2`` (keep ``IoU >= eps2``) and any ``exclude``."""
    iou, failed = ious_with_failures(ious)
    keep_mask = iou >= eps2
    n_low = int(np.sum(~keep_mask))
    n_excluded = 0
    if exclude is not None:
        ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if ex.size and (ex.min() < 0 or ex.max() >= iou.size):
            raise ValueError(f"exclude indices must lie in [0, {iou.size}).")
        ex_mask = np.zeros(iou.size, dtype=bool)
        ex_mask[ex] = True
        n_excluded = int(np.sum(keep_mask & ex_mask))
        keep_mask &= ~ex_mask
    keep = np.nonzero(keep_mask)[0].astype(np.int64)
    return keep, {
        "n_total": int(iou.size),
        "n_kept": int(keep.size),
        "n_below_eps2": n_low,
        "n_excluded": n_excluded,
        "parse_failures": int(failed.sum()),
        "eps2": float(eps2),
    }
