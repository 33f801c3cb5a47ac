"""Masked reductions of per-token values ``[B, T]`` to a scalar loss.

All loss math runs in float32 whatever the input dtype (``to_float``; float64 inputs, used by the
exact gradient tests under ``jax.enable_x64``, stay float64). Masked positions are excluded with
``jnp.where`` (not a product), so a NaN/inf in a padded position never reaches the value. Empty
masks give 0, never NaN.

Modes (the names follow verl; TRL's ``loss_type`` in brackets):

* ``"token-mean"``: sum_{b,t} m x / sum_{b,t} m  [TRL "bnpo"/"dapo"; DAPO's token-level loss].
* ``"seq-mean-token-mean"``: mean over sequences of (sum_t m x / sum_t m)  [TRL "grpo";
  LongVTG-R1 eq. 2, TempSamp-R1 eq. 1: 1/G sum_i 1/|o_i| sum_t].
* ``"seq-mean-token-sum-norm"``: mean over sequences of (sum_t m x / max_len)  [TRL "dr_grpo";
  Dr.GRPO: a constant normaliser, no length bias]; ``max_len`` defaults to T.
* ``"seq-mean-token-sum"``: mean over sequences of sum_t m x  [Video-OPD eq. 6, 25, 29 literally:
  E_tau sum_t].

"Mean over sequences" averages over the rows that hold at least one valid token, so rows added to
pad a batch to the mesh never change the loss. When every row has a valid token (always true for
completions, which contain at least EOS) this is the plain mean over B that TRL uses.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum")


def to_float(x: Array) -> Array:
    """``x`` in float32, or in float64 when it already is (bf16/f16/int/bool inputs become float32)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _as_bool(mask: Array) -> Array:
    return mask if mask.dtype == jnp.bool_ else mask != 0


def masked_sum(values: Array, mask: Array, axis: Optional[int | tuple[int, ...]] = None) -> Array:
    """sum of ``values`` where ``mask`` (float32)."""
    return jnp.sum(jnp.where(_as_bool(mask), to_float(values), 0.0), axis=axis)


def masked_mean(values: Array, mask: Array, axis: Optional[int | tuple[int, ...]] = None) -> Array:
    """Mean of ``values`` over the valid positions; 0 where there are none."""
    count = jnp.sum(_as_bool(mask).astype(jnp.float32), axis=axis)
    return masked_sum(values, mask, axis) / jnp.maximum(count, 1.0)


def _mean_over_valid_rows(per_seq: Array, mask: Array) -> Array:
    row_valid = jnp.any(_as_bool(mask), axis=-1)
    return masked_mean(per_seq, row_valid)


def aggregate(values: Array, mask: Array, mode: str = "token-mean", max_len: Optional[int] = None) -> Array:
    """Reduces per-token ``values [B, T]`` with validity ``mask [B, T]`` to a float32 scalar.

    Args:
      values: per-token losses (any float dtype; reduced in float32).
      mask: 1/True for valid (completion) tokens.
      mode: one of ``AGGREGATIONS`` (see the module docstring).
      max_len: constant normaliser of ``"seq-mean-token-sum-norm"`` (the maximum completion length);
        defaults to ``values.shape[-1]``.
    """
    if values.ndim != 2 or mask.shape != values.shape:
        raise ValueError(f"aggregate wants values and mask of one shape [B, T]; got {values.shape}, {mask.shape}")
    if mode == "token-mean":
        return masked_mean(values, mask)
    if mode == "seq-mean-token-mean":
        return _mean_over_valid_rows(masked_mean(values, mask, axis=-1), mask)
    if mode == "seq-mean-token-sum-norm":
        norm = float(values.shape[-1] if max_len is None else max_len)
        if norm <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        return _mean_over_valid_rows(masked_sum(values, mask, axis=-1) / norm, mask)
    if mode == "seq-mean-token-sum":
        return _mean_over_valid_rows(masked_sum(values, mask, axis=-1), mask)
    raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")
