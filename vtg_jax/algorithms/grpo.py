"""GRPO (Time-R1 / TVG-R1 / LongVTG-R1, Video-OPD's baseline) and TempSamp-R1 (G−1 samples + the ground
truth, §3.2): G rollouts per prompt, rewards, group advantages, optional KL to the frozen reference."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from vtg_jax.algorithms.context import Iteration, RunContext, optional_float
from vtg_jax.losses import timestamp_token_mask
from vtg_jax.rl import group_advantages
from vtg_jax.rollout.packing import build_rl_batch, pad_completions, rollout_rewards
from vtg_jax.rollout.prompts import answer_token_lists, prompt_only
from vtg_jax.rollout.rewards import reward_spec
from vtg_jax.rollout.samples import ground_truth_completions
from vtg_jax.rollout.tempsamp import tempsamp_group
from vtg_jax.train.grpo import GRPOConfig, make_grpo_step


def grpo_config(c: Any) -> GRPOConfig:
    """`train.grpo.GRPOConfig` of a run config's `grpo` section."""
    g = c.grpo
    return GRPOConfig(eps_low=optional_float(g.eps_low), eps_high=optional_float(g.eps_high),
                      aggregation=g.aggregation, kl=g.kl, beta=float(g.beta), beta_text=float(g.beta_text),
                      beta_time=float(g.beta_time), kl_clamp=optional_float(g.kl_clamp),
                      dual_clip=optional_float(g.dual_clip), ratio_level=g.ratio_level,
                      temperature=float(c.rollout.temperature), shared_prefix=bool(g.shared_prefix))


def uses_reference(c: Any) -> bool:
    """The frozen initial policy is built when the loss has a KL term."""
    return c.grpo.kl != "none"


def make_step(config: Any, graphdef: Any, tx: Any, schedule: Callable, *, time_mask: Optional[Any] = None,
              state_sharding: Any = None, frozen_sharding: Any = None, batch_sharding: Any = None,
              **unused: Any) -> Callable:
    """`step(state, frozen, batch)` of `train.grpo` (TempSamp-R1's is the same step; its batch marks the
    ground-truth rows). `time_mask`: LongVTG-R1's timestamp tokens for the token-aware KL."""
    return make_grpo_step(graphdef, tx, schedule, grpo_config(config), time_mask=time_mask,
                          state_sharding=state_sharding, frozen_sharding=frozen_sharding,
                          batch_sharding=batch_sharding)


def _iteration(ctx: RunContext, tempsamp: bool) -> Iteration:
    c = ctx.config
    cfg = grpo_config(c)
    time_mask = (timestamp_token_mask(ctx.run_data.tokenizer, ctx.model_cfg.text.vocab_size)
                 if cfg.kl == "token_aware" else None)
    spec = reward_spec(c.reward)
    g = int(c.rollout.num_samples) - (1 if tempsamp else 0)
    if g < 1:
        raise ValueError(f"rollout.num_samples must be >= {2 if tempsamp else 1}")
    std = None if c.grpo.adv_std == "none" else c.grpo.adv_std
    decode = ctx.run_data.decode
    # Per-host input: with own rows each process samples, rewards and packs its prompts (rewards and group
    # advantages are per prompt), the step assembling its batch from every process's rows; else every
    # process works on the whole gathered batch.
    own = ctx.packs_own_rows()
    step_fn = make_step(c, ctx.graphdef, ctx.tx, ctx.schedule, time_mask=time_mask, **ctx.step_shardings_for(own))

    def iterate(state, batch, step):
        t0 = time.perf_counter()
        batch = ctx.iteration_batch(batch, own)
        prompts = prompt_only(batch)
        inputs, out = ctx.sample(state, prompts, step, g, own_rows=own)
        t1 = time.perf_counter()
        spans, durations = batch["span"], batch["duration"]  # the loader batch's ground truth
        rew, host = rollout_rewards(spec, decode, out["tokens"], out["lengths"], spans, durations)
        tokens, lengths, logp, off = out["tokens"], out["lengths"], out["logprobs"], None
        if tempsamp:
            answers = answer_token_lists(batch)
            gt_tok, gt_len = ground_truth_completions(answers)
            off_r, _ = rollout_rewards(spec, decode, gt_tok, gt_len, spans, durations)
            t = c.tempsamp
            tokens, lengths, logp, off, rew, adv = tempsamp_group(
                tokens, lengths, logp, rew, answers, off_r[:, 0], mode=t.mode, std=std, downscale=t.downscale,
                lam_off=t.lam_off, tau=t.tau, alpha1=t.alpha1, alpha2=t.alpha2)
        else:
            adv = np.asarray(group_advantages(rew, std=std))
        n = ctx.agreed_length(tokens.shape[-1], own)  # ground-truth answers may be longer on some process
        tokens, logp = pad_completions(tokens, n), pad_completions(logp, n)
        ref = None
        if cfg.kl != "none":
            ref = ctx.score(ctx.reference, inputs, tokens, lengths, own_rows=own)
        t2 = time.perf_counter()
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, logp, adv, rewards=rew, ref_logp=ref,
                            off_policy=off, num_micro=c.micro_batches, max_new_tokens=max(c.rollout.max_new_tokens, n),
                            **ctx.vision_packing(own))
        state, metrics = step_fn(state, ctx.frozen, ctx.put_rl(rl, own))
        host.update({"time/rollout_s": t1 - t0, "time/score_s": t2 - t1,
                     "rl/finish_eos": float(np.mean(out["finish_reason"] == "eos"))})
        return state, {**metrics, **ctx.host_metrics(host, own)}

    iterate.step_fn = step_fn
    return iterate


def make_iteration(ctx: RunContext) -> Iteration:
    """GRPO: G sampled completions per prompt, group-normalised rewards."""
    return _iteration(ctx, tempsamp=False)


def make_tempsamp_iteration(ctx: RunContext) -> Iteration:
    """TempSamp-R1: G−1 sampled completions + the ground truth, its advantage shaping (eqs. 2–4)."""
    return _iteration(ctx, tempsamp=True)
