"""GRPO / TempSamp steps: consistency with the sampler, learning, the non-finite guard, one compile,
sharding and gradient accumulation (tiny Qwen2.5-VL, random init, 8 fake CPU devices); the RLBatch layout."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rl_helpers import CFG, N_NEW, fresh_model, host_copy, init, make_processor, make_prompts, rollout

from vtg_jax.rl import group_advantages
from vtg_jax.train.grpo import GRPOConfig, grpo_loss, make_grpo_step
from vtg_jax.train.update import accumulate_grads
from vtg_jax.rollout.packing import build_rl_batch, completion_mask, sampler_inputs
from vtg_jax.train.state import merge_model
from vtg_jax.rollout.tempsamp import tempsamp_group
from vtg_jax.train.grpo import make_tempsamp_step
from vtg_jax.train.opd import make_opd_step
from vtg_jax.train.rl_batch import RLBatch

G = 4
GRPO_CFG = GRPOConfig(eps_low=0.2, eps_high=0.28, kl="k3", beta=0.01)
TARGET = 256  # toy reward: fraction of completion tokens with id < TARGET (about 1/4 at init)


def toy_reward(tokens):
    return (tokens < TARGET).mean(-1).astype(np.float32)


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    return make_processor(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def setup():
    tx, schedule, state, graphdef, frozen = init(fresh_model(0), lr=5e-2)
    host = host_copy(state)
    fresh = lambda: jax.tree.map(jnp.asarray, host)  # noqa: E731 — the step donates its input state
    return tx, schedule, graphdef, frozen, make_grpo_step(graphdef, tx, schedule, GRPO_CFG), fresh


def grpo_batch(graphdef, state, frozen, prompts, seed, num_micro=1, rewards=None):
    out = rollout(graphdef, state, frozen, prompts, G, seed)
    r = toy_reward(out["tokens"]) if rewards is None else rewards
    adv = np.asarray(group_advantages(r))
    ref = out["logprobs"] * 0.9  # any fixed reference; precomputed as sampling.score would
    batch = build_rl_batch(CFG, prompts, out["tokens"], out["lengths"], out["logprobs"], adv, rewards=r,
                           ref_logp=ref, num_micro=num_micro)
    return batch, r


def test_grpo_raises_toy_reward_and_compiles_once(proc, setup):
    _, _, graphdef, frozen, step, fresh = setup
    state = fresh()
    prompts = make_prompts(proc, 0)
    means = []
    for it in range(10):
        batch, r = grpo_batch(graphdef, state, frozen, prompts, seed=it)
        state, m = step(state, frozen, batch)
        means.append(float(r.mean()))
        if it == 0:  # on-policy: the step's log-probs reproduce the sampler's (positions, vision sharing)
            assert abs(float(m["pg/ratio_mean"]) - 1.0) < 1e-4 and float(m["pg/clip_frac"]) == 0.0
            assert int(m["train/loss_count"]) == 4 * G * N_NEW
        assert int(m["train/skipped_nonfinite"]) == 0
        assert np.isfinite(float(m["rl/kl_ref"])) and "reward/mean" in m and "loss/pg" in m
    assert np.mean(means[-2:]) > means[0] + 0.2, means
    assert step.traces == 1


@pytest.mark.parametrize("poison", ["reward", "logits"])
def test_nonfinite_skips_and_counts(proc, setup, poison):
    _, _, graphdef, frozen, step, fresh = setup
    state = fresh()
    prompts = make_prompts(proc, 1)
    batch, _ = grpo_batch(graphdef, state, frozen, prompts, seed=0)
    if poison == "reward":
        batch.rewards[0, 3] = np.nan
    else:  # NaN pixels -> NaN visual features -> NaN logits
        batch.pixel_values_videos[0, :8] = np.nan
    before = host_copy(state)
    state, m = step(state, frozen, batch)
    assert int(m["train/skipped_nonfinite"]) == 1 and int(m["train/skipped_nonfinite_total"]) == 1
    after = host_copy(state)
    assert int(after.step) == int(before.step)
    old, new = (before.params, before.opt_state), (after.params, after.opt_state)
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
        assert a.tobytes() == b.tobytes()  # bitwise unchanged


def test_tempsamp_off_policy_ratio_is_one(proc, setup):
    """G-1 sampled + 1 ground truth; the TempSamp step is the GRPO step, so the compiled one is reused."""
    tx, schedule, graphdef, frozen, step, fresh = setup
    assert callable(make_tempsamp_step(graphdef, tx, schedule, GRPO_CFG))
    state = fresh()
    prompts = make_prompts(proc, 2)
    out = rollout(graphdef, state, frozen, prompts, G, seed=0)  # keep G-1 of them (same compiled sampler)
    tokens, lengths, logp = out["tokens"][:, :G - 1], out["lengths"][:, :G - 1], out["logprobs"][:, :G - 1]
    answers = [[20 + i, 30, 40, 50, 1006] for i in range(4)]  # ground-truth ids incl. <|im_end|>
    tok, lens, old, off, r, adv = tempsamp_group(tokens, lengths, logp, toy_reward(tokens), answers,
                                                 np.ones(4, np.float32), mode="shaping")
    assert tok.shape == (4, G, N_NEW) and off[:, -1].all() and not off[:, :-1].any()
    np.testing.assert_array_equal(tok[:, -1, :5], answers)
    batch = build_rl_batch(CFG, prompts, tok, lens, old, adv, rewards=r, off_policy=off,
                           ref_logp=np.where(completion_mask(lens, N_NEW) > 0, -7.0, 0.0))
    state, m = step(state, frozen, batch)
    assert float(m["rl/off_policy_ratio"]) == 1.0
    assert abs(float(m["pg/ratio_mean"]) - 1.0) < 1e-4  # the on-policy rows too, at the first step
    assert int(m["train/skipped_nonfinite"]) == 0 and np.isfinite(float(m["loss/total"]))
    assert (adv[:, -1] > adv[:, :-1].max(1)).all()  # the ground truth (reward 1) leads its group
    assert step.traces == 1


def test_grad_accumulation_equals_full_batch(proc, setup):
    _, _, graphdef, frozen, _, fresh = setup
    state = fresh()
    prompts = make_prompts(proc, 3)
    out = rollout(graphdef, state, frozen, prompts, G, seed=0)
    r = toy_reward(out["tokens"])
    args = (CFG, prompts, out["tokens"], out["lengths"], out["logprobs"] + 0.05, np.asarray(group_advantages(r)))
    kw = dict(rewards=r, ref_logp=out["logprobs"])
    for agg in ("seq-mean-token-mean",):  # per-row normaliser: the harder case for exact accumulation
        cfg = GRPOConfig(kl="k3", beta=0.1, aggregation=agg)

        @jax.jit
        def grads(params, batch):
            g, total, count, _ = accumulate_grads(
                lambda p, mb: grpo_loss(cfg, merge_model(graphdef, p, frozen), mb), params, batch)
            return jax.tree.map(lambda x: x / count, g), total / count

        g1, l1 = grads(state.params, build_rl_batch(*args, num_micro=1, **kw))
        g2, l2 = grads(state.params, build_rl_batch(*args, num_micro=2, **kw))
        np.testing.assert_allclose(l1, l2, atol=1e-5, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g1)) > 1e-4


def test_sharded_grpo_step_matches_single_device(proc, setup):
    """data x fsdp x tensor = 2x2x2 mesh of fake CPU devices vs one device, same batch. SGD, so that the
    new parameters are linear in the gradient (Adam's first, sign-like step lr·g/(|g|+eps) would turn
    float-order noise on a near-zero gradient entry into a visible update)."""
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    from vtg_jax.parallel.rules import make_mesh, sharded_call
    from vtg_jax.train import TrainState, state_shardings

    _, schedule, graphdef, frozen, _, fresh = setup
    tx = optax.sgd(0.5)
    prompts = make_prompts(proc, 4)
    batch, _ = grpo_batch(graphdef, fresh(), frozen, prompts, seed=0)

    def sgd_state():
        s = fresh()
        return TrainState(step=s.step, params=s.params, opt_state=tx.init(s.params), skipped=s.skipped)

    ref_state, ref = make_grpo_step(graphdef, tx, schedule, GRPO_CFG)(sgd_state(), frozen, batch)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    state = sgd_state()
    s_shard, f_shard = state_shardings(state, mesh), state_shardings(frozen, mesh)
    sharded = make_grpo_step(graphdef, tx, schedule, GRPO_CFG, state_sharding=s_shard, frozen_sharding=f_shard,
                             batch_sharding=NamedSharding(mesh, PartitionSpec()))
    with sharded_call(mesh):
        new, m = sharded(jax.device_put(state, s_shard), jax.device_put(frozen, f_shard), batch)
    for k in ("loss/total", "train/grad_norm", "rl/kl_ref", "pg/ratio_mean"):
        np.testing.assert_allclose(m[k], ref[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    kernel = new.params["language_model"]["layers"][0]["mlp"]["gate_proj"]["kernel"]
    assert len(kernel.value.sharding.device_set) == 8


def test_batch_layout(proc):
    prompts = make_prompts(proc, 5)
    inputs = sampler_inputs(prompts)
    assert inputs["attention_mask"][:, -1].all()  # left-padded for the sampler
    tokens = np.arange(4 * 2 * 5).reshape(4, 2, 5) % 50
    lengths = np.array([[5, 3], [1, 5], [2, 2], [5, 4]])
    b = build_rl_batch(CFG, prompts, tokens, lengths, np.zeros((4, 2, 5)), np.zeros((4, 2)), num_micro=2,
                       max_new_tokens=8)
    assert b.completions.shape == (2, 4, 8) and b.completion_pos.shape == (2, 3, 4, 8)
    np.testing.assert_array_equal(b.completion_mask.reshape(4, 2, 8), completion_mask(lengths, 8))
    last = b.prompt_pos[:, :, :, -1]  # [A, 3, b]
    np.testing.assert_array_equal(b.completion_pos[:, :, ::2, 0], last + 1)
    np.testing.assert_array_equal(b.completion_pos[:, :, 1::2, 7], last + 8)
    assert (b.completions[b.completion_mask == 0] == 0).all()


def test_rl_batch_is_the_documented_layout(proc):
    """build_rl_batch returns an RLBatch with the shapes and dtypes of its docstring (A = 2 micro-batches of
    b = 2 prompts, G = 3, R = b·G, N = 8); absent optional fields are None."""
    prompts = make_prompts(proc, 6)
    a, b, g, n = 2, 2, 3, 8
    r, p = b * g, prompts["input_ids"].shape[1]
    pv, d = prompts["pixel_values_videos"].shape[1:]
    rl = build_rl_batch(CFG, prompts, np.ones((4, g, n), np.int32), np.full((4, g), 5), np.zeros((4, g, n)),
                        np.zeros((4, g)), ref_logp=np.zeros((4, g, n)), num_micro=a)
    assert isinstance(rl, RLBatch)
    i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
    expected = {"prompt_ids": ((a, b, p), i32), "prompt_mask": ((a, b, p), i32), "prompt_pos": ((a, 3, b, p), i32),
                "completions": ((a, r, n), i32), "completion_mask": ((a, r, n), i32),
                "completion_pos": ((a, 3, r, n), i32), "old_logp": ((a, r, n), f32), "advantages": ((a, r), f32),
                "rewards": ((a, r), f32), "off_policy": ((a, r), np.dtype(bool)), "ref_logp": ((a, r, n), f32),
                "pixel_values_videos": ((a, b * pv, d), f32)}
    assert {k: (getattr(rl, k).shape, getattr(rl, k).dtype) for k in expected} == expected
    assert rl.teacher_logp is None and all(v.shape[0] == a for v in rl.vision_inputs.values())
    assert [f.name for f in dataclasses.fields(RLBatch)] == [*list(expected)[:11], "teacher_logp",
                                                             "pixel_values_videos", "vision_inputs"]


def test_steps_name_the_batch_fields_they_miss(proc, setup):
    """GRPO with a KL term needs ref_logp, Video-OPD teacher_logp: a clear error when tracing a batch without."""
    tx, schedule, graphdef, frozen, _, fresh = setup
    prompts = make_prompts(proc, 7)
    rl = build_rl_batch(CFG, prompts, np.ones((4, 1, N_NEW), np.int32), np.full((4, 1), 2),
                        np.zeros((4, 1, N_NEW)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"GRPO \(kl='k3'\) needs the RL batch field\(s\) \['ref_logp'\]"):
        make_grpo_step(graphdef, tx, schedule, GRPO_CFG)(fresh(), frozen, rl)
    with pytest.raises(ValueError, match=r"Video-OPD needs the RL batch field\(s\) \['teacher_logp'\]"):
        make_opd_step(graphdef, tx, schedule)(fresh(), frozen, rl)
    with pytest.raises(TypeError, match="takes an RLBatch"):
        make_grpo_step(graphdef, tx, schedule, GRPO_CFG)(fresh(), frozen, dataclasses.asdict(rl))
