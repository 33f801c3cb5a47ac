"""Video-OPD, OP-RKD and OP-FKD steps against a fixed, larger, sharper random teacher (tiny presets)."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from rl_helpers import CFG, N_NEW, init_sgd, make_processor, make_prompts, rollout

from vtg_jax.losses import exact_kl, masked_mean, token_logprobs
from vtg_jax.models.qwen_vl import QwenVL
from vtg_jax.sampling import score
from vtg_jax.train.distill import FKDConfig, make_op_fkd_step
from vtg_jax.train.opd import OPDConfig, make_op_rkd_step, make_opd_step
from vtg_jax.train.state import merge_model
from vtg_jax.train.rl_batch import completion_logits
from vtg_jax.rollout.packing import build_rl_batch, completion_mask, sampler_inputs

TEACHER_CFG = dataclasses.replace(CFG, text=dataclasses.replace(CFG.text, num_hidden_layers=3))  # another size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    proc = make_processor(tmp_path_factory.mktemp("tok"))
    teacher = QwenVL(TEACHER_CFG, rngs=nnx.Rngs(7))
    head = teacher.lm_head.kernel  # a peaked teacher: far from the near-uniform random student
    head.set_value(head.get_value() * 8.0)
    prompts = make_prompts(proc, 11)
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 900, (4, 1, N_NEW)).astype(np.int32)  # fixed "ground-truth" trajectories
    gt_len = np.full((4, 1), N_NEW, np.int32)
    return proc, teacher, prompts, gt, gt_len


def exact_reverse_kl_fn(graphdef, frozen, teacher):
    """Low-noise yardstick: mean over completion positions of the exact KL(pi_theta || pi_tea) over the
    vocabulary on a fixed batch (the step's per-token sampled estimate is far noisier)."""
    t_graphdef, t_state = nnx.split(teacher)

    @jax.jit  # under jit (as in the steps): packed filler rows are not checked against placeholders
    def kl(params, mb):
        student, tea = merge_model(graphdef, params, frozen), nnx.merge(t_graphdef, t_state)
        return masked_mean(exact_kl(completion_logits(student, mb), completion_logits(tea, mb)), mb.completion_mask)

    return lambda state, batch: float(kl(state.params, jax.tree.map(lambda x: x[0], batch)))


def test_opd_lowers_reverse_kl(world):
    """Video-OPD iterations (sample -> teacher scores the student's tokens -> eq. 5-6 step). 16 samples
    per prompt only to tame the variance of the sampled-token gradient over a 1024-token vocabulary."""
    _, teacher, prompts, _, _ = world
    g = 16
    tx, schedule, state, graphdef, frozen = init_sgd(QwenVL(CFG, rngs=nnx.Rngs(1)), lr=1.0)
    step = make_opd_step(graphdef, tx, schedule, OPDConfig())
    yardstick = exact_reverse_kl_fn(graphdef, frozen, teacher)
    kls, fixed = [], None
    for it in range(5):
        out = rollout(graphdef, state, frozen, prompts, g, seed=it)
        mask = completion_mask(out["lengths"], N_NEW)
        t_logp = score(teacher, sampler_inputs(prompts), out["tokens"], mask)  # precomputed teacher log-probs
        batch = build_rl_batch(CFG, prompts, out["tokens"], out["lengths"], out["logprobs"], np.zeros((4, g)),
                               teacher_logp=t_logp)
        fixed = batch if fixed is None else fixed
        kls.append(yardstick(state, fixed))
        state, m = step(state, frozen, batch)
        assert int(m["train/skipped_nonfinite"]) == 0
        if it == 0:  # on-policy: rl/reverse_kl (current policy) equals opd/reverse_kl (sampler) at step 0
            np.testing.assert_allclose(m["rl/reverse_kl"], m["opd/reverse_kl"], rtol=1e-4)
    kls.append(yardstick(state, fixed))
    assert all(b < a for a, b in zip(kls, kls[1:])) and kls[-1] < 0.95 * kls[0], kls
    assert step.traces == 1


def test_op_rkd_and_fkd_on_fixed_trajectories(world):
    _, teacher, prompts, gt, gt_len = world
    inputs = sampler_inputs(prompts)
    t_logp = score(teacher, inputs, gt, completion_mask(gt_len, N_NEW))
    zeros = np.zeros((4, 1, N_NEW), np.float32)
    batch = build_rl_batch(CFG, prompts, gt, gt_len, zeros, np.zeros((4, 1)), teacher_logp=t_logp)

    # With pi_old = sg(pi_theta), eq. 24's gradient -sum_t r_t grad log pi_theta is the gradient of
    # sum_t r_t^2 / 2: OP-RKD shrinks the squared teacher/student log-ratio on the ground-truth tokens.
    # Its signed mean (`rl/reverse_kl`) may cross zero, so the check is on the square, under SGD.
    tx, schedule, state, graphdef, frozen = init_sgd(QwenVL(CFG, rngs=nnx.Rngs(2)), lr=0.02)
    rkd = make_op_rkd_step(graphdef, tx, schedule)

    @jax.jit
    def sq_log_ratio(params, mb):
        logp = token_logprobs(completion_logits(merge_model(graphdef, params, frozen), mb), mb.completions)
        return masked_mean((logp - mb.teacher_logp) ** 2, mb.completion_mask)

    first = jax.tree.map(lambda x: x[0], batch)
    rkd_sq = [float(sq_log_ratio(state.params, first))]
    for _ in range(4):
        state, m = rkd(state, frozen, jax.tree.map(np.copy, batch))
        rkd_sq.append(float(sq_log_ratio(state.params, first)))
        assert float(m["pg/ratio_mean"]) == 1.0  # pi_old = sg(pi_theta) on fixed trajectories
    assert all(b < a for a, b in zip(rkd_sq, rkd_sq[1:])) and rkd_sq[-1] < 0.9 * rkd_sq[0], rkd_sq

    tx, schedule, state, graphdef, frozen = init_sgd(QwenVL(CFG, rngs=nnx.Rngs(2)), lr=0.1)
    t_graphdef, t_state = nnx.split(teacher)
    fkd = make_op_fkd_step(graphdef, tx, schedule, t_graphdef, FKDConfig())
    fkl = []
    for _ in range(5):
        state, m = fkd(state, frozen, t_state, batch)
        fkl.append(float(m["rl/forward_kl"]))
        assert int(m["train/skipped_nonfinite"]) == 0
    assert all(b < a for a, b in zip(fkl, fkl[1:])) and fkl[-1] < 0.9 * fkl[0], fkl
    assert fkd.traces == 1
