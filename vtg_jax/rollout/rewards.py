"""The reward of a run config (`config.reward`): a preset name or weighted terms."""
from __future__ import annotations

from vtg_jax import rewards as rewards_lib

REWARD_PRESETS = {"iou_only": rewards_lib.IOU_ONLY, "tvg_r1": rewards_lib.TVG_R1, "time_r1": rewards_lib.TIME_R1,
                  "tempsamp_r1": rewards_lib.TEMPSAMP_R1, "longvtg_r1": rewards_lib.LONGVTG_R1}


def reward_spec(name: str) -> rewards_lib.RewardSpec:
    """A preset name (`REWARD_PRESETS`) or weighted terms "term:weight,term:weight" (e.g.
    "iou:0.9,format_tvg:0.1"; terms from `rewards.TERMS`, extendable with `rewards.register_term`)."""
    if name in REWARD_PRESETS:
        return REWARD_PRESETS[name]
    if ":" not in name:
        raise ValueError(f"reward must be one of {sorted(REWARD_PRESETS)} or 'term:weight,...', got {name!r}")
    terms = []
    for part in name.split(","):
        term, _, weight = part.partition(":")
        try:
            terms.append((term.strip(), float(weight)))
        except ValueError:
            raise ValueError(f"reward term {part!r} is not 'term:weight'") from None
    return rewards_lib.RewardSpec(terms=tuple(terms))
