"""The linear-memory kernels (`fused_attention.py`) equal XLA's attention in values and gradients:
splash (Pallas' interpreter on this CPU: the kernel code the TPU compiles) for the causal text decoder
(GQA, left padding, a length that is not a whole block) and the vision segments, on one device and
under an 8-device mesh (shard_map over batch and heads); cuDNN's wrapper (reordering real tokens first,
sequence lengths) through `jax.nn.dot_product_attention`'s XLA implementation; "auto" chooses by the
platform the program is traced for, not by this host."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtg_jax.models.qwen_vl import attention as attn_mod
from vtg_jax.models.qwen_vl.attention import attention, resolve_impl
from vtg_jax.models.qwen_vl.fused_attention import cudnn_attention, target_platform
from vtg_jax.parallel.rules import make_mesh, sharded_call

TOL = 1e-5


def _qkv(b, t, n, k, hd, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ks[0], (b, t, n, hd)), jax.random.normal(ks[1], (b, t, k, hd)),
            jax.random.normal(ks[2], (b, t, k, hd)))


def _values_and_grads(fn, q, k, v, rows):
    w = jax.random.normal(jax.random.key(9), q.shape)

    def loss(q, k, v):
        return jnp.sum(jnp.where(rows[:, :, None, None], fn(q, k, v) * w, 0.0))

    return np.asarray(jax.jit(fn)(q, k, v))[rows], jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], atol=TOL, rtol=TOL)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL, rtol=TOL)


def _text_case(b=2, t=150, n=4, k=2, hd=16):
    """Causal GQA self-attention with left padding; t is not a multiple of the 128-row splash block."""
    q, kk, v = _qkv(b, t, n, k, hd)
    key_mask = np.ones((b, t), bool)
    key_mask[1, :23] = False
    return q, kk, v, key_mask


def test_splash_causal_gqa_left_padding():
    q, k, v, key_mask = _text_case()

    def run(impl):
        fn = functools.partial(attention, scale=0.3, key_mask=key_mask, causal=True, impl=impl)
        return _values_and_grads(lambda q, k, v: fn(q, k, v), q, k, v, key_mask)

    _assert_same(run("splash"), run("xla"))


def test_splash_vision_segments():
    """Non-causal attention inside padded segments [S, L] (VisionAttention's layout)."""
    segs, width = 3, 140
    q, k, v = _qkv(segs, width, 2, 2, 16, seed=4)
    valid = np.arange(width)[None, :] < np.array([140, 61, 97])[:, None]

    def run(impl):
        return _values_and_grads(lambda q, k, v: attention(q, k, v, scale=0.25, key_mask=valid, impl=impl),
                                 q, k, v, valid)

    _assert_same(run("splash"), run("xla"))


def test_splash_under_mesh_equals_single_device():
    """Under a (data 2, fsdp 2, tensor 2) mesh splash runs per chip under shard_map: batch 4 over
    data x fsdp, 4 query / 2 kv heads over tensor; the result equals XLA's on one device."""
    q, k, v = _qkv(4, 130, 4, 2, 16, seed=5)
    key_mask = np.ones((4, 130), bool)
    key_mask[2, :9] = False
    want = _values_and_grads(
        lambda q, k, v: attention(q, k, v, scale=0.25, key_mask=key_mask, causal=True, impl="xla"), q, k, v, key_mask)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    with sharded_call(mesh):
        got = _values_and_grads(
            lambda q, k, v: attention(q, k, v, scale=0.25, key_mask=key_mask, causal=True, impl="splash"),
            q, k, v, key_mask)
        lowered = jax.jit(lambda q, k, v: attention(q, k, v, scale=0.25, key_mask=key_mask, causal=True,
                                                    impl="splash")).lower(q, k, v).as_text()
    assert "shard_map" in lowered or "sdy.manual_computation" in lowered
    _assert_same(got, want)


@pytest.mark.parametrize("causal,length", [(True, 40), (False, 40), (True, 41)])
def test_cudnn_wrapper_reorders_any_mask(causal, length):
    """Real tokens anywhere (left padding, a hole, right padding): moved first in order, attended with
    lengths, moved back, equal to the masked reference on every real row; an odd length (cuDNN's
    training kernels need even ones) is padded by one position and cut back."""
    q, k, v = _qkv(3, length, 4, 2, 16, seed=6)
    key_mask = np.ones((3, length), bool)
    key_mask[0, :7] = False
    key_mask[1, 10:14] = False
    key_mask[2, 31:] = False

    def reference(q, k, v):
        return attention(q, k, v, scale=0.25, key_mask=key_mask, causal=causal, impl="xla")

    def wrapper(q, k, v):
        return cudnn_attention(q, k, v, scale=0.25, key_mask=key_mask, causal=causal, implementation="xla")

    _assert_same(_values_and_grads(wrapper, q, k, v, key_mask), _values_and_grads(reference, q, k, v, key_mask))


def test_decode_steps_fall_back_to_xla(monkeypatch):
    """A query block attending a longer cache (prefill into a bigger cache, decode) is not
    self-attention: "splash" runs XLA's attention there (its scores are [rows, S], linear already)."""
    called = []
    monkeypatch.setattr(attn_mod, "splash_attention", lambda *a, **kw: called.append(1))
    q = jnp.zeros((1, 3, 4, 8))
    kv = jnp.zeros((1, 16, 2, 8))
    out = attention(q, kv, kv, scale=1.0, causal=True, q_offset=jnp.asarray(5), impl="splash")
    assert out.shape == (1, 3, 4, 8) and not called


def test_auto_resolves_for_the_target_platform():
    assert resolve_impl("auto", platform="cpu") == "chunked"
    assert resolve_impl("auto", platform="tpu", keys=8192) == "splash"
    assert resolve_impl("auto", platform="tpu", keys=64) == "xla"  # Qwen2.5's vision windows
    assert resolve_impl("auto", platform="gpu", dtype=jnp.bfloat16) == "cudnn"
    assert resolve_impl("auto", platform="gpu", dtype=jnp.float32) == "xla"
    assert resolve_impl("splash", platform="cpu") == "splash"
    assert target_platform() == jax.default_backend()
    with sharded_call(make_mesh(fsdp=8)):
        assert target_platform() == "cpu"
    # A mesh of TPU devices (what the planner traces under on this CPU host) decides for the TPU.
    tpu = jax.sharding.AbstractMesh((2,), ("fsdp",), abstract_device=jax.sharding.AbstractDevice(
        device_kind="TPU v5", num_cores=1, platform="tpu"))
    with jax.sharding.use_abstract_mesh(tpu):
        assert target_platform() == "tpu"
        assert resolve_impl("auto", keys=4096) == "splash"

