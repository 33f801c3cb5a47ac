"""The optimizer every objective shares: global-norm clipping -> AdamW with a warmup-cosine schedule.

Why one small factory: SFT, GRPO and OPD differ in their loss, not in how parameters move, so the
step factories take an `optax.GradientTransformation` built here and the schedule is returned
alongside it (the step reports `train/lr` from the same function optax uses).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW + warmup-cosine + clipping. `total_steps` counts applied updates (skipped ones excluded)."""

    lr: float = 1.5e-3
    warmup_steps: int = 50
    total_steps: int = 1000
    end_lr_ratio: float = 0.0  # final lr = lr * end_lr_ratio
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # <= 0 disables clipping

    def __post_init__(self):
        if not (self.lr > 0 and self.total_steps > 0 and 0 <= self.warmup_steps <= self.total_steps):
            raise ValueError(f"need lr > 0 and 0 <= warmup_steps <= total_steps > 0, got {self}")


def _decay_mask(params: Any) -> Any:
    """Decay matrices only: biases, norm scales and 1-D tables are not regularised (common practice)."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(cfg: OptimConfig) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """(transformation, schedule) for `cfg`; schedule(step) is the lr of update number `step`."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.total_steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.end_lr_ratio)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                        mask=_decay_mask)
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw) if cfg.clip_norm > 0 else adamw
    return tx, schedule
