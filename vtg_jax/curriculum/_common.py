"""Shared input checks for the curriculum selectors (private)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SeedLike = int | np.random.Generator | None


def as_values(values: Any, name: str) -> np.ndarray:
    """A finite 1-D float64 array, or ``ValueError`` naming the offending input."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        bad = np.nonzero(~np.isfinite(arr))[0][:5].tolist()
        raise ValueError(f"{name} contains NaN/inf at indices {bad} (score parse failures as 0 first).")
    return arr


def check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}.")
    return int(k)


def ious_with_failures(ious: Sequence[float | None] | np.ndarray, name: str = "ious") -> tuple[np.ndarray, np.ndarray]:
    """IoUs (N,) with ``None``/NaN (parse failures) set to 0, and the failure mask (N,)."""
    if isinstance(ious, np.ndarray) and ious.dtype != object:
        arr = ious.astype(np.float64)
    else:
        arr = np.array([np.nan if v is None else float(v) for v in ious], dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}.")
    failed = np.isnan(arr)
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name} contains inf.")
    return np.where(failed, 0.0, arr), failed


def make_rng(seed: SeedLike) -> np.random.Generator:
    """``np.random.default_rng(seed)``; a Generator passes through (so callers can chain draws)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def selection_stats(values: np.ndarray, selected: np.ndarray, k: int) -> dict[str, Any]:
    """Common stats: candidates, requested, selected, shortfall, mean value of the selection."""
    return {
        "n_candidates": int(values.shape[0]),
        "n_requested": int(k),
        "n_selected": int(selected.shape[0]),
        "shortfall": int(k - selected.shape[0]),
        "mean_selected": float(np.mean(values[selected])) if selected.size else float("nan"),
    }
