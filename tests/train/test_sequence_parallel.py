"""Context (sequence) parallelism: the mesh's `sequence` axis splits every activation's `length` axis over
its chips (parallel/rules.py), the splash kernel gives each chip its own query chunk against all keys
(models/qwen_vl/fused_attention.py), and a GRPO update on such a mesh computes what one device does: the
same metrics and new parameters, with the prompt repeated per row or shared (`grpo.shared_prefix`), with
XLA's attention and with splash (Pallas' interpreter on CPU)."""
import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from rl_helpers import CFG, fresh_model, init, make_processor, make_prompts, rollout

from vtg_jax.parallel.rules import make_mesh, sharded_call
from vtg_jax.rl import group_advantages
from vtg_jax.rollout.packing import build_rl_batch
from vtg_jax.train import TrainState, state_shardings
from vtg_jax.train.grpo import GRPOConfig, make_grpo_step

G = 3
TOL = 1e-5


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    return make_processor(tmp_path_factory.mktemp("tok"))


def _setup(proc, impl: str):
    model = fresh_model(0)
    model.language_model.remat = "full"
    model.set_attention_impl(impl)
    _, _, state, graphdef, frozen = init(model)
    prompts = make_prompts(proc, 3)  # 4 prompts of 2 or 4 frames: different lengths, left padding
    out = rollout(graphdef, state, frozen, prompts, G, 3)
    adv = np.asarray(group_advantages(np.random.default_rng(3).random((4, G)).astype(np.float32)))
    batch = build_rl_batch(CFG, prompts, out["tokens"], out["lengths"], out["logprobs"] + 0.05, adv,
                           ref_logp=out["logprobs"], num_micro=2)
    return graphdef, state, frozen, batch


@pytest.mark.parametrize("impl,shared", [("auto", False), ("auto", True), ("splash", False)])
def test_grpo_step_on_a_sequence_mesh_equals_one_device(proc, impl, shared):
    """fsdp 2 x sequence 2 x tensor 2 (8 fake devices), two micro-batches, SGD (new parameters linear in
    the gradient): the same loss, gradient norm and parameters as the one-device step with XLA:CPU's
    attention."""
    tx = optax.sgd(0.5)
    cfg = GRPOConfig(kl="k3", beta=0.1, shared_prefix=shared)

    def sgd_state(state):
        s = jax.tree.map(jax.numpy.array, state)
        return TrainState(step=s.step, params=s.params, opt_state=tx.init(s.params), skipped=s.skipped)

    graphdef, state0, frozen, batch = _setup(proc, "auto")
    ref_state, ref = make_grpo_step(graphdef, tx, lambda s: 0.5, GRPOConfig(kl="k3", beta=0.1))(
        sgd_state(state0), frozen, batch)

    graphdef, _, frozen, _ = _setup(proc, impl)  # same weights (seed 0), the kernel under test
    mesh = make_mesh(fsdp=2, sequence=2, tensor=2)
    state = sgd_state(state0)
    s_shard, f_shard = state_shardings(state, mesh), state_shardings(frozen, mesh)
    step = make_grpo_step(graphdef, tx, lambda s: 0.5, cfg, state_sharding=s_shard, frozen_sharding=f_shard,
                          batch_sharding=NamedSharding(mesh, PartitionSpec()))
    with sharded_call(mesh):
        new, m = step(jax.device_put(state, s_shard), jax.device_put(frozen, f_shard), batch)
    for k in ("loss/total", "train/grad_norm", "rl/kl_ref"):
        np.testing.assert_allclose(m[k], ref[k], rtol=TOL, atol=1e-6, err_msg=k)
    assert float(ref["train/grad_norm"]) > 1e-3
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=0)


def test_activations_are_split_along_the_sequence(proc):
    """Under a sequence mesh a forward's logits are split along their length axis (each chip holds 1/4
    of the tokens); parameters are not split over the sequence axis."""
    from flax import nnx

    from vtg_jax.rollout.packing import sampler_inputs

    model = fresh_model(0)
    prompts = sampler_inputs(make_prompts(proc, 3))
    mesh = make_mesh(fsdp=2, sequence=4)
    with sharded_call(mesh):
        state = nnx.state(model)
        nnx.update(model, jax.device_put(state, state_shardings(state, mesh)))
        logits = model(**{k: prompts[k] for k in ("input_ids", "attention_mask", "pixel_values_videos",
                                                  "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
                                                  if k in prompts})
    assert logits.sharding.spec[1] == "sequence"
    shard = logits.addressable_shards[0].data
    assert shard.shape[1] == logits.shape[1] // 4
    kernel = model.language_model.layers[0].mlp.gate_proj.kernel.value
    assert "sequence" not in jax.tree.leaves(tuple(kernel.sharding.spec))
