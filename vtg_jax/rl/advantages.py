"""Group-normalised advantages (GRPO, Dr.GRPO) as pure, jit-able array functions.

GRPO (TempSamp-R1 §3.1; TVG-R1 §3.3.2):  A_i = (r_i − mean(r)) / (std(r) + eps)  over the G samples of
one query. ``std="biased"`` uses 1/G (TVG-R1's σ), ``"unbiased"`` 1/(G−1) (``torch.std``, as in the
TRL / verl GRPO code), ``None`` is Dr.GRPO's A_i = r_i − mean(r) (no division).

Guarantees (tests/rl/test_rl_advantages.py):
* float32 output of shape [B, G];
* all-equal groups and groups with one valid sample give exactly 0 (statistics are computed on
  rewards shifted by a group element, so r_i − mean is exactly 0 when all r_i are equal);
* ``"unbiased"`` with G = 1 gives 0 (the divisor is clamped to 1), never NaN;
* jitted (``eps`` and ``std`` static), so eager calls compile once per shape;
* ``mask`` [B, G] (True = valid) excludes samples from mean/std and gives them A = 0; non-finite
  rewards are treated as masked; a group with no valid sample gives all zeros.
"""
from __future__ import annotations

import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp

StdMode = Optional[Literal["biased", "unbiased"]]


def masked_group_stats(rewards, mask=None, std: StdMode = "biased"):
    """Per-group ``(centered [B, G], std [B, 1], valid [B, G])`` with invalid entries zeroed.

    ``centered`` is r − mean(r) over the valid samples (0 where invalid); ``std`` is 0 for
    ``std=None``.
    """
    if std not in ("biased", "unbiased", None):
        raise ValueError(f"std must be 'biased', 'unbiased' or None, got {std!r}")
    r = jnp.asarray(rewards, jnp.float32)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [B, G], got shape {r.shape}")
    valid = jnp.isfinite(r)
    if mask is not None:
        valid = valid & jnp.broadcast_to(jnp.asarray(mask).astype(bool), r.shape)
    r = jnp.where(valid, r, 0.0)
    n = jnp.sum(valid, axis=-1, keepdims=True).astype(jnp.float32)
    # Shift by one valid element (the masked max) so that equal rewards centre to exactly 0.
    ref = jnp.max(jnp.where(valid, r, -jnp.inf), axis=-1, keepdims=True, initial=-jnp.inf)
    ref = jnp.where(n > 0, ref, 0.0)
    shifted = jnp.where(valid, r - ref, 0.0)
    mean_shifted = jnp.sum(shifted, axis=-1, keepdims=True) / jnp.maximum(n, 1.0)
    centered = jnp.where(valid, shifted - mean_shifted, 0.0)
    if std is None:
        return centered, jnp.zeros_like(n), valid
    denom = jnp.maximum(n - 1.0, 1.0) if std == "unbiased" else jnp.maximum(n, 1.0)
    sd = jnp.sqrt(jnp.sum(centered * centered, axis=-1, keepdims=True) / denom)
    return centered, sd, valid


@functools.partial(jax.jit, static_argnames=("eps", "std"))
def group_advantages(rewards, eps: float = 1e-6, std: StdMode = "biased", mask=None):
    """GRPO group-normalised advantages A = (r − mean) / (std + eps), float32 [B, G].

    Args:
        rewards: [B, G] rewards of G samples for each of B queries.
        eps: added to the standard deviation.
        std: "biased" (1/G), "unbiased" (1/(G−1)) or None (Dr.GRPO: no division).
        mask: optional [B, G], True for valid samples; invalid ones get A = 0 and no say in the stats.
    """
    centered, sd, valid = masked_group_stats(rewards, mask, std)
    adv = centered if std is None else centered / (sd + eps)
    return jnp.where(valid, adv, 0.0).astype(jnp.float32)
