"""The RL step batch inside a jitted step: one forward over prompt ⊕ completions with the vision tower
run ONCE per prompt, gradient accumulation with metrics, and the shared jit wrapper of every RL step.

The batch is an `RLBatch` (layout in its docstring), built on the host by
`vtg_jax.rollout.packing.build_rl_batch` and, as abstract shapes, by `vtg_jax.plan.shapes.rl_batch`.

Why the vision tower runs once per prompt: `model.embed` (visual tower + `scatter_visual`, the
model's public pieces) is applied to the b prompts only, and its embeddings and DeepStack additions are
repeated G times along the batch before the completion embeddings are appended. The tower's cost and
its pixel memory are therefore per prompt, not per completion; the text stack still sees R rows (the
prompt tokens are not shared: their hidden states get gradients from every completion, and sharing
them through a KV cache inside the backward pass is left for later).

Why logits only over the completion: the lm_head (vocabulary-sized) runs on the N completion
positions only (hidden states P−1 … P+N−2 predict completion tokens 0 … N−1), not on the P prompt
positions.

The shared-prefix update (`shared_prefix=True`, config `grpo.shared_prefix` / `opd.shared_prefix`): the
text stack runs ONCE per prompt as well. Causal attention means a prompt position never sees the
completions, so its hidden states, keys and values are the same in all G rows; the prompt is run alone
(b rows, its keys and values kept per layer), then the G completions of each prompt attend to that
prompt's keys and values (read once, `attention.shared_prefix_attention`) and to their own causal
prefix, with gradients flowing back into the prompt through its keys and values. Same loss and
gradients as the repeated layout (to float rounding; tested), but the prompt's activations (the video
tokens: thousands per prompt, against hundreds of completion tokens) are held and recomputed once per
prompt instead of G times. The prefix attention takes XLA's partial softmax ([G·N query rows, P keys]
scores per kv head and layer), not the splash kernel, whose log-sum-exp output has no gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import PartitionSpec

from vtg_jax.losses import masked_mean, token_logprobs
from vtg_jax.models.qwen_vl.text import empty_cache, shared_prefix_cache

Metrics = dict[str, jax.Array]
Array = Any  # np.ndarray on the host, jax.Array (or a ShapeDtypeStruct in the plan) in the step


@struct.dataclass
class RLBatch:
    """The RL step batch: A micro-batches of b prompts, each with G completions, R = b·G rows, row
    i·G + g = completion g of prompt i. A pytree: one sharding in `jax.jit(in_shardings=...)` applies
    to every array, and the optional fields are None (no leaves) when absent.

        prompt_ids, prompt_mask        [A, b, P]     prompts RIGHT-aligned (left padding, as the sampler)
        prompt_pos                     [A, 3, b, P]  M-RoPE ids of the prompt (processor / get_rope_index)
        completions, completion_mask   [A, R, N]     sampled (or ground-truth) tokens, right-padded
        completion_pos                 [A, 3, R, N]  last prompt position + 1 + k on each axis (as HF generate)
        old_logp [A, R, N], advantages [A, R], rewards [A, R], off_policy [A, R] (bool)
        ref_logp / teacher_logp        [A, R, N]     optional: precomputed by `sampling.score`
        pixel_values_videos            [A, b·Pv, D]  optional: packed rows of the b prompts' videos (train/batch.py)
        vision_inputs                  {k: [A, ...]} optional: the vision tower's index arrays of those rows
    """

    prompt_ids: Array
    prompt_mask: Array
    prompt_pos: Array
    completions: Array
    completion_mask: Array
    completion_pos: Array
    old_logp: Array
    advantages: Array
    rewards: Array
    off_policy: Array
    ref_logp: Optional[Array] = None
    teacher_logp: Optional[Array] = None
    pixel_values_videos: Optional[Array] = None
    vision_inputs: Optional[dict[str, Array]] = None


def rl_batch_specs(batch: RLBatch, spec: PartitionSpec) -> dict[str, Any]:
    """The PartitionSpec of each present field of `batch` when its prompts and completions are sharded
    over the mesh axes of `spec` (the logical batch axis' spec, `parallel.distributed.batch_spec`): the
    b and R axes of every micro-batch, and the vision shards' axis of packed videos (replicated when the
    videos are one packing per micro-batch). How per-host input assembles the RL step's batch from each
    process's rows (as `train.batch.packed_specs` does for SFT)."""
    axes = spec[0] if len(spec) else None
    rows, positions = PartitionSpec(None, axes), PartitionSpec(None, None, axes)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if value is None:
            continue
        if f.name in ("prompt_pos", "completion_pos"):
            out[f.name] = positions
        elif f.name in ("pixel_values_videos", "vision_inputs"):
            video = rows if len(batch.pixel_values_videos.shape) == 4 else PartitionSpec()
            out[f.name] = video if f.name == "pixel_values_videos" else {k: video for k in value}
        else:
            out[f.name] = rows
    return out


def require_fields(batch: Any, fields: Sequence[str], objective: str) -> None:
    """Checks at trace time that `batch` is an RLBatch holding every optional field `objective` needs:
    TypeError for another type, ValueError naming the missing (None) fields."""
    if not isinstance(batch, RLBatch):
        raise TypeError(f"{objective} takes an RLBatch (rollout.packing.build_rl_batch), got {type(batch).__name__}")
    missing = [f for f in fields if getattr(batch, f) is None]
    if missing:
        raise ValueError(f"{objective} needs the RL batch field(s) {missing}: pass "
                         f"{', '.join(f'{f}=...' for f in missing)} to build_rl_batch")


def _micro_batch_dims(mb: RLBatch) -> tuple[int, int, int, int]:
    """(prompts b, prompt length P, completion length N, completions per prompt G) of a micro-batch."""
    b, plen = mb.prompt_ids.shape
    rows, n = mb.completions.shape
    if rows % b:
        raise ValueError(f"{rows} completion rows are not a whole number of completions per {b} prompts")
    return b, plen, n, rows // b


def completion_logits(model: nnx.Module, mb: RLBatch, shared_prefix: bool = False) -> jax.Array:
    """Logits [R, N, V] at the positions that predict each completion token, for one micro-batch; with
    `shared_prefix` the prompt's text stack runs once for its G rows (module docstring)."""
    if shared_prefix:
        return _shared_prefix_logits(model, mb)
    ids, pmask, comp, cmask = mb.prompt_ids, mb.prompt_mask, mb.completions, mb.completion_mask
    b, plen, n, g = _micro_batch_dims(mb)
    rep = (lambda x: x) if g == 1 else (lambda x: jnp.repeat(x, g, axis=0))
    prompt_emb, deepstack = model.embed(ids, None, mb.pixel_values_videos, mb.vision_inputs)
    comp_emb = model.language_model.embed_tokens(comp).astype(prompt_emb.dtype)
    embeds = jnp.concatenate([rep(prompt_emb), comp_emb], axis=1)
    zeros = jnp.zeros_like(comp_emb)
    deepstack = [jnp.concatenate([rep(d), zeros.astype(d.dtype)], axis=1) for d in deepstack]
    mask = jnp.concatenate([rep(pmask), cmask], axis=1).astype(jnp.int32)
    pos = jnp.concatenate([jnp.repeat(mb.prompt_pos, g, axis=1), mb.completion_pos], axis=2)
    out = model.language_model(embeds, pos, attention_mask=mask, deepstack=deepstack)
    hidden = out["last_hidden_state"][:, plen - 1:plen - 1 + n]
    return model.logits(hidden).astype(jnp.float32)


def _shared_prefix_logits(model: nnx.Module, mb: RLBatch) -> jax.Array:
    """`completion_logits` with one text-stack pass per prompt (module docstring)."""
    tcfg = model.cfg.text
    ids, pmask, comp, cmask = mb.prompt_ids, mb.prompt_mask, mb.completions, mb.completion_mask
    b, plen, n, g = _micro_batch_dims(mb)
    prompt_emb, deepstack = model.embed(ids, None, mb.pixel_values_videos, mb.vision_inputs)
    # 1. The prompts alone (b rows), keeping each layer's keys and values.
    out = model.language_model(prompt_emb, mb.prompt_pos, attention_mask=pmask, deepstack=deepstack,
                               cache=empty_cache(tcfg, b, plen, model.dtype), cache_index=0, differentiable=True)
    # 2. The G completions of each prompt against its keys and values (kv-head-major, read once).
    cache = shared_prefix_cache(out["cache"], b * g, n, model.dtype)
    mask = jnp.concatenate([jnp.repeat(pmask, g, axis=0), cmask], axis=1).astype(jnp.int32)
    comp_emb = model.language_model.embed_tokens(comp).astype(prompt_emb.dtype)
    comp_out = model.language_model(comp_emb, mb.completion_pos, attention_mask=mask, cache=cache,
                                    cache_index=plen, differentiable=True)
    # Token 0 is predicted by the prompt's last position, token k > 0 by completion position k - 1.
    last = jnp.repeat(out["last_hidden_state"][:, -1:], g, axis=0)
    hidden = jnp.concatenate([last, comp_out["last_hidden_state"][:, :n - 1]], axis=1)
    return model.logits(hidden).astype(jnp.float32)


def completion_logprobs(model: nnx.Module, mb: RLBatch, temperature: float = 1.0,
                        chunk_size: Optional[int] = None, shared_prefix: bool = False
                        ) -> tuple[jax.Array, jax.Array]:
    """(log softmax(logits / T)[token] [R, N], logits [R, N, V]) of the micro-batch's completions."""
    logits = completion_logits(model, mb, shared_prefix)
    return token_logprobs(logits, mb.completions, temperature, chunk_size), logits


def finite_inputs(mb: RLBatch, keys: tuple[str, ...]) -> jax.Array:
    """True iff every listed per-row / per-token field is finite where it is used (completion mask for
    [R, N] arrays). A non-finite reward or log-prob makes the step skip the update (counted, not a crash)."""
    ok = jnp.array(True)
    valid = mb.completion_mask != 0
    for k in keys:
        x = getattr(mb, k)
        ok &= jnp.all(jnp.where(valid, jnp.isfinite(x), True)) if x.shape == valid.shape else jnp.all(jnp.isfinite(x))
    return ok


def aggregate_count(mask: jax.Array, aggregation: str) -> jax.Array:
    """Normaliser of an aggregation mode: valid tokens for "token-mean", valid rows for seq-mean modes
    (so loss_sum = aggregate(...) · count sums exactly across micro-batches)."""
    m = mask != 0
    if aggregation == "token-mean":
        return jnp.sum(m.astype(jnp.float32))
    return jnp.sum(jnp.any(m, axis=-1).astype(jnp.float32))


def batch_metrics(mb: RLBatch) -> Metrics:
    """Per-micro-batch passthrough metrics of the rollout (rewards / advantages / lengths)."""
    valid = jnp.any(mb.completion_mask != 0, axis=-1)
    return {"reward/mean": masked_mean(jnp.where(jnp.isfinite(mb.rewards), mb.rewards, 0.0), valid),
            "rl/adv_mean": masked_mean(mb.advantages, valid),
            "rl/adv_abs_mean": masked_mean(jnp.abs(mb.advantages), valid),
            "rl/completion_len": masked_mean(jnp.sum(mb.completion_mask, -1).astype(jnp.float32), valid)}


