"""Sampler behaviour on a tiny random Qwen3-VL: shared prefill vs separate
prefills, sharding over 8 fake CPU devices, EOS / lengths / finish reasons / stop strings, length
buckets, and the logits truncation rule.

Tests reuse one prompt batch and the same sizes, so they share a few compiled programs.
"""
from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import qwen_hf_helpers as H  # noqa: E402

from vtg_jax.models.qwen_vl import from_pretrained  # noqa: E402
from vtg_jax.parallel.rules import make_mesh, shard_model  # noqa: E402
from vtg_jax.sampling import bucket_length, engine, generate, truncate_logits  # noqa: E402
from vtg_jax.sampling.api import _mesh_context, _prompt_arrays  # noqa: E402
from vtg_jax.sampling.host import prepare_prompts  # noqa: E402

G, N, SEED = 4, 10, 17
KW = dict(max_new_tokens=N, temperature=1.0, seed=SEED)


def _samples(prefix: int) -> list[H.Sample]:
    b = H.Builder("qwen3_vl", seed=2)
    return [H.concat(b.text(prefix), b.video(4, 4, 4), b.text(3)), b.text(prefix + 4)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # A random tiny HF model through save_pretrained / from_pretrained: faster than an eager nnx init.
    path = str(tmp_path_factory.mktemp("q3"))
    H.hf_model("qwen3_vl", seed=1).save_pretrained(path)
    m = from_pretrained(path)
    m.lm_head.kernel.set_value(m.lm_head.kernel.get_value() * 20.0)  # peaked: repeats are likely
    return m


@pytest.fixture(scope="module")
def shared(model):
    return generate(model, H.batch(_samples(4)), num_samples=G, **KW)


def test_shared_prefill_equals_separate_prefills(model, shared):
    """Sample g drawn from the prefill shared by G samples == sample drawn alone (sample_offset=g)."""
    inputs = H.batch(_samples(4))
    for g in range(G):
        alone = generate(model, inputs, num_samples=1, sample_offset=g, **KW)
        np.testing.assert_array_equal(alone["tokens"][:, 0], shared["tokens"][:, g])
        np.testing.assert_allclose(alone["logprobs"][:, 0], shared["logprobs"][:, g], atol=1e-5)
    assert len({tuple(t) for t in shared["tokens"].reshape(-1, N)}) > 1  # samples do differ


def test_sharded_over_data_axis_matches_single_device(model, shared):
    mesh = make_mesh(data=8)
    sharded = nnx.clone(model)
    shard_model(sharded, mesh)
    out = generate(sharded, H.batch(_samples(4)), num_samples=G, mesh=mesh, **KW)
    np.testing.assert_array_equal(out["tokens"], shared["tokens"])
    np.testing.assert_allclose(out["logprobs"], shared["logprobs"], atol=1e-5)
    np.testing.assert_array_equal(out["lengths"], shared["lengths"])
    # The broadcast cache really is split by rows over the data axis.
    prompts = prepare_prompts(model.cfg, H.batch(_samples(4)))
    graphdef, state = nnx.split(sharded)
    with _mesh_context(mesh, None) as rules_key:
        pre = engine.prefill(graphdef, state, _prompt_arrays(prompts), num_samples=G,
                             cache_len=prompts.length + 32, rules_key=rules_key)
    k = pre["cache"][0].k
    assert k.shape[0] == 2 * G and "data" in str(k.sharding.spec[0])
    assert len(k.addressable_shards) == 8 and k.addressable_shards[0].data.shape[0] == 1


def _reference_cut(tokens: np.ndarray, eos: int) -> tuple[int, str]:
    hits = np.flatnonzero(tokens == eos)
    return (int(hits[0]) + 1, "eos") if hits.size else (len(tokens), "length")


def test_eos_lengths_finish_reasons_and_stop_strings(model, shared):
    inputs = H.batch(_samples(4))
    ref = generate(model, inputs, num_samples=1, **KW)  # same keys as the EOS run below
    toks = ref["tokens"][:, 0]
    eos = int(toks[0, 3])
    out = generate(model, inputs, num_samples=1, eos_token_ids=[eos], **KW)
    for b in range(2):
        n, reason = _reference_cut(toks[b], eos)
        assert out["lengths"][b, 0] == n and out["finish_reason"][b, 0] == reason
        np.testing.assert_array_equal(out["tokens"][b, 0, :n], toks[b, :n])
        assert (out["tokens"][b, 0, n:] == 0).all() and (out["logprobs"][b, 0, n:] == 0).all()
        np.testing.assert_allclose(out["logprobs"][b, 0, :n], ref["logprobs"][b, 0, :n], atol=1e-6)
    assert out["finish_reason"][0, 0] == "eos" and out["lengths"][0, 0] <= 4

    text = lambda ids: "".join(f"<{i}>" for i in ids)  # noqa: E731
    stop = text(toks[1, 2:4])  # a two-token stop string taken from row 1
    cut = generate(model, inputs, num_samples=1, stop_strings=[stop], decode_fn=text, **KW)
    n1 = next(i + 1 for i in range(1, N) if stop in text(toks[1, : i + 1]))
    assert cut["finish_reason"][1, 0] == "stop" and cut["lengths"][1, 0] == n1
    np.testing.assert_array_equal(cut["tokens"][1, 0, :n1], toks[1, :n1])
    assert (cut["tokens"][1, 0, n1:] == 0).all() and (cut["logprobs"][1, 0, n1:] == 0).all()
    with pytest.raises(ValueError, match="decode_fn"):
        generate(model, inputs, stop_strings=["x"], **KW)


def test_length_buckets_reuse_compiled_programs(model, shared):
    """Another prompt length in the same bucket compiles nothing new; max_new_tokens is traced."""
    assert [bucket_length(n) for n in (1, 32, 33, 100, 1000)] == [32, 32, 64, 128, 1024]
    sizes = engine.prefill._cache_size(), engine.decode._cache_size()
    out = generate(model, H.batch(_samples(7)), num_samples=G, **{**KW, "max_new_tokens": N - 3})
    assert out["tokens"].shape == (2, G, N - 3)
    assert (engine.prefill._cache_size(), engine.decode._cache_size()) == sizes


def test_rejects_right_padding(model):
    inputs = H.batch([H.Builder("qwen3_vl").text(4), H.Builder("qwen3_vl").text(6)])
    inputs = {k: v[:, ::-1].copy() for k, v in inputs.items()}
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(model, inputs, max_new_tokens=2)


def test_truncate_logits_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 50)).astype(np.float32) * 3
    z[0, :4] = 2.5  # ties at the top-k threshold are kept
    for k, p in [(4, None), (0, 0.5), (7, 0.3)]:
        got = np.isfinite(np.asarray(truncate_logits(jnp.asarray(z), k, p)))
        for r in range(len(z)):
            keep = z[r] >= np.sort(z[r])[-k] if k else np.ones(50, bool)
            if p is not None:
                zz = np.where(keep, z[r], -np.inf)
                order = np.argsort(-zz, kind="stable")
                prob = np.exp(zz[order] - zz[order].max())
                prob /= prob.sum()
                nuc = np.zeros(50, bool)
                nuc[order[(np.cumsum(prob) - prob) < p]] = True
                nuc[order[0]] = True
                keep = keep & nuc
            np.testing.assert_array_equal(got[r], keep, err_msg=f"row {r}, top_k={k}, top_p={p}")


def test_video_rows_padded_to_frame_bucket_leave_outputs_unchanged(model, monkeypatch):
    """9 temporal groups in a batch are padded to 10 with a filler frame (one compiled program for
    batches of 9 or 10 groups); tokens and log-probs equal the unpadded run's."""
    from vtg_jax.sampling import host

    b = H.Builder("qwen3_vl", seed=5)
    inputs = H.batch([H.concat(b.text(3), b.video(10, 4, 4), b.text(2)), H.concat(b.video(8, 4, 4), b.text(4))])
    assert [host.frame_bucket(n) for n in (8, 9, 10, 11, 13)] == [8, 10, 10, 12, 14]
    prompts = prepare_prompts(model.cfg, inputs)
    assert prompts.pixel_values_videos.shape[0] == 10 * 16 == len(inputs["pixel_values_videos"]) + 16
    padded = generate(model, inputs, num_samples=2, **KW)
    monkeypatch.setattr(host, "frame_bucket", lambda n: n)
    assert prepare_prompts(model.cfg, inputs).pixel_values_videos.shape[0] == 9 * 16
    plain = generate(model, inputs, num_samples=2, **KW)
    np.testing.assert_array_equal(padded["tokens"], plain["tokens"])
    np.testing.assert_allclose(padded["logprobs"], plain["logprobs"], atol=1e-5)


def test_vision_shards_prefill_matches_one_packing(model, shared):
    """On a data=2 mesh the prompts' videos are packed per data shard (`vision_shards`, [2, rows, C]):
    same tokens and log-probs; each shard's rows are padded to one frame bucket; 4 prompts with videos
    of different lengths (and a text-only one) split at the prompts' boundaries."""
    from vtg_jax.sampling.host import shard_videos

    b = H.Builder("qwen3_vl", seed=3)
    samples = [H.concat(b.text(4), b.video(4, 4, 4), b.text(3)), b.text(8),
               H.concat(b.text(5), b.video(6, 4, 4), b.text(2)), H.concat(b.text(3), b.video(2, 4, 4), b.text(5))]
    inputs = H.batch(samples)
    ref = generate(model, inputs, num_samples=2, **KW)
    mesh = make_mesh(data=2, devices=__import__("jax").devices()[:2])
    sharded = nnx.clone(model)
    shard_model(sharded, mesh)
    out = generate(sharded, inputs, num_samples=2, mesh=mesh, **KW)
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["logprobs"], ref["logprobs"], atol=1e-5)
    prompts = prepare_prompts(model.cfg, inputs, vision_shards=2)
    assert prompts.pixel_values_videos.shape[0] == 2
    assert all(v.shape[0] == 2 for v in prompts.vision_inputs.values())
    mixed = H.batch([samples[0], H.concat(b.text(3), b.video(2, 4, 6), b.text(2))])  # two frame geometries
    assert prepare_prompts(model.cfg, mixed, vision_shards=2).pixel_values_videos.ndim == 2  # one packing
    with pytest.raises(ValueError, match="do not split"):
        shard_videos(model.cfg, np.asarray(inputs["input_ids"]), inputs["pixel_values_videos"],
                     inputs["video_grid_thw"], 3)


def test_sampling_on_a_sequence_mesh_equals_one_device(model):
    """Context parallelism in the sampler (fsdp 2 x sequence 2 x tensor 2): the prefill's activations and
    the KV cache split along the sequence; the same tokens, log-probs and teacher-forced scores as one
    device."""
    from vtg_jax.sampling import score

    b = H.Builder("qwen3_vl", seed=6)
    inputs = H.batch([H.concat(b.text(4), b.video(4, 4, 4), b.text(3)), H.concat(b.text(5), b.video(6, 4, 4), b.text(2))])
    ref = generate(model, inputs, num_samples=2, **KW)
    mesh = make_mesh(fsdp=2, sequence=2, tensor=2)
    sharded = nnx.clone(model)
    shard_model(sharded, mesh)
    out = generate(sharded, inputs, num_samples=2, mesh=mesh, **KW)
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["logprobs"], ref["logprobs"], atol=1e-5)
    mask = (np.arange(N) < ref["lengths"][..., None]).astype(np.int32)
    np.testing.assert_allclose(score(sharded, inputs, ref["tokens"], mask, mesh=mesh),
                               np.where(mask != 0, ref["logprobs"], 0.0), atol=1e-4)


def test_process_local_sampling_equals_gathered(model):
    """`process_local=True` (per-host input: the prompts are this process's rows of a global batch,
    assembled with `host_local_to_global`, results handed back without a gather) draws the same tokens and
    log-probs as the replicated path, and `score` returns the same log-probs; on one process its rows are
    the whole batch. Prompt arrays go in sharded over the batch axes (videos packed per shard, a leading
    [1, ...] shard axis even with one shard); the `stacked` packing pads every shard to `min_frames`."""
    import jax

    from vtg_jax.sampling import score
    from vtg_jax.sampling.process_local import agreed_prompts, global_prompt_arrays

    b = H.Builder("qwen3_vl", seed=4)
    samples = [H.concat(b.text(4), b.video(4, 4, 4), b.text(3)), H.concat(b.text(6), b.video(2, 4, 4), b.text(2)),
               H.concat(b.text(5), b.video(6, 4, 4), b.text(2)), H.concat(b.text(3), b.video(2, 4, 4), b.text(5))]
    inputs = H.batch(samples)
    mesh = make_mesh(data=2, fsdp=2, devices=jax.devices()[:4])
    sharded = nnx.clone(model)
    shard_model(sharded, mesh)
    ref = generate(sharded, inputs, num_samples=2, mesh=mesh, **KW)
    local = generate(sharded, inputs, num_samples=2, mesh=mesh, process_local=True, **KW)
    for k in ("tokens", "lengths", "finish_reason"):
        np.testing.assert_array_equal(local[k], ref[k])
    np.testing.assert_allclose(local["logprobs"], ref["logprobs"], atol=1e-5)
    mask = (np.arange(N) < ref["lengths"][..., None]).astype(np.int32)
    lp_ref = score(sharded, inputs, ref["tokens"], mask, mesh=mesh)
    lp_local = score(sharded, inputs, ref["tokens"], mask, mesh=mesh, process_local=True)
    np.testing.assert_allclose(lp_local, lp_ref, atol=1e-5)
    np.testing.assert_allclose(lp_local, np.where(mask != 0, ref["logprobs"], 0.0), atol=1e-4)

    prompts = agreed_prompts(model.cfg, inputs, mesh, 32)
    assert prompts.pixel_values_videos.shape[0] == 4  # 4 batch shards of the data x fsdp mesh
    arrays = global_prompt_arrays(prompts, mesh)
    assert arrays["input_ids"].sharding.spec[0] == ("data", "fsdp")
    assert arrays["position_ids"].sharding.spec[1] == ("data", "fsdp")
    assert arrays["pixel_values_videos"].addressable_shards[0].data.shape[0] == 1
    one = prepare_prompts(model.cfg, H.batch(samples[:1]), stacked=True, min_frames=16, min_length=100)
    assert one.pixel_values_videos.shape[:2] == (1, 16 * 4 * 4) and one.length == 128
    with pytest.raises(ValueError, match="one frame geometry"):
        prepare_prompts(model.cfg, H.batch([samples[0], H.concat(b.text(3), b.video(2, 4, 6), b.text(2))]),
                        stacked=True)
