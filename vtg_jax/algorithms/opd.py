"""Video-OPD (§3.1, eqs. 5–6): one student rollout per prompt, the frozen teacher's log-probs of its
tokens as a dense per-token reward; OP-RKD (App. C.1): the same loss on the ground-truth answers."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from vtg_jax.algorithms.context import Iteration, RunContext, optional_float
from vtg_jax.rollout.packing import build_rl_batch, pad_completions, rollout_rewards, sampler_inputs
from vtg_jax.rollout.prompts import answer_token_lists, prompt_only
from vtg_jax.rollout.rewards import reward_spec
from vtg_jax.rollout.samples import ground_truth_completions
from vtg_jax.train.opd import OPDConfig, make_op_rkd_step, make_opd_step


def opd_config(c: Any, default_aggregation: str = "token-mean") -> OPDConfig:
    """`train.opd.OPDConfig` of a run config's `opd` section (its aggregation "" = `default_aggregation`)."""
    o = c.opd
    return OPDConfig(gamma=float(o.gamma), eps_low=optional_float(o.eps_low), eps_high=optional_float(o.eps_high),
                     aggregation=o.aggregation or default_aggregation, temperature=float(c.rollout.temperature),
                     shared_prefix=bool(o.shared_prefix))


def make_step(config: Any, graphdef: Any, tx: Any, schedule: Callable, *, state_sharding: Any = None,
              frozen_sharding: Any = None, batch_sharding: Any = None, **unused: Any) -> Callable:
    """`step(state, frozen, batch)` of Video-OPD (`train.opd.make_opd_step`)."""
    return make_opd_step(graphdef, tx, schedule, opd_config(config), state_sharding=state_sharding,
                         frozen_sharding=frozen_sharding, batch_sharding=batch_sharding)


def make_rkd_step(config: Any, graphdef: Any, tx: Any, schedule: Callable, *, state_sharding: Any = None,
                  frozen_sharding: Any = None, batch_sharding: Any = None, **unused: Any) -> Callable:
    """`step(state, frozen, batch)` of OP-RKD (`train.opd.make_op_rkd_step`)."""
    return make_op_rkd_step(graphdef, tx, schedule, opd_config(config), state_sharding=state_sharding,
                            frozen_sharding=frozen_sharding, batch_sharding=batch_sharding)


def _iteration(ctx: RunContext, on_policy: bool) -> Iteration:
    c = ctx.config
    if ctx.teacher is None:
        raise ValueError(f"{c.algorithm} needs a teacher (config.teacher.init_from or .preset)")
    factory = make_step if on_policy else make_rkd_step
    spec = reward_spec(c.reward) if on_policy else None  # OP-RKD reports no reward (its config has none)
    own = ctx.packs_own_rows()  # per-host input all the way to the step (as in algorithms.grpo)
    step_fn = factory(c, ctx.graphdef, ctx.tx, ctx.schedule, **ctx.step_shardings_for(own))

    def iterate(state, batch, step):
        t0 = time.perf_counter()
        batch = ctx.iteration_batch(batch, own)
        prompts = prompt_only(batch)
        spans, durations = batch["span"], batch["duration"]  # the loader batch's ground truth
        if on_policy:
            inputs, out = ctx.sample(state, prompts, step, 1, own_rows=own)
            tokens, lengths, logp = out["tokens"], out["lengths"], out["logprobs"]
            _, host = rollout_rewards(spec, ctx.run_data.decode, tokens, lengths, spans, durations)
        else:
            inputs = sampler_inputs(prompts)
            tokens, lengths = ground_truth_completions(answer_token_lists(batch))
            logp, host = np.zeros(tokens.shape, np.float32), {}
        t1 = time.perf_counter()
        n = ctx.agreed_length(tokens.shape[-1], own)  # ground-truth answers may be longer on some process
        tokens, logp = pad_completions(tokens, n), pad_completions(logp, n)
        teacher_logp = ctx.score(ctx.teacher, inputs, tokens, lengths, own_rows=own)
        t2 = time.perf_counter()
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, logp, np.zeros(lengths.shape, np.float32),
                            teacher_logp=teacher_logp, num_micro=c.micro_batches,
                            max_new_tokens=max(c.rollout.max_new_tokens, n),
                            **ctx.vision_packing(own))
        state, metrics = step_fn(state, ctx.frozen, ctx.put_rl(rl, own))
        host.update({"time/rollout_s": t1 - t0, "time/score_s": t2 - t1})
        return state, {**metrics, **ctx.host_metrics(host, own)}

    iterate.step_fn = step_fn
    return iterate


def make_iteration(ctx: RunContext) -> Iteration:
    """Video-OPD: the student's own rollout, scored by the teacher."""
    return _iteration(ctx, on_policy=True)


def make_rkd_iteration(ctx: RunContext) -> Iteration:
    """OP-RKD: the ground-truth answer, scored by the teacher."""
    return _iteration(ctx, on_policy=False)
