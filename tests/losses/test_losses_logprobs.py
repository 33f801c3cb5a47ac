"""token_logprobs / entropy: hand values, temperature, chunking, dtypes, gradients."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtg_jax.losses import entropy, map_sequence_chunks, token_logprobs, token_logprobs_and_entropy


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_hand_computed_values_and_temperature():
    # logits [0, ln 2, ln 3]: probs 1/6, 2/6, 3/6.
    logits = jnp.array([[[0.0, math.log(2.0), math.log(3.0)]]])
    tokens = jnp.array([[2]])
    np.testing.assert_allclose(token_logprobs(logits, tokens), [[math.log(0.5)]], rtol=1e-6)
    # temperature 0.5 squares the odds: 1, 4, 9 -> 9/14.
    np.testing.assert_allclose(token_logprobs(logits, tokens, temperature=0.5), [[math.log(9 / 14)]], rtol=1e-6)
    expected_h = -sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6))
    np.testing.assert_allclose(entropy(logits), [[expected_h]], rtol=1e-6)
    # temperature -> large flattens towards uniform: entropy -> log 3.
    np.testing.assert_allclose(entropy(logits, temperature=1e4), [[math.log(3.0)]], rtol=1e-6)


def test_uniform_and_neg_inf_logits():
    logits = jnp.array([[[1.0, 1.0, 1.0, 1.0], [0.0, -jnp.inf, 0.0, -jnp.inf]]])
    lp, h = token_logprobs_and_entropy(logits, jnp.array([[3, 2]]))
    np.testing.assert_allclose(lp, [[math.log(0.25), math.log(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(h, [[math.log(4.0), math.log(2.0)]], rtol=1e-6)
    assert np.isfinite(np.asarray(jax.jit(jax.grad(lambda x: entropy(x).sum()))(logits))).all()


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_chunked_equals_unchunked_gather(chunk_size):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 7, 11)).astype(np.float32) * 3
    tokens = rng.integers(0, 11, size=(2, 7))
    ref = np.take_along_axis(_np_log_softmax(logits / 0.7), tokens[..., None], -1)[..., 0]
    p_ref = np.exp(_np_log_softmax(logits / 0.7))
    h_ref = -(p_ref * np.log(p_ref)).sum(-1)
    lp, h = token_logprobs_and_entropy(jnp.asarray(logits), jnp.asarray(tokens), 0.7, chunk_size)
    np.testing.assert_allclose(lp, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    lp_only = token_logprobs(jnp.asarray(logits), jnp.asarray(tokens), 0.7, chunk_size)
    np.testing.assert_allclose(lp_only, ref, atol=1e-5)
    np.testing.assert_allclose(entropy(jnp.asarray(logits), 0.7, chunk_size), h_ref, atol=1e-5)


def test_chunked_gradient_matches_unchunked():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 9, 6)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 6, size=(2, 9)))
    w = jnp.asarray(rng.normal(size=(2, 9)), jnp.float32)

    def f(x, cs):
        lp, h = token_logprobs_and_entropy(x, tokens, 1.3, cs)
        return jnp.sum(w * lp) + jnp.sum(h)

    grad_f = jax.jit(jax.grad(f), static_argnums=1)
    g_full, g_chunk = grad_f(logits, None), grad_f(logits, 4)
    np.testing.assert_allclose(g_chunk, g_full, atol=1e-5)
    # d log p_a / d z = (onehot(a) - p) / temperature, row by row.
    g = jax.jit(jax.grad(lambda x: token_logprobs(x, tokens, 1.3, 2)[0, 0]))(logits)
    p = np.exp(_np_log_softmax(np.asarray(logits[0, 0]) / 1.3))
    np.testing.assert_allclose(g[0, 0], (np.eye(6)[int(tokens[0, 0])] - p) / 1.3, atol=1e-6)


def test_gradient_is_weighted_onehot_minus_softmax_everywhere():
    # token_logprobs has its own VJP (no [B, T, V] log-softmax kept): check it position by position
    # against the closed form, with a vocabulary entry masked to -inf and a weight per position.
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 2
    logits[:, :, 6] = -np.inf
    tokens = rng.integers(0, 6, size=(2, 5))
    w = rng.normal(size=(2, 5)).astype(np.float32)
    for chunk_size in (None, 2):
        g = jax.jit(jax.grad(lambda x: jnp.sum(w * token_logprobs(x, tokens, 0.8, chunk_size))))(logits)
        p = np.exp(_np_log_softmax(logits / 0.8))
        expected = w[..., None] * (np.eye(7)[tokens] - p) / 0.8
        np.testing.assert_allclose(g, expected, atol=1e-6)
        assert np.all(np.asarray(g)[:, :, 6] == 0.0)


def test_bfloat16_input_gives_float32_output():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(1, 5, 8)), jnp.bfloat16)
    tokens = jnp.asarray(rng.integers(0, 8, size=(1, 5)))
    lp = token_logprobs(logits, tokens, chunk_size=2)
    assert lp.dtype == jnp.float32
    ref = np.take_along_axis(_np_log_softmax(np.asarray(logits, np.float32)), np.asarray(tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(lp, ref, atol=1e-6)


def test_chunked_forward_holds_one_float32_chunk():
    """XLA's temp buffer holds no float32 [B, T, V] log-softmax: token_logprobs' own VJP keeps only the
    log-normaliser, so even unchunked float32 logits need almost no temp; chunked, it is a few chunks."""
    b, t, v, c = 1, 64, 2048, 8
    logits = jnp.zeros((b, t, v), jnp.float32)
    tokens = jnp.zeros((b, t), jnp.int32)
    full = b * t * v * 4

    def temp(chunk, grad=False):
        fn = lambda x: token_logprobs(x, tokens, chunk_size=chunk).sum()  # noqa: E731
        fn = jax.jit(jax.grad(fn) if grad else fn)
        return fn.lower(logits).compile().memory_analysis().temp_size_in_bytes

    chunk_bytes = b * c * v * 4
    assert temp(None) < chunk_bytes < full
    assert temp(c) <= 3 * chunk_bytes < full
    # Backward: the gradient itself is the output buffer; the remat'd scan recomputes each chunk.
    assert temp(None, grad=True) < chunk_bytes
    assert temp(c, grad=True) <= 5 * chunk_bytes < full


def test_invalid_arguments():
    x = jnp.zeros((1, 2, 3))
    with pytest.raises(ValueError):
        token_logprobs(x, jnp.zeros((1, 2), jnp.int32), temperature=0.0)
    with pytest.raises(ValueError):
        map_sequence_chunks(lambda a: a, (jnp.zeros((4, 5)),), 2)
