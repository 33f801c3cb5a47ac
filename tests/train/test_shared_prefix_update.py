"""The shared-prefix update (`grpo.shared_prefix` / `opd.shared_prefix`, train/rl_batch.py): running each
prompt's text stack once for its G completions gives the same completion log-probs, loss and gradients
as the layout that repeats the prompt in every row, for both model families with a video, left-padded
prompts of different lengths, completions of different lengths, with and without remat, and inside a
jitted GRPO / OPD step on a data x fsdp x tensor mesh."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer
from rl_helpers import CFG, fresh_model, init, make_processor, make_prompts, rollout

from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
from vtg_jax.models.qwen_vl import QwenVL, get_preset
from vtg_jax.rl import group_advantages
from vtg_jax.rollout.packing import build_rl_batch
from vtg_jax.train.grpo import GRPOConfig, grpo_loss, make_grpo_step
from vtg_jax.train.opd import OPDConfig, make_opd_step
from vtg_jax.train.rl_batch import completion_logprobs
from vtg_jax.train.state import merge_model

G = 3
TOL = 1e-5


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    """A tiny-tokenizer processor per family."""
    qwen3 = get_preset("qwen3-vl-tiny")
    path = build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok3")), qwen3.family)
    return {"qwen2_5_vl": make_processor(tmp_path_factory.mktemp("tok")),
            "qwen3_vl": QwenVLProcessor(qwen3, Tokenizer.from_file(path + "/tokenizer.json"))}


def _batch(proc, graphdef, state, frozen, seed, cfg, num_micro=1):
    # 4 videos of 2 or 4 frames: prompts of different lengths
    prompts = make_prompts(proc, seed, size=56 if cfg.family == "qwen2_5_vl" else 64)
    out = rollout(graphdef, state, frozen, prompts, G, seed)
    lengths = out["lengths"].copy()
    lengths[0, 1] = 1  # one completion of a single token, one cut short
    lengths[2, 0] = 3
    adv = np.asarray(group_advantages(np.random.default_rng(seed).random((4, G)).astype(np.float32)))
    return build_rl_batch(cfg, prompts, out["tokens"], lengths, out["logprobs"] + 0.05, adv,
                          ref_logp=out["logprobs"], teacher_logp=out["logprobs"] - 0.1, num_micro=num_micro)


def _setup(proc, family, remat, seed=1, num_micro=1):
    """(graphdef, state, frozen, batch, model config) for a tiny model of `family` with `remat`."""
    cfg = CFG if family == "qwen2_5_vl" else get_preset("qwen3-vl-tiny")
    model = fresh_model(0) if family == "qwen2_5_vl" else QwenVL(cfg, rngs=nnx.Rngs(0))
    model.language_model.remat = remat
    _, _, state, graphdef, frozen = init(model)
    return graphdef, state, frozen, _batch(proc[family], graphdef, state, frozen, seed, cfg, num_micro), cfg


@pytest.mark.parametrize("family,remat", [("qwen2_5_vl", "full"), ("qwen2_5_vl", "none"), ("qwen3_vl", "full")])
def test_log_probs_and_gradients_equal_the_repeated_layout(proc, family, remat):
    graphdef, state, frozen, batch, _ = _setup(proc, family, remat)
    mb = jax.tree.map(lambda x: x[0], batch)
    loss_cfg = GRPOConfig(kl="k3", beta=0.1, aggregation="seq-mean-token-mean")

    def run(shared: bool):
        def loss(params, mb):  # mb traced, as inside the step's micro-batch loop
            m = merge_model(graphdef, params, frozen)
            logp, _ = completion_logprobs(m, mb, shared_prefix=shared)
            total, _ = grpo_loss(dataclasses.replace(loss_cfg, shared_prefix=shared), m, mb)
            return total, logp
        (total, logp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state.params, mb)
        return logp, total, grads

    logp_rep, loss_rep, g_rep = run(False)
    logp_sh, loss_sh, g_sh = run(True)
    valid = np.asarray(mb.completion_mask) != 0
    np.testing.assert_allclose(np.asarray(logp_sh)[valid], np.asarray(logp_rep)[valid], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(loss_sh, loss_rep, atol=TOL, rtol=TOL)
    jax.tree.map_with_path(lambda path, a, b: np.testing.assert_allclose(
        np.asarray(b), np.asarray(a), atol=TOL, rtol=TOL, err_msg=jax.tree_util.keystr(path)), g_rep, g_sh)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_rep)) > 1e-4


@pytest.mark.parametrize("objective", ["grpo", "opd"])
def test_jitted_step_on_a_mesh_equals_the_repeated_layout(proc, objective):
    """The GRPO and OPD steps with `shared_prefix` on a data x fsdp x tensor mesh of 8 fake devices, two
    micro-batches, SGD: the same metrics and new parameters as the repeated layout on one device."""
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    from vtg_jax.parallel.rules import make_mesh, sharded_call
    from vtg_jax.train import TrainState, state_shardings

    graphdef, state0, frozen, batch, _ = _setup(proc, "qwen2_5_vl", "full", seed=2, num_micro=2)
    tx = optax.sgd(0.5)

    def sgd_state():
        s = jax.tree.map(jnp.array, state0)
        return TrainState(step=s.step, params=s.params, opt_state=tx.init(s.params), skipped=s.skipped)

    def make(shared: bool, **kw):
        if objective == "grpo":
            return make_grpo_step(graphdef, tx, lambda s: 0.5, GRPOConfig(kl="k3", beta=0.1, shared_prefix=shared), **kw)
        return make_opd_step(graphdef, tx, lambda s: 0.5, OPDConfig(shared_prefix=shared), **kw)

    ref_state, ref = make(False)(sgd_state(), frozen, batch)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    state = sgd_state()
    s_shard, f_shard = state_shardings(state, mesh), state_shardings(frozen, mesh)
    step = make(True, state_sharding=s_shard, frozen_sharding=f_shard, batch_sharding=NamedSharding(mesh, PartitionSpec()))
    with sharded_call(mesh):
        new, m = step(jax.device_put(state, s_shard), jax.device_put(frozen, f_shard), batch)
    for k in ("loss/total", "train/grad_norm"):
        np.testing.assert_allclose(m[k], ref[k], rtol=TOL, atol=1e-6)
    assert float(ref["train/grad_norm"]) > 1e-3
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=0)
