"""SFT step: learning, exact gradient accumulation, the non-finite guard, frozen vision, one compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer

from vtg_jax.data.loader import collate, qwen_vl_buckets
from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer
from vtg_jax.models.qwen_vl import QwenVL, get_preset
from vtg_jax.train import (OptimConfig, accumulate_grads, answer_nll_sum, init_train_state, make_optimizer,
                           make_sft_step, merge_model, prepare_batch)

CFG = get_preset("qwen2.5-vl-tiny")
BUCKETS = qwen_vl_buckets(tokens=(128,), patches=(64,), groups=(4,))


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    path = build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")), CFG.family)
    return QwenVLProcessor(CFG, Tokenizer.from_file(path + "/tokenizer.json"))


def make_batch(proc, seed, frames=(4, 6, 8, 4), size=56):
    """Four videos of different lengths (one patch bucket), 56x56 frames (4x4 patches per group)."""
    rng = np.random.default_rng(seed)
    exs = []
    for i, t in enumerate(frames):
        video = rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8)
        exs.append(proc(video, np.arange(t) / 2.0, f"a red circle appears {i}", answer=f"{i}.5 to {i + 2}.0"))
    return collate(exs, BUCKETS)


@pytest.fixture(scope="module")
def setup():
    """One compiled step shared by the tests below (same shapes => no recompilation)."""
    tx, schedule = make_optimizer(OptimConfig(lr=3e-3, warmup_steps=2, total_steps=40, clip_norm=1.0))
    state, graphdef, frozen = init_train_state(QwenVL(CFG, rngs=nnx.Rngs(0)), tx, freeze_vision=True)
    host = host_copy(state)
    fresh = lambda: jax.tree.map(jnp.asarray, host)  # noqa: E731 — the step donates its input state
    return tx, schedule, graphdef, frozen, make_sft_step(graphdef, tx, schedule), fresh


def host_copy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def test_loss_falls(proc, setup):
    _, _, _, frozen, step, fresh = setup
    state = fresh()
    batch = prepare_batch(CFG, make_batch(proc, 0), num_micro=1)
    losses = []
    for _ in range(20):
        state, m = step(state, frozen, batch)
        losses.append(float(m["loss/total"]))
        assert m["train/tokens"] == 4 * 9  # "i.5 to j.0": 8 tokens + <|im_end|>
    assert losses[-1] < 0.5 * losses[0], losses
    assert int(state.step) == 20 and int(state.skipped) == 0


def test_grad_accumulation_equals_full_batch(proc, setup):
    _, _, graphdef, frozen, _, fresh = setup
    state = fresh()
    batch = make_batch(proc, 1)

    @jax.jit
    def grads(params, mbs):
        g, total, count, _ = accumulate_grads(
            lambda p, mb: answer_nll_sum(merge_model(graphdef, p, frozen), mb), params, mbs)
        return jax.tree.map(lambda x: x / count, g), total / count

    g1, l1 = grads(state.params, prepare_batch(CFG, batch, num_micro=1))
    g2, l2 = grads(state.params, prepare_batch(CFG, batch, num_micro=2))
    np.testing.assert_allclose(l1, l2, atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g1)) > 1e-3  # not trivially zero


def test_nonfinite_batch_is_skipped_and_counted(proc, setup):
    _, _, _, frozen, step, fresh = setup
    state = fresh()
    state, _ = step(state, frozen, prepare_batch(CFG, make_batch(proc, 2), num_micro=1))
    bad = make_batch(proc, 3)
    bad["pixel_values_videos"][1, :5] = np.nan
    before = host_copy(state)
    state, m = step(state, frozen, prepare_batch(CFG, bad, num_micro=1))
    assert not np.isfinite(float(m["loss/total"]))
    assert int(m["train/skipped_nonfinite"]) == 1 and int(m["train/skipped_nonfinite_total"]) == 1
    after = host_copy(state)
    assert int(after.step) == int(before.step)
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state)), jax.tree.leaves((after.params, after.opt_state))):
        assert a.tobytes() == b.tobytes()  # bitwise unchanged
    state, m = step(state, frozen, prepare_batch(CFG, make_batch(proc, 4), num_micro=1))
    assert int(m["train/skipped_nonfinite"]) == 0 and int(m["train/skipped_nonfinite_total"]) == 1
    assert int(state.step) == int(before.step) + 1


def test_frozen_vision_gets_no_gradient_or_opt_state(proc, setup):
    _, _, _, frozen, step, fresh = setup
    state = fresh()
    paths = lambda tree: ["/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]  # noqa: E731
    assert not any("visual" in p for p in paths(state.params) + paths(state.opt_state))
    assert paths(frozen) and all("visual" in p for p in paths(frozen))
    frozen_before = host_copy(frozen)
    state, _ = step(state, frozen, prepare_batch(CFG, make_batch(proc, 5), num_micro=1))
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)):
        assert a.tobytes() == np.asarray(b).tobytes()


def test_step_compiles_once_across_batches(proc):
    tx, schedule = make_optimizer(OptimConfig(lr=1e-3, warmup_steps=1, total_steps=10))
    state, graphdef, frozen = init_train_state(QwenVL(CFG, rngs=nnx.Rngs(1)), tx, freeze_vision=True)
    step = make_sft_step(graphdef, tx, schedule)
    for seed, frames in enumerate([(4, 6, 8, 4), (8, 8, 2, 6), (2, 2, 2, 2)]):  # different video lengths
        state, _ = step(state, frozen, prepare_batch(CFG, make_batch(proc, seed, frames), num_micro=2))
    assert step.traces == 1


def test_mixed_frame_geometry_raises(proc):
    rng = np.random.default_rng(0)
    exs = [proc(rng.integers(0, 255, (4, h, 56, 3), dtype=np.uint8), np.arange(4) / 2.0, "a red circle appears",
                answer="1.0 to 2.0") for h in (56, 112)]
    with pytest.raises(ValueError, match="one frame geometry"):
        prepare_batch(CFG, collate(exs, qwen_vl_buckets((128,), (64,), (4,))))


def test_sharded_step_matches_unsharded(proc, setup):
    """Same step with in/out shardings on a data x fsdp x tensor = 2x2x2 mesh of fake CPU devices."""
    from jax.sharding import NamedSharding, PartitionSpec

    from vtg_jax.parallel.rules import make_mesh, sharded_call
    from vtg_jax.train import state_shardings

    tx, schedule, graphdef, frozen, step, fresh = setup
    batch = prepare_batch(CFG, make_batch(proc, 6), num_micro=1)
    _, ref = step(fresh(), frozen, batch)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    state = fresh()
    s_shard, f_shard = state_shardings(state, mesh), state_shardings(frozen, mesh)
    sharded = make_sft_step(graphdef, tx, schedule, state_sharding=s_shard, frozen_sharding=f_shard,
                            batch_sharding=NamedSharding(mesh, PartitionSpec()))
    with sharded_call(mesh):
        new, m = sharded(jax.device_put(state, s_shard), jax.device_put(frozen, f_shard), batch)
    for k in ("loss/total", "train/grad_norm"):
        np.testing.assert_allclose(m[k], ref[k], rtol=1e-5)
    kernel = new.params["language_model"]["layers"][0]["mlp"]["gate_proj"]["kernel"]
    assert len(kernel.value.sharding.device_set) == 8


def test_vision_shards_equal_one_packing(proc, tmp_path_factory):
    """Videos packed per data shard ([D, rows, C], `vision_shards`) give the same loss and gradients
    (vision tower included) as one packing of the whole micro-batch, for both families' towers."""
    for cfg in (CFG, get_preset("qwen3-vl-tiny")):
        if cfg is CFG:
            p = proc
        else:
            path = build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok3")), cfg.family)
            p = QwenVLProcessor(cfg, Tokenizer.from_file(path + "/tokenizer.json"))
        model = QwenVL(cfg, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        batch = make_batch(p, 7, size=56 if cfg is CFG else 64)  # 4x4 patches of 14 / 16 pixels

        @jax.jit
        def grads(params, mbs):
            g, total, count, _ = accumulate_grads(lambda q, mb: answer_nll_sum(nnx.merge(graphdef, q), mb), params, mbs)
            return jax.tree.map(lambda x: x / count, g), total / count

        g1, l1 = grads(params, prepare_batch(cfg, batch, num_micro=1))
        sharded = prepare_batch(cfg, batch, num_micro=2, vision_shards=2)
        assert sharded["pixel_values_videos"].shape[:2] == (2, 2)
        g2, l2 = grads(params, sharded)
        np.testing.assert_allclose(l1, l2, atol=1e-5, rtol=1e-5)
        visual = 0
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=str(path))
            visual += "visual" in str(path) and float(jnp.abs(a).max()) > 0
        assert visual > 0  # the tower's own gradients are compared, not only the text stack's


def test_vision_shards_split_the_tower_over_the_mesh(proc, setup):
    """Under a (data 2, fsdp 2, tensor 2) mesh a step with 4 vision shards equals the unsharded step,
    and the compiled step holds a quarter of the patch-embedding activations per device."""
    from jax.sharding import NamedSharding, PartitionSpec

    from vtg_jax.parallel.rules import make_mesh, sharded_call
    from vtg_jax.train import state_shardings

    tx, schedule, graphdef, frozen, step, fresh = setup
    loader = make_batch(proc, 6)
    _, ref = step(fresh(), frozen, prepare_batch(CFG, loader, num_micro=1))
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    state = fresh()
    s_shard, f_shard = state_shardings(state, mesh), state_shardings(frozen, mesh)
    sharded = make_sft_step(graphdef, tx, schedule, state_sharding=s_shard, frozen_sharding=f_shard,
                            batch_sharding=NamedSharding(mesh, PartitionSpec()))
    batch = prepare_batch(CFG, loader, num_micro=1, vision_shards=4)
    with sharded_call(mesh):
        new, m = sharded(jax.device_put(state, s_shard), jax.device_put(frozen, f_shard), batch)
    for k in ("loss/total", "train/grad_norm"):
        np.testing.assert_allclose(m[k], ref[k], rtol=1e-5)


def test_vision_shards_cut_per_device_tower_memory(proc):
    """Compiled for a (data 2, fsdp 2, tensor 2) mesh, the tower's forward + backward over 4 vision
    shards keeps well under half the per-device temporaries of one replicated packing of the same 4
    videos (each device holds its shard's rows: a quarter, plus the gathered weights)."""
    from vtg_jax.parallel.rules import make_mesh, shard_model, sharded_call

    loader = make_batch(proc, 6)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = QwenVL(CFG, rngs=nnx.Rngs(0))
    shard_model(model, mesh)

    def tower_grads(m, pixels, vision_inputs):
        return jnp.sum(m.visual(pixels, vision_inputs)[0])

    temp = {}
    for shards in (1, 4):
        batch = prepare_batch(CFG, loader, num_micro=1, vision_shards=shards)
        pixels, vision_inputs = batch["pixel_values_videos"][0], {k: v[0] for k, v in batch["vision_inputs"].items()}
        with sharded_call(mesh):
            compiled = nnx.jit(nnx.grad(tower_grads)).lower(model, pixels, vision_inputs).compile()
        temp[shards] = compiled.memory_analysis().temp_size_in_bytes
    assert temp[4] < 0.5 * temp[1], temp
