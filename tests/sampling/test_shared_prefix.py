"""Shared-prefix decode (one prompt K/V per prompt + per-sample suffix, log-sum-exp merge) against the
copied-cache decode (the prompt K/V repeated G times in a [B*G, P + N] `LayerKV` cache), for G > 1 and
left-padded prompts of different lengths; and `score` on top of the same shared-prefix cache.
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import qwen_hf_helpers as H  # noqa: E402

from vtg_jax.models.qwen_vl import from_pretrained  # noqa: E402
from vtg_jax.models.qwen_vl.attention import attention, shared_prefix_attention  # noqa: E402
from vtg_jax.models.qwen_vl.text import LayerKV, SharedPrefixKV  # noqa: E402
from vtg_jax.sampling import engine, generate, score  # noqa: E402
from vtg_jax.sampling.api import _prompt_arrays  # noqa: E402
from vtg_jax.sampling.host import prepare_prompts  # noqa: E402

G, NBUF, SEED = 3, 32, 5


def _inputs() -> dict[str, np.ndarray]:
    b = H.Builder("qwen3_vl", seed=3)
    # Different lengths -> different amounts of left padding in the bucket.
    return H.batch([H.concat(b.text(5), b.video(4, 4, 4), b.text(2)), b.text(9), b.text(3)])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q3sp"))
    H.hf_model("qwen3_vl", seed=4).save_pretrained(path)
    m = from_pretrained(path)
    m.lm_head.kernel.set_value(m.lm_head.kernel.get_value() * 10.0)
    return m


def _copied(cache: list[SharedPrefixKV], g: int) -> list[LayerKV]:
    """The reference layout: the prompt K/V repeated per sample row, then the suffix slots."""
    def rows(prefix: jax.Array, suffix: jax.Array) -> jax.Array:  # kv-head-major -> LayerKV's token-major
        return jnp.concatenate([jnp.repeat(prefix, g, axis=0), suffix], axis=2).transpose(0, 2, 1, 3)

    return [LayerKV(rows(c.prefix_k, c.k), rows(c.prefix_v, c.v)) for c in cache]


def _prefill(model, inputs, g):
    prompts = prepare_prompts(model.cfg, inputs)
    graphdef, state = nnx.split(model)
    pre = engine.prefill(graphdef, state, _prompt_arrays(prompts), num_samples=g,
                         cache_len=prompts.length + NBUF)
    return prompts, graphdef, state, pre


def _decode(graphdef, state, pre, cache, prompts, g, greedy):
    b = prompts.batch
    return engine.decode(
        graphdef, state, cache, pre["logits"], pre["mask"], pre["last_pos"],
        np.repeat(np.arange(b), g).astype(np.int32), np.tile(np.arange(g), b).astype(np.int32),
        np.asarray(SEED, np.uint32), np.asarray(NBUF, np.int32), np.asarray([-1], np.int32),
        np.asarray(1.0, np.float32), np.asarray(1.0, np.float32), prompt_len=prompts.length, num_buf=NBUF,
        greedy=greedy, top_k=0, use_top_p=False, pad_id=0)


@pytest.mark.parametrize("greedy", [True, False])
def test_shared_prefix_decode_equals_copied_cache_decode(model, greedy):
    prompts, graphdef, state, pre = _prefill(model, _inputs(), G)
    assert len({int(m.sum()) for m in prompts.attention_mask}) == 3  # three different left paddings
    c0 = pre["cache"][0]
    assert isinstance(c0, SharedPrefixKV)
    kv_heads = model.cfg.text.num_key_value_heads
    assert c0.prefix_k.shape[:3] == (prompts.batch, kv_heads, prompts.length)  # ONE prompt copy per prompt
    assert c0.k.shape[:3] == (prompts.batch * G, kv_heads, NBUF)
    ref_cache = _copied(pre["cache"], G)  # built before the shared cache is donated
    ref = _decode(graphdef, state, pre, ref_cache, prompts, G, greedy)
    got = _decode(graphdef, state, pre, pre["cache"], prompts, G, greedy)
    np.testing.assert_array_equal(np.asarray(got["tokens"]), np.asarray(ref["tokens"]))
    np.testing.assert_allclose(np.asarray(got["logprobs"]), np.asarray(ref["logprobs"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["sampling_logprobs"]), np.asarray(ref["sampling_logprobs"]),
                               atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got["lengths"]), np.asarray(ref["lengths"]))
    if not greedy:
        assert len({tuple(t) for t in np.asarray(got["tokens"])}) > 1


def test_score_on_shared_prefix(model):
    """`score` equals the copied-cache teacher-forced forward and the log-probs `generate` sampled with."""
    inputs = _inputs()
    n = 12
    out = generate(model, inputs, num_samples=G, max_new_tokens=n, temperature=1.0, seed=SEED)
    cmask = np.ones_like(out["tokens"])
    cmask[1, 0, 7:] = 0  # a shorter completion: masked out
    lp = score(model, inputs, out["tokens"], cmask)
    np.testing.assert_allclose(lp, np.where(cmask, out["logprobs"], 0.0), atol=1e-5)

    prompts, graphdef, state, pre = _prefill(model, inputs, G)
    toks = np.zeros((prompts.batch * G, NBUF), np.int32)
    toks[:, :n] = out["tokens"].reshape(-1, n)
    args = (pre["logits"], pre["mask"], pre["last_pos"], toks, np.asarray(1.0, np.float32))
    kw = dict(prompt_len=prompts.length, chunk_size=None)
    ref = engine.completion_logprobs(graphdef, state, _copied(pre["cache"], G), *args, **kw)
    got = engine.completion_logprobs(graphdef, state, pre["cache"], *args, **kw)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got)[:, :n].reshape(out["tokens"].shape), out["logprobs"], atol=1e-5)


@pytest.mark.parametrize("t", [1, 5, 40])
@pytest.mark.parametrize("prefix_impl", ["auto", "splash"])
def test_shared_prefix_attention_matches_concatenated(t, prefix_impl):
    """The kernel itself: equal to `attention` over [repeated prefix ++ suffix] with the same masks, with
    the prefix part in XLA ("auto" on this CPU) or in splash (Pallas' interpreter: log-sum-exp residuals
    merged with the suffix; 40 scoring tokens stack 360 rows, three query blocks; 150 prefix keys pad to a
    whole key block)."""
    rng = np.random.default_rng(0)
    b, g, p, s, nk, gq, hd = 2, 3, 150, 7, 2, 3, 8
    q = jnp.asarray(rng.normal(size=(b * g, t, nk * gq, hd)), jnp.float32)
    pk, pv = (jnp.asarray(rng.normal(size=(b, p, nk, hd)), jnp.float32) for _ in range(2))
    sk, sv = (jnp.asarray(rng.normal(size=(b * g, s, nk, hd)), jnp.float32) for _ in range(2))
    pmask = np.ones((b, p), bool)
    pmask[0, :4] = False  # left padding
    smask = np.ones((b * g, s), bool)
    off = 1
    heads_major = [x.transpose(0, 2, 1, 3) for x in (pk, pv, sk, sv)]  # the SharedPrefixKV layout
    got = jax.jit(lambda *a: shared_prefix_attention(*a, scale=hd**-0.5, prefix_mask=pmask, key_mask=smask,
                                                     q_offset=off, impl=prefix_impl))(q, *heads_major)
    kk = jnp.concatenate([jnp.repeat(pk, g, axis=0), sk], axis=1)
    vv = jnp.concatenate([jnp.repeat(pv, g, axis=0), sv], axis=1)
    full_mask = np.concatenate([np.repeat(pmask, g, axis=0), smask], axis=1)
    for impl in ("xla", "chunked"):
        ref = attention(q, kk, vv, scale=hd**-0.5, key_mask=full_mask, causal=True, q_offset=p + off, impl=impl)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)
