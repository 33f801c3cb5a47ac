"""Advantages and reward shaping: GRPO / Dr.GRPO group normalisation and TempSamp-R1 (eqs. 2–4)."""
from vtg_jax.rl.advantages import group_advantages, masked_group_stats
from vtg_jax.rl.tempsamp import (
    MODES,
    anchored_advantages,
    downscale_off_reward,
    mixed_advantages,
    shape_rewards,
    tempsamp_advantages,
)

__all__ = [
    "group_advantages", "masked_group_stats",
    "tempsamp_advantages", "mixed_advantages", "anchored_advantages",
    "downscale_off_reward", "shape_rewards", "MODES",
]
