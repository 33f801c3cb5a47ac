"""Jitted prefill, decode loop and teacher-forced scoring over a KV cache, positioned as HF generate.

Three programs, each jitted once per static shape (graphdef and sizes are static; model state, seed,
temperature, top_p and max_new_tokens are traced, so changing them does not recompile):

* `prefill`: vision tower + the whole (bucketed, left-padded) prompt, ONCE per prompt, writing the
  post-RoPE K/V of every prompt slot into ONE prefix cache per prompt [B, kv, P, hd]; the G samples of a
  prompt (row b*G+g is sample g of prompt b) share it and only get their own suffix buffers
  [B*G, kv, N, hd] (`SharedPrefixKV`, text.py, kv-head-major), while the last-position logits, the
  slot mask [B*G, P+N] and the last prompt position are repeated G times. This is the shared-prefix saving of GRPO's G
  rollouts: the vision tower and the long video prompt run once, not G times, and the prompt's K/V is
  neither copied G times nor read G times per decode step (`attention.shared_prefix_attention` stacks
  the G samples as extra query rows against the single prefix and merges with each row's suffix by
  log-sum-exp).
* `decode`: a `lax.while_loop` emitting one token per step for all rows, with the cache DONATED (updated
  in place) and an early exit when every row has finished. Decode token k of a row sits at
  `last_prompt_pos + 1 + k` on each M-RoPE axis (HF generate adds `position_ids[..., -1:] + 1` per step,
  in transformers' generation/utils.py), written at cache slot P + k (suffix slot k).
* `completion_logprobs`: after `prefill` (repeated S times), ONE forward of all completion tokens
  against the cache, and `vtg_jax.losses.token_logprobs` for the chunked log-softmax gather.

Sharding: every batch-major array is constrained to the logical `batch` axis (no-op without an active
mesh and rules, see `vtg_jax.parallel.rules.sharded_call`), so rows spread over the data axis.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.losses.logprobs import token_logprobs
from vtg_jax.models.qwen_vl.model import QwenVL
from vtg_jax.models.qwen_vl.text import LayerKV, SharedPrefixKV, empty_cache, logical_constraint, shared_prefix_cache
from vtg_jax.sampling.processing import row_keys, sample_step



def _rows(x: jax.Array) -> jax.Array:
    """Constrain a batch-major array to the logical batch axis."""
    return logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))


def _repeat(x: jax.Array, g: int, axis: int = 0) -> jax.Array:
    return x if g == 1 else jnp.repeat(x, g, axis=axis)


def _prefill(model: QwenVL, p: dict[str, Any], num_samples: int, cache_len: int) -> dict[str, Any]:
    """Prefill B prompts once; return a shared-prefix cache for `num_samples` rows per prompt with
    `cache_len - P` suffix slots per row."""
    tcfg = model.cfg.text
    ids = p["input_ids"]
    b, plen = ids.shape
    g = num_samples
    embeds, deepstack = model.embed(ids, p["pixel_values"], p["pixel_values_videos"], p["vision_inputs"])
    out = model.language_model(embeds, p["position_ids"], attention_mask=p["attention_mask"],
                               deepstack=deepstack, cache=empty_cache(tcfg, b, plen, model.dtype), cache_index=0)
    last_logits = model.logits(out["last_hidden_state"][:, -1:])[:, 0].astype(jnp.float32)
    cache = shared_prefix_cache(out["cache"], b * g, cache_len - plen, model.dtype)
    # Suffix slots are "valid" from the start; causality hides them until written.
    mask = jnp.concatenate([p["attention_mask"], jnp.ones((b, cache_len - plen), jnp.int32)], axis=1)
    return {
        "cache": cache,
        "logits": _rows(_repeat(last_logits, g)),
        "mask": _rows(_repeat(mask, g)),
        "last_pos": _repeat(p["position_ids"][:, :, -1], g, axis=1),  # [3, B*G]
    }


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples", "cache_len", "rules_key"))
def prefill(graphdef: nnx.GraphDef, state: nnx.State, prompts: dict[str, Any], *, num_samples: int,
            cache_len: int, rules_key: Any = None) -> dict[str, Any]:
    """Jitted `_prefill`. `rules_key` (the active logical rules) only keys the compilation cache."""
    del rules_key
    return _prefill(nnx.merge(graphdef, state), prompts, num_samples, cache_len)


@functools.partial(
    jax.jit, donate_argnames=("cache",),
    static_argnames=("graphdef", "prompt_len", "num_buf", "greedy", "top_k", "use_top_p", "pad_id", "rules_key"))
def decode(
    graphdef: nnx.GraphDef, state: nnx.State, cache: list[SharedPrefixKV] | list[LayerKV], logits: jax.Array,
    mask: jax.Array, last_pos: jax.Array, prompt_ids: jax.Array, sample_ids: jax.Array, seed: jax.Array,
    max_new_tokens: jax.Array, eos_ids: jax.Array, temperature: jax.Array, top_p: jax.Array, *,
    prompt_len: int, num_buf: int, greedy: bool, top_k: int, use_top_p: bool, pad_id: int, rules_key: Any = None,
) -> dict[str, jax.Array]:
    """Decode up to `max_new_tokens` (<= num_buf) tokens per row from the prefilled cache (the
    `SharedPrefixKV` cache of `prefill`; a [R, P + N] `LayerKV` cache with the prefix copied per row
    gives the same results and serves as a reference in the tests).

    Returns tokens [R, num_buf] (pad_id after a row ends), logprobs / sampling_logprobs [R, num_buf]
    (0 after the end), lengths [R] (EOS included), hit_eos [R], and the final cache.
    """
    del rules_key
    model = nnx.merge(graphdef, state)
    rows = logits.shape[0]
    keys = row_keys(seed, prompt_ids, sample_ids)

    def cond(c: dict[str, Any]) -> jax.Array:
        return (c["k"] < max_new_tokens) & ~jnp.all(c["done"])

    def body(c: dict[str, Any]) -> dict[str, Any]:
        k = c["k"]
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, k)
        tok, lp, slp = sample_step(c["logits"], step_keys, temperature, top_p, greedy=greedy, top_k=top_k,
                                   use_top_p=use_top_p)
        active = ~c["done"]
        tok = jnp.where(active, tok, pad_id)
        eos = active & jnp.isin(tok, eos_ids)

        def put(buf: jax.Array, col: jax.Array) -> jax.Array:
            return jax.lax.dynamic_update_slice(buf, col[:, None].astype(buf.dtype), (0, k))

        new = dict(
            k=k + 1,
            tokens=put(c["tokens"], tok),
            logprobs=put(c["logprobs"], jnp.where(active, lp, 0.0)),
            sampling_logprobs=put(c["sampling_logprobs"], jnp.where(active, slp, 0.0)),
            lengths=c["lengths"] + active.astype(jnp.int32),
            hit_eos=c["hit_eos"] | eos,
            done=c["done"] | eos,
        )
        pos = (last_pos + 1 + k)[:, :, None]  # [3, R, 1]: last prompt position + 1 + k per axis
        emb = model.language_model.embed_tokens(tok[:, None])
        out = model.language_model(emb, pos, attention_mask=mask, cache=c["cache"], cache_index=prompt_len + k)
        new["cache"] = out["cache"]
        new["logits"] = _rows(model.logits(out["last_hidden_state"])[:, 0].astype(jnp.float32))
        return new

    zeros_f = jnp.zeros((rows, num_buf), jnp.float32)
    init = dict(
        k=jnp.asarray(0, jnp.int32), cache=cache, logits=logits,
        tokens=jnp.full((rows, num_buf), pad_id, jnp.int32), logprobs=zeros_f, sampling_logprobs=zeros_f,
        lengths=jnp.zeros((rows,), jnp.int32), hit_eos=jnp.zeros((rows,), bool), done=jnp.zeros((rows,), bool),
    )
    final = jax.lax.while_loop(cond, body, init)
    # The final cache is returned (and dropped by the caller) so the donated input buffer can be
    # aliased to it: the loop then updates the cache in place instead of copying it first.
    return {k: final[k] for k in ("tokens", "logprobs", "sampling_logprobs", "lengths", "hit_eos", "cache")}


@functools.partial(jax.jit, static_argnames=("graphdef", "prompt_len", "chunk_size", "rules_key"))
def completion_logprobs(
    graphdef: nnx.GraphDef, state: nnx.State, cache: list[SharedPrefixKV] | list[LayerKV], logits: jax.Array,
    mask: jax.Array, last_pos: jax.Array, completions: jax.Array, temperature: jax.Array, *, prompt_len: int,
    chunk_size: int | None, rules_key: Any = None,
) -> jax.Array:
    """log softmax(logits / T)[completion token] [R, N] for completions [R, N] against a prefilled cache
    (the outputs of `prefill`, so `score` shares the prefill program with `generate`).

    Completion token n is predicted by the logits at the previous position: token 0 by the prompt's
    last logits (from the prefill), token n > 0 by the forward output at completion position n-1. All
    completion positions run in ONE teacher-forced forward (slots P..P+N-1 of the cache).
    """
    del rules_key
    model = nnx.merge(graphdef, state)
    n = completions.shape[1]
    pos = last_pos[:, :, None] + 1 + jnp.arange(n)[None, None, :]
    emb = model.language_model.embed_tokens(completions)
    out = model.language_model(emb, pos, attention_mask=mask, cache=cache, cache_index=prompt_len)
    step_logits = _rows(model.logits(out["last_hidden_state"]).astype(jnp.float32))
    all_logits = jnp.concatenate([logits[:, None], step_logits[:, :-1]], axis=1)
    return token_logprobs(all_logits, completions, temperature, chunk_size)
