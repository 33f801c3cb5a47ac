"""Every attention implementation (attention.py) and the custom-VJP Linear give the same values and
gradients as the reference paths: padding masks, GQA, causal chunking (incl. a ragged last chunk),
prefill into a longer cache, KV-cache decode at a traced offset, vision-style segment masks, and the
whole model with either implementation. The splash kernel runs in Pallas' interpreter here (the same
kernel code the TPU compiles); cuDNN cannot run on a CPU, so its wrapper's reordering and lengths are
checked through `jax.nn.dot_product_attention`'s XLA implementation with the same arguments."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vtg_jax.models.qwen_vl import attention as attn_mod
from vtg_jax.models.qwen_vl.attention import attention, check_impl, resolve_impl
from vtg_jax.models.qwen_vl.linear import linear_matmul

TOL = 1e-5


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(attn_mod, "CHUNK", 8)  # T = 37 -> chunks 8, 8, 8, 8, 5


def _qkv(b, t, s, n, k, hd, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ks[0], (b, t, n, hd)), jax.random.normal(ks[1], (b, s, k, hd)),
            jax.random.normal(ks[2], (b, s, k, hd)))


def _check(fn, q, k, v, rows, impls=("chunked",)):
    """Values and gradients of fn(impl) for each of `impls` agree with fn("xla") on `rows` (bool [B, T]:
    queries that see a key)."""
    w = jax.random.normal(jax.random.key(9), q.shape)
    res = {}
    for impl in ("xla",) + tuple(impls):
        def loss(q, k, v, impl=impl):
            out = fn(q, k, v, impl)
            return jnp.sum(jnp.where(rows[:, :, None, None], out * w, 0.0))
        out = jax.jit(lambda q, k, v, impl=impl: fn(q, k, v, impl))(q, k, v)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
        res[impl] = (np.asarray(out)[np.asarray(rows)], grads)
    for impl in impls:
        np.testing.assert_allclose(res[impl][0], res["xla"][0], atol=TOL, rtol=TOL, err_msg=impl)
        for a, b in zip(res[impl][1], res["xla"][1]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL, err_msg=impl)


def test_causal_gqa_padding_chunked(small_chunks):
    b, t, n, k, hd = 2, 37, 4, 2, 16
    q, kk, v = _qkv(b, t, t, n, k, hd)
    key_mask = np.ones((b, t), bool)
    key_mask[1, :5] = False  # left padding: queries 0..4 of row 1 see nothing (unspecified rows)
    rows = np.ones((b, t), bool)
    rows[1, :5] = False

    def fn(q, k, v, impl):
        return attention(q, k, v, scale=hd**-0.5, key_mask=key_mask, causal=True, impl=impl)

    _check(fn, q, kk, v, rows)


def test_causal_no_mask_and_no_gqa(small_chunks):
    q, k, v = _qkv(1, 20, 20, 2, 2, 8, seed=1)

    def fn(q, k, v, impl):
        return attention(q, k, v, scale=0.3, causal=True, impl=impl)  # non power-of-two scale

    _check(fn, q, k, v, np.ones((1, 20), bool))


def test_prefill_into_longer_cache(small_chunks):
    """Static offset 0, T queries over S > T slots (engine prefill): chunks stop at their last key."""
    b, t, s = 2, 19, 32
    q, k, v = _qkv(b, t, s, 4, 2, 16, seed=2)
    key_mask = np.ones((b, s), bool)
    key_mask[0, :3] = False
    rows = np.ones((b, t), bool)
    rows[0, :3] = False

    def fn(q, k, v, impl):
        return attention(q, k, v, scale=0.25, key_mask=key_mask, causal=True, q_offset=0, impl=impl)

    _check(fn, q, k, v, rows)


def test_decode_at_traced_offset():
    b, t, s = 2, 3, 24
    q, k, v = _qkv(b, t, s, 4, 2, 16, seed=3)
    key_mask = np.ones((b, s), bool)
    key_mask[1, :4] = False
    for offset in (7, 21):
        def fn(q, k, v, impl, offset=offset):
            off = jnp.asarray(offset)  # traced under jit, like the sampler's cache_index
            return attention(q, k, v, scale=0.25, key_mask=key_mask, causal=True, q_offset=off, impl=impl)

        _check(fn, q, k, v, np.ones((b, t), bool))


def test_vision_segments():
    """Non-causal attention in padded segments [S, L] with a key-validity mask (VisionAttention)."""
    segs, width = 5, 12
    q, k, v = _qkv(segs, width, width, 2, 2, 16, seed=4)
    lengths = np.array([12, 7, 12, 3, 9])
    valid = np.arange(width)[None, :] < lengths[:, None]

    def fn(q, k, v, impl):
        return attention(q, k, v, scale=0.25, key_mask=valid, impl=impl)

    _check(fn, q, k, v, valid)


def test_impl_choice():
    check_impl("auto")
    with pytest.raises(ValueError):
        check_impl("flash")
    assert resolve_impl("xla") == "xla" and resolve_impl("chunked") == "chunked"
    assert resolve_impl("auto") == ("chunked" if jax.default_backend() == "cpu" else resolve_impl("auto", platform=jax.default_backend()))


@pytest.mark.parametrize("din,dout", [(6, 20), (20, 6)])
def test_linear_matmul_grads(din, dout):
    x = jax.random.normal(jax.random.key(0), (2, 5, din))
    w = jax.random.normal(jax.random.key(1), (din, dout))
    g = jax.random.normal(jax.random.key(2), (2, 5, dout))
    ref = jax.grad(lambda x, w: jnp.sum(jnp.dot(x, w) * g), argnums=(0, 1))(x, w)
    got = jax.grad(lambda x, w: jnp.sum(linear_matmul(x, w) * g), argnums=(0, 1))(x, w)
    np.testing.assert_array_equal(np.asarray(linear_matmul(x, w)), np.asarray(jnp.dot(x, w)))
    for a, b in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_model_impls_agree(family, small_chunks):
    """Text decoder with padding: logits and parameter gradients of "chunked" and "splash" (Pallas'
    interpreter here) equal "xla"'s."""
    from vtg_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
    from vtg_jax.models.qwen_vl.model import QwenVL

    qwen3 = family == "qwen3_vl"
    text = TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=1e4,
                      mrope_section=(2, 1, 1), mrope_interleaved=qwen3, attention_bias=not qwen3, qk_norm=qwen3)
    vision = VisionConfig(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32,
                          patch_size=14, num_position_embeddings=16 if qwen3 else 0,
                          deepstack_visual_indexes=(0,) if qwen3 else ())
    cfg = QwenVLConfig(family, text, vision, image_token_id=60, video_token_id=61, vision_start_token_id=62,
                       vision_end_token_id=63)
    model = QwenVL(cfg, attention_impl="xla", rngs=nnx.Rngs(0))
    ids = np.random.default_rng(0).integers(0, 60, size=(2, 21))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    pos = np.broadcast_to(np.arange(21), (3, 2, 21))

    def loss(m):
        logits = m(ids, attention_mask=mask, position_ids=pos)
        return jnp.sum(jnp.where(mask[..., None] > 0, jnp.sin(logits), 0.0)), logits

    results = {}
    for impl in ("xla", "chunked", "splash"):
        model.set_attention_impl(impl)
        (_, logits), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
        results[impl] = (np.asarray(logits)[mask > 0], grads)
    for impl in ("chunked", "splash"):
        np.testing.assert_allclose(results[impl][0], results["xla"][0], atol=TOL, rtol=TOL, err_msg=impl)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL),
                     results[impl][1], results["xla"][1])
