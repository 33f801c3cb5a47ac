"""Logits processing and per-row sampling (temperature, top-k, top-p, greedy) for the decode loop.

Order follows transformers' warpers: divide by the temperature, then keep the top-k logits, then the
smallest nucleus whose probability reaches top_p. Ties at either threshold are kept (HF keeps every
logit >= the k-th largest), and the nucleus always keeps the most likely token.

Two log-probs are returned per sampled token (RL and OPD need the first):
    logprob           log softmax(logits / T)[tok]: the model's own distribution at temperature T,
                      *before* top-k / top-p truncation. This is the `old_logp` of GRPO's ratio and
                      what `score` / a teacher-forced forward at temperature T recompute.
    sampling_logprob  log-prob under the truncated, renormalised distribution actually sampled from.
Greedy decoding (temperature 0) reports log softmax(logits)[tok] (temperature 1) for both.

RNG: row r of a batch draws step k's noise from `fold_in(key_r, k)` where `key_r` depends only on
(seed, prompt id, sample id) (see `row_keys`), never on the batch layout, so sample g of a prompt is
the same whether it is decoded with its G-1 siblings from one shared prefill or alone.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(seed: jax.Array | int, prompt_ids: jax.Array, sample_ids: jax.Array) -> jax.Array:
    """Typed PRNG keys [R]: fold_in(fold_in(key(seed), prompt_id), sample_id) per row."""
    base = jax.random.key(jnp.asarray(seed, jnp.uint32))

    def one(p: jax.Array, s: jax.Array) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(base, p), s)

    return jax.vmap(one)(prompt_ids.astype(jnp.uint32), sample_ids.astype(jnp.uint32))


def truncate_logits(z: jax.Array, top_k: int, top_p: jax.Array | float | None) -> jax.Array:
    """z [..., V] (already divided by the temperature) with the tokens outside top-k / top-p set to -inf.

    top_k: static; 0 (or >= V) keeps everything. top_p: None skips the nucleus step (static choice);
    otherwise a (possibly traced) float in (0, 1].
    """
    neg = jnp.asarray(-jnp.inf, z.dtype)
    vocab = z.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(z, top_k)[0][..., -1:]
        z = jnp.where(z < kth, neg, z)
    if top_p is not None:
        sorted_z = -jnp.sort(-z, axis=-1)  # descending
        probs = jax.nn.softmax(sorted_z, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability mass strictly above each token
        keep = before < top_p
        keep = keep.at[..., 0].set(True)
        cutoff = jnp.min(jnp.where(keep, sorted_z, jnp.inf), axis=-1, keepdims=True)
        z = jnp.where(z < cutoff, neg, z)
    return z


def sample_step(
    logits: jax.Array, keys: jax.Array, temperature: jax.Array | float, top_p: jax.Array | float, *,
    greedy: bool, top_k: int, use_top_p: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One token per row from logits [R, V] with per-row keys [R].

    Returns (tokens int32 [R], logprob [R], sampling_logprob [R]) as documented in the module docstring.
    Sampling is the Gumbel-max trick on the truncated logits (exactly categorical sampling).
    """
    z = logits.astype(jnp.float32)
    if greedy:
        tok = jnp.argmax(z, axis=-1).astype(jnp.int32)
        lp = jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), tok[:, None], axis=-1)[:, 0]
        return tok, lp, lp
    z = z / jnp.asarray(temperature, jnp.float32)
    zt = truncate_logits(z, top_k, top_p if use_top_p else None)
    gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (z.shape[-1],), jnp.float32))(keys)
    tok = jnp.argmax(zt + gumbel, axis=-1).astype(jnp.int32)
    lp = jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), tok[:, None], axis=-1)[:, 0]
    slp = jnp.take_along_axis(jax.nn.log_softmax(zt, axis=-1), tok[:, None], axis=-1)[:, 0]
    return tok, lp, slp
