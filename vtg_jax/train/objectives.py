"""One training iteration per algorithm: loader batch -> (rollouts, rewards, frozen-model scores) -> step.

    iterate = make_iteration(config, ctx)
    state, metrics = iterate(state, loader_batch, step)

Each builder makes its objective's jitted step once (`make_sft_step`, `make_grpo_step`, ...) and returns
the host-side iteration around it. Nothing here branches inside a step (DESIGN rule 3): the algorithm
picks WHICH step factory and which host pieces run.

Rollouts are sampled from the current policy (`sampling.generate`, one shared prefill per prompt) with
seed (config.seed, step) and the record index as prompt id, so an iteration is a pure function of the
state, the batch and the step: a resumed run draws the same samples (tests/train/test_loop.py).
Reference and teacher log-probs come from `sampling.score` (one prefill per prompt for all its
completions); the teacher and reference are never in the trained state (DESIGN rule 4).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from flax import nnx

from vtg_jax import rewards as rewards_lib
from vtg_jax.train.data_setup import answer_token_lists, prompt_only, spans_and_durations
from vtg_jax.train.state import merge_model

Iteration = Callable[[Any, dict, int], tuple[Any, dict]]

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


@dataclasses.dataclass
class RunContext:
    """What every iteration builder needs (built once by the loop)."""

    config: Any
    model_cfg: Any
    graphdef: nnx.GraphDef
    frozen: Any
    tx: Any
    schedule: Callable
    run_data: Any
    mesh: Any = None
    state_sharding: Any = None
    frozen_sharding: Any = None
    batch_sharding: Any = None
    teacher: Optional[nnx.Module] = None
    reference: Optional[nnx.Module] = None
    seed: int = 0  # base of the rollout seeds (from the checkpointed PRNG key)

    def put(self, batch: dict) -> Any:
        """Host batch -> device (replicated over the mesh when sharded; see data_setup.make_train_loader)."""
        if self.batch_sharding is None:
            return batch
        return jax.device_put(batch, self.batch_sharding)

    def step_kwargs(self) -> dict:
        return dict(state_sharding=self.state_sharding, frozen_sharding=self.frozen_sharding,
                    batch_sharding=self.batch_sharding)


def _opt(x: float) -> Optional[float]:
    """Config 0.0 means "off" for optional floats (clip bounds, KL clamp, dual clip)."""
    return None if not x else float(x)


def rollout_seed(base: int, step: int) -> int:
    """The sampler seed of update `step` from the run's checkpointed base seed."""
    return (int(base) * 1_000_003 + int(step)) % (2**31)


def _sample(ctx: RunContext, state: Any, prompts: dict, step: int, num_samples: int) -> tuple[dict, dict]:
    """Sampler inputs and `generate` outputs of the current policy for a prompt batch."""
    from vtg_jax.sampling import generate
    from vtg_jax.train.rollout import sampler_inputs

    r = ctx.config.rollout
    inputs = sampler_inputs(prompts)
    policy = merge_model(ctx.graphdef, state.params, ctx.frozen)
    out = generate(policy, inputs, num_samples=num_samples, max_new_tokens=r.max_new_tokens,
                   temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, seed=rollout_seed(ctx.seed, step),
                   eos_token_ids=[ctx.run_data.eos_id], prompt_ids=np.asarray(prompts["record_index"]),
                   mesh=ctx.mesh)
    return inputs, out


def _score(ctx: RunContext, model: nnx.Module, inputs: dict, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    from vtg_jax.sampling import score
    from vtg_jax.train.rollout import completion_mask

    return score(model, inputs, tokens, completion_mask(lengths, tokens.shape[-1]),
                 temperature=ctx.config.rollout.temperature, mesh=ctx.mesh)


def _ground_truth(answers: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth answer tokens [B, 1, longest answer] (0-padded) and lengths [B, 1]."""
    tokens = np.zeros((len(answers), 1, max(len(a) for a in answers)), np.int32)
    for i, a in enumerate(answers):
        tokens[i, 0, :len(a)] = a
    return tokens, np.asarray([[len(a)] for a in answers], np.int32)


def _sft(ctx: RunContext) -> Iteration:
    from vtg_jax.train import prepare_batch

    step_fn = make_train_step(ctx.config, ctx.graphdef, ctx.tx, ctx.schedule, **ctx.step_kwargs())

    def iterate(state, batch, step):
        packed = prepare_batch(ctx.model_cfg, batch, ctx.config.micro_batches)
        state, metrics = step_fn(state, ctx.frozen, ctx.put(packed))
        return state, dict(metrics)

    iterate.step_fn = step_fn
    return iterate


def grpo_config(c: Any):
    """`train.grpo.GRPOConfig` of a run config's `grpo` section."""
    from vtg_jax.train.grpo import GRPOConfig

    g = c.grpo
    return GRPOConfig(eps_low=_opt(g.eps_low), eps_high=_opt(g.eps_high), aggregation=g.aggregation, kl=g.kl,
                      beta=float(g.beta), beta_text=float(g.beta_text), beta_time=float(g.beta_time),
                      kl_clamp=_opt(g.kl_clamp), dual_clip=_opt(g.dual_clip), ratio_level=g.ratio_level,
                      temperature=float(c.rollout.temperature))


def _grpo_like(ctx: RunContext, tempsamp: bool) -> Iteration:
    """GRPO (Time-R1 / TVG-R1 / LongVTG-R1) and TempSamp-R1 (G−1 samples + the ground truth)."""
    from vtg_jax.losses import timestamp_token_mask
    from vtg_jax.rl import group_advantages
    from vtg_jax.train.rollout import build_rl_batch, rollout_rewards
    from vtg_jax.train.tempsamp import tempsamp_group

    c = ctx.config
    cfg = grpo_config(c)
    time_mask = (timestamp_token_mask(ctx.run_data.tokenizer, ctx.model_cfg.text.vocab_size)
                 if cfg.kl == "token_aware" else None)
    step_fn = make_train_step(c, ctx.graphdef, ctx.tx, ctx.schedule, time_mask=time_mask, **ctx.step_kwargs())
    spec = reward_spec(c.reward)
    g = int(c.rollout.num_samples) - (1 if tempsamp else 0)
    if g < 1:
        raise ValueError(f"rollout.num_samples must be >= {2 if tempsamp else 1}")
    std = None if c.grpo.adv_std == "none" else c.grpo.adv_std
    records = ctx.run_data.splits["train"]

    def iterate(state, batch, step):
        t0 = time.perf_counter()
        prompts = prompt_only(batch)
        inputs, out = _sample(ctx, state, prompts, step, g)
        t1 = time.perf_counter()
        spans, durations = spans_and_durations(records, batch["record_index"])
        rew, host = rollout_rewards(spec, ctx.run_data.decode, out["tokens"], out["lengths"], spans, durations)
        tokens, lengths, logp, off = out["tokens"], out["lengths"], out["logprobs"], None
        if tempsamp:
            answers = answer_token_lists(batch)
            gt_tok, gt_len = _ground_truth(answers)
            off_r, _ = rollout_rewards(spec, ctx.run_data.decode, gt_tok, gt_len, spans, durations)
            t = c.tempsamp
            tokens, lengths, logp, off, rew, adv = tempsamp_group(
                tokens, lengths, logp, rew, answers, off_r[:, 0], mode=t.mode, std=std, downscale=t.downscale,
                lam_off=t.lam_off, tau=t.tau, alpha1=t.alpha1, alpha2=t.alpha2)
        else:
            adv = np.asarray(group_advantages(rew, std=std))
        ref = _score(ctx, ctx.reference, inputs, tokens, lengths) if cfg.kl != "none" else None
        t2 = time.perf_counter()
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, logp, adv, rewards=rew, ref_logp=ref,
                            off_policy=off, num_micro=c.micro_batches,
                            max_new_tokens=max(c.rollout.max_new_tokens, tokens.shape[-1]))
        state, metrics = step_fn(state, ctx.frozen, ctx.put(rl))
        host.update({"time/rollout_s": t1 - t0, "time/score_s": t2 - t1,
                     "rl/finish_eos": float(np.mean(out["finish_reason"] == "eos"))})
        return state, {**metrics, **host}

    iterate.step_fn = step_fn
    return iterate


def opd_config(c: Any, default_aggregation: str = "token-mean"):
    """`train.opd.OPDConfig` of a run config's `opd` section (its aggregation "" = `default_aggregation`)."""
    from vtg_jax.train.opd import OPDConfig

    o = c.opd
    return OPDConfig(gamma=float(o.gamma), eps_low=_opt(o.eps_low), eps_high=_opt(o.eps_high),
                     aggregation=o.aggregation or default_aggregation, temperature=float(c.rollout.temperature))


def _opd(ctx: RunContext, on_policy: bool) -> Iteration:
    """Video-OPD (one student rollout, teacher log-probs; §3.1) and OP-RKD (ground-truth answers; App. C.1)."""
    from vtg_jax.train.rollout import build_rl_batch, rollout_rewards

    c = ctx.config
    if ctx.teacher is None:
        raise ValueError(f"{c.algorithm} needs a teacher (config.teacher.init_from or .preset)")
    step_fn = make_train_step(c, ctx.graphdef, ctx.tx, ctx.schedule, **ctx.step_kwargs())
    spec = reward_spec(c.reward)
    records = ctx.run_data.splits["train"]

    def iterate(state, batch, step):
        t0 = time.perf_counter()
        prompts = prompt_only(batch)
        spans, durations = spans_and_durations(records, batch["record_index"])
        if on_policy:
            inputs, out = _sample(ctx, state, prompts, step, 1)
            tokens, lengths, logp = out["tokens"], out["lengths"], out["logprobs"]
            _, host = rollout_rewards(spec, ctx.run_data.decode, tokens, lengths, spans, durations)
        else:
            from vtg_jax.train.rollout import sampler_inputs

            inputs = sampler_inputs(prompts)
            tokens, lengths = _ground_truth(answer_token_lists(batch))
            logp, host = np.zeros(tokens.shape, np.float32), {}
        t1 = time.perf_counter()
        teacher_logp = _score(ctx, ctx.teacher, inputs, tokens, lengths)
        t2 = time.perf_counter()
        n = max(c.rollout.max_new_tokens, tokens.shape[-1])
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, logp, np.zeros(lengths.shape, np.float32),
                            teacher_logp=teacher_logp, num_micro=c.micro_batches, max_new_tokens=n)
        state, metrics = step_fn(state, ctx.frozen, ctx.put(rl))
        host.update({"time/rollout_s": t1 - t0, "time/score_s": t2 - t1})
        return state, {**metrics, **host}

    iterate.step_fn = step_fn
    return iterate


def _op_fkd(ctx: RunContext) -> Iteration:
    """OP-FKD (Video-OPD App. C.2): forward KL to the teacher's full distribution on ground-truth answers."""
    from vtg_jax.train.rollout import build_rl_batch

    c = ctx.config
    if ctx.teacher is None:
        raise ValueError("op_fkd needs a teacher (config.teacher.init_from or .preset)")
    t_graphdef, t_state = nnx.split(ctx.teacher)
    t_sharding = None if ctx.mesh is None else jax.tree.map(lambda x: x.sharding, t_state)
    step_fn = make_train_step(c, ctx.graphdef, ctx.tx, ctx.schedule, teacher_graphdef=t_graphdef,
                              teacher_sharding=t_sharding, **ctx.step_kwargs())

    def iterate(state, batch, step):
        prompts = prompt_only(batch)
        tokens, lengths = _ground_truth(answer_token_lists(batch))
        n = max(c.rollout.max_new_tokens, tokens.shape[-1])
        rl = build_rl_batch(ctx.model_cfg, prompts, tokens, lengths, np.zeros(tokens.shape, np.float32),
                            np.zeros(lengths.shape, np.float32), num_micro=c.micro_batches, max_new_tokens=n)
        state, metrics = step_fn(state, ctx.frozen, t_state, ctx.put(rl))
        return state, dict(metrics)

    iterate.step_fn = step_fn
    return iterate


def fkd_config(c: Any):
    """`train.distill.FKDConfig` of a run config's `fkd` section."""
    from vtg_jax.train.distill import FKDConfig

    f = c.fkd
    return FKDConfig(aggregation=f.aggregation, temperature=float(c.rollout.temperature),
                     top_k=int(f.top_k) or None, topk_mode=f.topk_mode)


def make_train_step(config: Any, graphdef: nnx.GraphDef, tx: Any, schedule: Callable, *, time_mask: Any = None,
                    teacher_graphdef: Optional[nnx.GraphDef] = None, teacher_sharding: Any = None,
                    state_sharding: Any = None, frozen_sharding: Any = None, batch_sharding: Any = None) -> Callable:
    """The jitted step of `config.algorithm` (one factory per objective), as the loop runs it and as
    `vtg_jax.plan` compiles it. `time_mask`: the timestamp-token mask of LongVTG-R1's token-aware KL;
    `teacher_graphdef` / `teacher_sharding`: OP-FKD's teacher, an argument of its step."""
    from vtg_jax.train.distill import make_op_fkd_step
    from vtg_jax.train.grpo import make_grpo_step
    from vtg_jax.train.opd import make_op_rkd_step, make_opd_step
    from vtg_jax.train.sft import make_sft_step

    kw = dict(state_sharding=state_sharding, frozen_sharding=frozen_sharding, batch_sharding=batch_sharding)
    algorithm = config.algorithm
    if algorithm == "sft":
        return make_sft_step(graphdef, tx, schedule, **kw)
    if algorithm in ("grpo", "tempsamp"):
        return make_grpo_step(graphdef, tx, schedule, grpo_config(config), time_mask=time_mask, **kw)
    if algorithm in ("opd", "op_rkd"):
        factory = make_opd_step if algorithm == "opd" else make_op_rkd_step
        return factory(graphdef, tx, schedule, opd_config(config), **kw)
    if algorithm == "op_fkd":
        if teacher_graphdef is None:
            raise ValueError("op_fkd's step takes the teacher: pass teacher_graphdef")
        return make_op_fkd_step(graphdef, tx, schedule, teacher_graphdef, fkd_config(config),
                                teacher_sharding=teacher_sharding, **kw)
    raise ValueError(f"no train step for algorithm {algorithm!r}")


BUILDERS: dict[str, Callable[[RunContext], Iteration]] = {
    "sft": _sft,
    "grpo": lambda ctx: _grpo_like(ctx, tempsamp=False),
    "tempsamp": lambda ctx: _grpo_like(ctx, tempsamp=True),
    "opd": lambda ctx: _opd(ctx, on_policy=True),
    "op_rkd": lambda ctx: _opd(ctx, on_policy=False),
    "op_fkd": _op_fkd,
}

NEEDS_TEACHER = ("opd", "op_rkd", "op_fkd")


def needs_reference(config: Any) -> bool:
    return config.algorithm in ("grpo", "tempsamp") and config.grpo.kl != "none"


def make_iteration(config: Any, ctx: RunContext) -> Iteration:
    try:
        return BUILDERS[config.algorithm](ctx)
    except KeyError:
        raise ValueError(f"no training iteration for {config.algorithm!r}; known: {sorted(BUILDERS)}") from None
