"""TempSamp-R1 mixed-policy advantages (TempSamp-R1 §3.2, eqs. 2–4), pure and jit-able.

Each query has G − 1 on-policy rewards ``on_rewards [B, G−1]`` and one off-policy reward
``off_reward [B]`` (the ground-truth solution scored by the same reward). Outputs are advantages
``[B, G]`` with the off-policy sample in the *last* column (the paper's index G).

Modes (the ablation of TempSamp Tab. 4):

* ``"mixed"`` — eq. 2: normalise over the joint group r_1..r_{G−1} ∪ r_G.
* ``"downscale"`` — "Reward downscaling": the off-policy reward is bounded to a fixed fraction
  (80 %) of the maximum possible reward, r_G ← min(r_G, 0.8 · r_max) (r_max = 1 for the IoU reward;
  ``max_reward=None`` scales the reward itself, r_G ← 0.8 · r_G), then eq. 2 over all G.
* ``"anchor"`` — eq. 3: off-policy excluded from the statistics; on-policy advantages are normalised
  over the G − 1 on-policy rewards only and A_G = λ_off · max_i A_i, λ_off = 1.2. (When all on-policy
  rewards are equal, max_i A_i = 0 and so A_G = 0, exactly as eq. 3 reads.)
* ``"shaping"`` — eq. 4, the paper's method: every reward (on- and off-policy) is transformed,
  r̃ = τ + α1 · ln((r − τ) + 1) for r ≥ τ,  r̃ = τ − (e^{α2 (τ − r)} − 1) / (e^{α2} − 1) for r < τ,
  with τ = 0.8, α1 = 0.01, α2 = 1, and then normalised with eq. 2 over all G.

Masks: ``on_mask [B, G−1]`` / ``off_mask [B]`` (True = valid) drop samples from the statistics and
give them A = 0 (see ``group_advantages``).
"""
from __future__ import annotations

import functools
from typing import Literal, Optional

import jax
import jax.numpy as jnp

from vtg_jax.rl.advantages import group_advantages

Mode = Literal["mixed", "downscale", "anchor", "shaping"]
MODES = ("mixed", "downscale", "anchor", "shaping")


def shape_rewards(rewards, tau: float = 0.8, alpha1: float = 0.01, alpha2: float = 1.0):
    """TempSamp-R1 eq. 4 non-linear reward shaping (compress above τ, expand below)."""
    r = jnp.asarray(rewards, jnp.float32)
    above = tau + alpha1 * jnp.log1p(jnp.maximum(r - tau, 0.0))
    x = jnp.maximum(tau - r, 0.0)
    if alpha2 == 0:  # limit α2 → 0 of (e^{α2 x} − 1)/(e^{α2} − 1) is x
        expand = x
    else:
        expand = jnp.expm1(alpha2 * x) / jnp.expm1(jnp.float32(alpha2))
    return jnp.where(r >= tau, above, tau - expand).astype(jnp.float32)


def downscale_off_reward(off_reward, scale: float = 0.8, max_reward: Optional[float] = 1.0):
    """"Reward downscaling": min(r_off, scale · max_reward), or scale · r_off if max_reward is None."""
    r = jnp.asarray(off_reward, jnp.float32)
    if max_reward is None:
        return r * scale
    return jnp.minimum(r, jnp.float32(scale * max_reward))


def _join(on_rewards, off_reward, on_mask, off_mask):
    on = jnp.asarray(on_rewards, jnp.float32)
    off = jnp.asarray(off_reward, jnp.float32).reshape(on.shape[0], 1)
    rewards = jnp.concatenate([on, off], axis=-1)
    if on_mask is None and off_mask is None:
        return rewards, None
    om = jnp.ones(on.shape, bool) if on_mask is None else jnp.asarray(on_mask).astype(bool)
    fm = jnp.ones((on.shape[0],), bool) if off_mask is None else jnp.asarray(off_mask).astype(bool)
    return rewards, jnp.concatenate([om, fm.reshape(-1, 1)], axis=-1)


def mixed_advantages(on_rewards, off_reward, *, eps=1e-6, std="biased", on_mask=None, off_mask=None):
    """Eq. 2: group normalisation over G − 1 on-policy rewards ∪ the off-policy reward -> [B, G]."""
    rewards, mask = _join(on_rewards, off_reward, on_mask, off_mask)
    return group_advantages(rewards, eps=eps, std=std, mask=mask)


def anchored_advantages(
    on_rewards, off_reward, *, lam_off: float = 1.2, eps=1e-6, std="biased", on_mask=None, off_mask=None
):
    """Eq. 3: on-policy-only statistics; A_G = λ_off · max{A_i | i < G} -> [B, G]."""
    on = jnp.asarray(on_rewards, jnp.float32)
    a_on = group_advantages(on, eps=eps, std=std, mask=on_mask)
    valid_on = jnp.isfinite(on)
    if on_mask is not None:
        valid_on = valid_on & jnp.asarray(on_mask).astype(bool)
    best = jnp.max(jnp.where(valid_on, a_on, -jnp.inf), axis=-1, initial=-jnp.inf)
    a_off = jnp.where(jnp.any(valid_on, axis=-1), lam_off * best, 0.0)
    off_valid = jnp.isfinite(jnp.asarray(off_reward, jnp.float32)).reshape(-1)
    if off_mask is not None:
        off_valid = off_valid & jnp.asarray(off_mask).astype(bool).reshape(-1)
    a_off = jnp.where(off_valid, a_off, 0.0)
    return jnp.concatenate([a_on, a_off[:, None]], axis=-1).astype(jnp.float32)


_STATIC = ("mode", "eps", "std", "downscale", "max_reward", "lam_off", "tau", "alpha1", "alpha2")


@functools.partial(jax.jit, static_argnames=_STATIC)
def tempsamp_advantages(
    on_rewards,
    off_reward,
    mode: Mode = "shaping",
    *,
    eps: float = 1e-6,
    std="biased",
    on_mask=None,
    off_mask=None,
    downscale: float = 0.8,
    max_reward: Optional[float] = 1.0,
    lam_off: float = 1.2,
    tau: float = 0.8,
    alpha1: float = 0.01,
    alpha2: float = 1.0,
):
    """TempSamp-R1 advantages [B, G] (off-policy last) for ``mode`` in mixed/downscale/anchor/shaping.

    Jitted with ``mode`` and the hyper-parameters static (Python values); the defaults are
    the paper's (80 % downscaling, λ_off = 1.2, τ = 0.8, α1 = 0.01, α2 = 1).
    """
    kw = dict(eps=eps, std=std, on_mask=on_mask, off_mask=off_mask)
    if mode == "mixed":
        return mixed_advantages(on_rewards, off_reward, **kw)
    if mode == "downscale":
        return mixed_advantages(on_rewards, downscale_off_reward(off_reward, downscale, max_reward), **kw)
    if mode == "anchor":
        return anchored_advantages(on_rewards, off_reward, lam_off=lam_off, **kw)
    if mode == "shaping":
        shaped_on = shape_rewards(on_rewards, tau, alpha1, alpha2)
        shaped_off = shape_rewards(off_reward, tau, alpha1, alpha2)
        return mixed_advantages(shaped_on, shaped_off, **kw)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
