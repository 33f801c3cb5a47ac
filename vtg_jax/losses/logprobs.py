"""Per-token log-probabilities and entropies from logits, chunked over the sequence.

A Qwen vocabulary has ~151k entries; a float32 copy of ``[B, T, V]`` logits for a few thousand tokens
is several GiB. Every function here therefore accepts ``chunk_size``: positions are processed
``chunk_size`` at a time inside a ``lax.scan`` whose body is rematerialised (``jax.checkpoint``), so
neither the forward nor the backward pass holds more than a few float32 chunks ``[B, chunk, V]`` at
a time (the logits themselves stay in their input dtype). Measured with float32 logits on CPU
(tests/losses/test_losses_logprobs.py); note that XLA's CPU backend upcasts a bfloat16 array to
float32 as a whole before the loop (its bf16 normalisation), so the bound there holds for float32
inputs; GPU/TPU keep bfloat16 natively (not measured here). ``token_logprobs`` has its own VJP
(``_selected_log_softmax``) and never writes a float32 log-softmax at all, chunked or not.

Conventions: logits are divided by ``temperature`` *before* the softmax (the sampler's distribution
at that temperature); all outputs are float32.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from vtg_jax.losses.aggregation import to_float

Array = jax.Array


def map_sequence_chunks(fn: Callable[..., Any], arrays: Sequence[Array], chunk_size: Optional[int]) -> Any:
    """Applies ``fn`` to slices ``[:, s:s+chunk_size]`` of every array and stitches the outputs.

    ``arrays`` share their first two axes ``[B, T]``; ``fn`` maps slices ``[B, c, ...]`` to a pytree of
    ``[B, c, ...]`` arrays (per-position outputs). The last chunk is aligned to end at ``T`` (it
    overlaps the previous one and rewrites identical values), so nothing is padded or copied.
    With ``chunk_size`` None or ``>= T`` this is just ``fn(*arrays)``.
    """
    if chunk_size is None:
        return fn(*arrays)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if arrays[0].ndim != 3:
        raise ValueError(f"chunking needs [B, T, V] logits first, got shape {arrays[0].shape}")
    seq_len = arrays[0].shape[1]
    if chunk_size >= seq_len:
        return fn(*arrays)
    n_chunks = -(-seq_len // chunk_size)

    def sliced(start: Array, *xs: Array) -> Any:
        return fn(*[lax.dynamic_slice_in_dim(x, start, chunk_size, axis=1) for x in xs])

    # Remat: the backward pass recomputes the chunk's float32 softmax instead of stacking it.
    body = jax.checkpoint(sliced, prevent_cse=False)
    probe = [lax.slice_in_dim(a, 0, chunk_size, axis=1) for a in arrays]
    out_struct = jax.eval_shape(fn, *probe)
    init = jax.tree.map(lambda s: jnp.zeros(s.shape[:1] + (seq_len,) + s.shape[2:], s.dtype), out_struct)

    def step(carry: Any, i: Array) -> tuple[Any, None]:
        start = jnp.minimum(i * chunk_size, seq_len - chunk_size)
        outs = body(start, *arrays)
        carry = jax.tree.map(lambda c, o: lax.dynamic_update_slice_in_dim(c, o, start, axis=1), carry, outs)
        return carry, None

    out, _ = lax.scan(step, init, jnp.arange(n_chunks))
    return out


def _scaled(logits: Array, temperature: float | Array) -> Array:
    """logits / temperature in float32."""
    return to_float(logits) / jnp.asarray(temperature, jnp.float32)


def scaled_log_softmax(logits: Array, temperature: float | Array) -> Array:
    """log softmax(logits / temperature) in float32."""
    return jax.nn.log_softmax(_scaled(logits, temperature), axis=-1)


@jax.custom_vjp
def _selected_log_softmax(z: Array, tokens: Array) -> Array:
    """log softmax(z)[tokens] over the last axis: ``[..., V], [...] -> [...]``.

    Same arithmetic as ``take_along_axis(jax.nn.log_softmax(z), tokens)`` (z - max - log sum exp(z -
    max)), but the full log-distribution is never written, and the backward pass is one elementwise
    pass, dz = g * (onehot(tokens) - softmax(z)), from the saved log-normaliser: autodiff of
    log_softmax + gather instead scatters g into a [..., V] one-hot, keeps the [..., V] log-softmax and
    makes several passes over it (1.7x slower on CPU for a [2, 1002, 8192] batch, fwd+bwd). Like every
    custom VJP it supports reverse mode only (jax.grad / vjp), not jax.jvp.
    """
    return _selected_log_softmax_fwd(z, tokens)[0]


def _selected_log_softmax_fwd(z: Array, tokens: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    shift = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    log_norm = jnp.log(jnp.sum(jnp.exp(z - shift), axis=-1, keepdims=True))
    picked = jnp.take_along_axis(z, tokens[..., None], axis=-1)
    return ((picked - shift) - log_norm)[..., 0], (z, tokens, shift + log_norm)


def _selected_log_softmax_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, None]:
    z, tokens, lse = res
    is_token = lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == tokens[..., None]
    g = g[..., None]
    return g * (is_token.astype(z.dtype) - jnp.exp(z - lse)), None


_selected_log_softmax.defvjp(_selected_log_softmax_fwd, _selected_log_softmax_bwd)


def _entropy_from_logp(logp: Array) -> Array:
    """H = -sum_v p_v log p_v, with 0 log 0 = 0 (logits of -inf are allowed)."""
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, logp, 0.0), 0.0), axis=-1)


def _check_temperature(temperature: float | Array) -> None:
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs_and_entropy(
    logits: Array, tokens: Array, temperature: float | Array = 1.0, chunk_size: Optional[int] = None
) -> tuple[Array, Array]:
    """log pi(tokens[b, t] | .) and the entropy of pi(. | .) at every position.

    Args:
      logits: ``[B, T, V]`` logits aligned with ``tokens`` (position t predicts ``tokens[:, t]``).
      tokens: ``[B, T]`` integer ids.
      temperature: softmax temperature; logits are divided by it before ``log_softmax``.
      chunk_size: positions per chunk (None: all at once).
    Returns:
      ``(logp [B, T], entropy [B, T])`` in float32.
    """
    _check_temperature(temperature)

    def per_chunk(lg: Array, tok: Array) -> tuple[Array, Array]:
        logp_all = scaled_log_softmax(lg, temperature)
        logp = jnp.take_along_axis(logp_all, tok[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return logp, _entropy_from_logp(logp_all)

    return map_sequence_chunks(per_chunk, (logits, tokens), chunk_size)


def token_logprobs(
    logits: Array, tokens: Array, temperature: float | Array = 1.0, chunk_size: Optional[int] = None
) -> Array:
    """log softmax(logits / temperature)[tokens] per position: ``[B, T, V], [B, T] -> [B, T]`` float32.

    This is log pi_theta(a_t | s_t) of Video-OPD eq. 4-5 and of the GRPO ratio (LongVTG-R1 eq. 2).
    """
    _check_temperature(temperature)

    def per_chunk(lg: Array, tok: Array) -> Array:
        return _selected_log_softmax(_scaled(lg, temperature), tok.astype(jnp.int32))

    return map_sequence_chunks(per_chunk, (logits, tokens), chunk_size)


def entropy(logits: Array, temperature: float | Array = 1.0, chunk_size: Optional[int] = None) -> Array:
    """Entropy -sum_v p_v log p_v of softmax(logits / temperature) per position: ``[B, T, V] -> [B, T]``."""
    _check_temperature(temperature)
    return map_sequence_chunks(
        lambda lg: _entropy_from_logp(scaled_log_softmax(lg, temperature)), (logits,), chunk_size
    )


def log_softmax(logits: Array, temperature: float | Array = 1.0) -> Array:
    """Full float32 log-distribution ``log softmax(logits / temperature)`` (no chunking: small V only)."""
    _check_temperature(temperature)
    return scaled_log_softmax(logits, temperature)
