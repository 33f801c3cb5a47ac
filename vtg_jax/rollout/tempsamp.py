"""TempSamp-R1 (§3.2, eqs. 2–4): GRPO on G−1 on-policy samples + 1 ground-truth off-policy solution.

    tokens, lengths, old_logp, off, rewards, adv = tempsamp_group(
        out["tokens"], out["lengths"], out["logprobs"], on_rewards, answers, off_rewards, mode="shaping")
    batch = build_rl_batch(cfg, prompts, tokens, lengths, old_logp, adv, rewards=rewards, off_policy=off)
    state, metrics = tempsamp_step(state, frozen, batch)

The step is the GRPO step (`train.grpo.make_tempsamp_step` = `make_grpo_step`): the off-policy row's "old"
log-prob is the current policy's own (stop-gradient) log-prob, so its importance ratio is exactly 1 (TempSamp-R1 §3.1: with
pi_old = pi_theta "the importance weights collapse to unity, eliminating the need for ratio clipping"),
and its update is A_G · grad log pi_theta(o_G | q), the advantage of eq. 2/3/4. `rl/off_policy_ratio`
reports that ratio. The advantage mode is a host-side choice (`rl.tempsamp_advantages`), so the step
has no mode branch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vtg_jax.rl import tempsamp_advantages
from vtg_jax.rollout.packing import append_ground_truth


def tempsamp_group(tokens: np.ndarray, lengths: np.ndarray, logprobs: np.ndarray, on_rewards: np.ndarray,
                   answers: Sequence[Sequence[int]], off_rewards: np.ndarray, mode: str = "shaping",
                   pad_id: int = 0, **adv_kwargs: Any):
    """The mixed group of one TempSamp iteration (host side).

    tokens / logprobs [B, G−1, N], lengths / on_rewards [B, G−1] from the sampler and the reward;
    answers[b]: ground-truth completion ids (EOS included); off_rewards [B]: its reward (1 for IoU).
    Returns (tokens, lengths, old_logp, off_policy, rewards, advantages) with the ground truth last,
    advantages from `rl.tempsamp_advantages(mode=...)` ("mixed" / "downscale" / "anchor" / "shaping").
    """
    tok, lens, old, off = append_ground_truth(tokens, lengths, logprobs, answers, pad_id)
    on = np.asarray(on_rewards, np.float32)
    offr = np.asarray(off_rewards, np.float32).reshape(-1)
    adv = np.asarray(tempsamp_advantages(on, offr, mode, **adv_kwargs))
    rewards = np.concatenate([on, offr[:, None]], axis=1)
    return tok, lens, old, off, rewards, adv


