"""The Qwen2.5-VL / Qwen3-VL language decoder (as in transformers 5.23), plus logical-sharding helpers.

Layout of the NNX state (the conversion table in `convert.py` relies on it):
    embed_tokens.embedding [V, D]
    layers[i].input_layernorm.scale, .post_attention_layernorm.scale [D]
    layers[i].self_attn.{q,k,v,o}_proj.{kernel,bias}, .q_norm.scale/.k_norm.scale [hd] (Qwen3)
    layers[i].mlp.{gate,up,down}_proj.kernel
    norm.scale [D]

KV cache hook (for the sampler). `TextModel.__call__(..., cache=[LayerKV, ...], cache_index=i)` writes the
new tokens' post-RoPE k/v (what HF's cache stores) into each layer's preallocated [B, L, kv_heads, hd] buffers at
offset `cache_index`, attends over the whole buffer, and returns the updated cache. The caller passes
`attention_mask` over the L buffer slots (1 = a real token has been written there), and position ids
of the new tokens; the causal rule is `key_slot <= cache_index + query_offset`.

Shared-prefix cache (sampler decode / scoring of G samples per prompt). A layer's cache may instead be a
`SharedPrefixKV`: ONE copy of the prompt's K/V [B, kv_heads, P, hd] shared by the G = R / B rows of each
prompt (row b*G+g is sample g of prompt b), plus per-row suffix buffers [R, kv_heads, N, hd]. The contract
is the same as for a [R, P + N] `LayerKV` holding the prefix repeated G times followed by the suffix:
slots are numbered 0..P+N-1 (`cache_index` >= P counts from the prefix start), `attention_mask` is
[R, P + N], and only the suffix is written; attention runs `attention.shared_prefix_attention`. Its
buffers are kv-head-major (unlike `LayerKV`) because that is the layout the attention matmuls read:
token-major buffers were transposed, all of them, in every layer at every decode step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.core.spmd as core_spmd
import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.models.qwen_vl.attention import attention, check_impl, shared_prefix_attention
from vtg_jax.models.qwen_vl.config import TextConfig
from vtg_jax.models.qwen_vl.linear import Linear
from vtg_jax.models.qwen_vl.remat import check_remat, checkpointed
from vtg_jax.models.qwen_vl.rope import apply_rope, mrope_cos_sin
from vtg_jax.parallel.rules import logical_to_spec

# ---------------------------------------------------------------------------------------------------
# Logical axis names: every parameter carries them; the rules map them to mesh axes.


def partitioned(init: Callable[..., Any], names: Sequence[str | None]) -> Callable[..., Any]:
    """An initializer whose Param carries logical axis names (`out_sharding` metadata).

    Eager sharding is off: parameters are placed by `convert.from_pretrained` / the trainer from these
    names + logical rules + mesh (`nnx.get_partition_spec` under `nnx.logical_axis_rules`), so building a
    module needs no mesh.
    """
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def logical_constraint(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op without an active mesh (`jax.set_mesh`)
    and logical rules (`nnx.logical_axis_rules`; see `vtg_jax.parallel.rules.sharded_call`).

    A dim shorter than its shard count stays whole (a decode step's one token on a `sequence` axis); a
    longer one that does not divide evenly is split unevenly (XLA pads), so an update's sequence of any
    length keeps its context parallelism."""
    rules = core_spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(tuple(names), tuple(rules), mesh, x.shape, uneven=True))


# ---------------------------------------------------------------------------------------------------
# Layers.


class RMSNorm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) in float32, cast back to x's dtype, THEN times weight (no +1)."""

    def __init__(self, dim: int, eps: float, *, name: str = "embed", param_dtype: Any = jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(partitioned(nnx.initializers.ones, (name,))(None, (dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        var = jnp.mean(xf * xf, axis=-1, keepdims=True)
        y = (xf * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * y


def dense(
    din: int, dout: int, names: tuple[str, str], *, bias: bool, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.Linear:
    """A Linear whose kernel (in, out) and bias (out) carry logical names."""
    return Linear(
        din, dout, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=partitioned(nnx.initializers.normal(0.02), names),
        bias_init=partitioned(nnx.initializers.zeros_init(), names[1:]),
        rngs=rngs,
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerKV:
    """One layer's KV cache: post-RoPE keys and values, [B, L, kv_heads, head_dim] each."""

    k: jax.Array
    v: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SharedPrefixKV:
    """One layer's shared-prefix cache (module docstring): prefix_k / prefix_v [B, kv_heads, P, hd] shared
    by the G rows of each prompt, k / v [B*G, kv_heads, N, hd] each row's own suffix slots."""

    prefix_k: jax.Array
    prefix_v: jax.Array
    k: jax.Array
    v: jax.Array


KV_NAMES = ("batch", "length", "kv_heads", "head_dim")  # LayerKV: token-major
SHARED_KV_NAMES = ("batch", "kv_heads", "length", "head_dim")  # SharedPrefixKV: kv-head-major


def empty_cache(cfg: TextConfig, batch: int, length: int, dtype: Any) -> list[LayerKV]:
    """Zero `LayerKV` buffers of `length` slots for every layer (a prefill fills them)."""
    shape = (batch, length, cfg.num_key_value_heads, cfg.head_dim)
    return [LayerKV(logical_constraint(jnp.zeros(shape, dtype), KV_NAMES),
                    logical_constraint(jnp.zeros(shape, dtype), KV_NAMES)) for _ in range(cfg.num_hidden_layers)]


def shared_prefix_cache(prefix: Sequence[LayerKV], rows: int, suffix: int, dtype: Any) -> list[SharedPrefixKV]:
    """Each layer's prefilled prompt keys / values (kv-head-major, once per prompt) shared by `rows` rows
    (rows / prompts per prompt), each with `suffix` zero slots of its own."""
    def heads_major(x: jax.Array) -> jax.Array:  # [B, P, kv, hd] -> [B, kv, P, hd], once per prompt
        return logical_constraint(x.transpose(0, 2, 1, 3), SHARED_KV_NAMES)

    out = []
    for kv in prefix:
        shape = (rows, kv.k.shape[2], suffix, kv.k.shape[3])
        out.append(SharedPrefixKV(heads_major(kv.k), heads_major(kv.v),
                                  logical_constraint(jnp.zeros(shape, dtype), SHARED_KV_NAMES),
                                  logical_constraint(jnp.zeros(shape, dtype), SHARED_KV_NAMES)))
    return out


def _shared_prefix_step(q, k, v, kv: SharedPrefixKV, key_mask, cache_index, scale, impl, differentiable):
    """Write k / v at suffix slot `cache_index - P` and attend over the shared prefix + own suffix."""
    b, plen = kv.prefix_k.shape[0], kv.prefix_k.shape[2]
    start = (0, 0, cache_index - plen, 0)
    kv = SharedPrefixKV(kv.prefix_k, kv.prefix_v,
                        jax.lax.dynamic_update_slice(kv.k, k.transpose(0, 2, 1, 3).astype(kv.k.dtype), start),
                        jax.lax.dynamic_update_slice(kv.v, v.transpose(0, 2, 1, 3).astype(kv.v.dtype), start))
    prefix_mask = suffix_mask = None
    if key_mask is not None:
        rows = key_mask.shape[0]
        prefix_mask = key_mask.reshape(b, rows // b, -1)[:, 0, :plen]
        suffix_mask = key_mask[:, plen:]
    dt = q.dtype
    out = shared_prefix_attention(q, kv.prefix_k.astype(dt), kv.prefix_v.astype(dt), kv.k.astype(dt),
                                  kv.v.astype(dt), scale=scale, prefix_mask=prefix_mask, key_mask=suffix_mask,
                                  q_offset=cache_index - plen, impl=impl, differentiable=differentiable)
    return out, kv


class Attention(nnx.Module):
    """GQA self-attention: q/k/v bias (Qwen2.5), per-head q/k RMSNorm before RoPE (Qwen3).

    `attention_impl` picks the attention kernel (`attention.py`: "auto", "xla", "chunked", "splash" or "cudnn").
    """

    def __init__(self, cfg: TextConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs,
                 attention_impl: str = "auto"):
        check_impl(attention_impl)
        self.cfg, self.attention_impl = cfg, attention_impl
        hd, d = cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = dense(d, cfg.num_attention_heads * hd, ("embed", "heads"), bias=cfg.attention_bias, **kw)
        self.k_proj = dense(d, cfg.num_key_value_heads * hd, ("embed", "kv_heads"), bias=cfg.attention_bias, **kw)
        self.v_proj = dense(d, cfg.num_key_value_heads * hd, ("embed", "kv_heads"), bias=cfg.attention_bias, **kw)
        self.o_proj = dense(cfg.num_attention_heads * hd, d, ("heads", "embed"), bias=False, **kw)
        if cfg.qk_norm:  # Qwen3: RMSNorm(head_dim, rms_norm_eps) per head, before RoPE.
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, name="head_dim", param_dtype=param_dtype)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, name="head_dim", param_dtype=param_dtype)

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, key_mask: jax.Array | None,
        kv: LayerKV | SharedPrefixKV | None = None, cache_index: jax.Array | int | None = None,
        differentiable: bool = False,
    ) -> tuple[jax.Array, LayerKV | SharedPrefixKV | None]:
        """key_mask [B, K] (True = a real token; None = all real), K = T or the cache length; the
        causal rule is `key <= cache_index + query` (cache_index 0 without a cache). `differentiable`:
        a shared-prefix cache is attended by a kernel with gradients (the shared-prefix update)."""
        cfg = self.cfg
        b, s, _ = x.shape
        q = self.q_proj(x).reshape(b, s, cfg.num_attention_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, s, cfg.num_key_value_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, s, cfg.num_key_value_heads, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        k = logical_constraint(k, ("batch", "length", "kv_heads", "head_dim"))
        if isinstance(kv, SharedPrefixKV):
            out, kv = _shared_prefix_step(q, k, v, kv, key_mask, cache_index, cfg.head_dim**-0.5, self.attention_impl,
                                          differentiable)
            return self.o_proj(out.reshape(b, s, -1)), kv
        if kv is not None:  # Write the new tokens into the cache buffers, attend over all slots.
            start = (0, cache_index, 0, 0)
            kv = LayerKV(jax.lax.dynamic_update_slice(kv.k, k.astype(kv.k.dtype), start),
                         jax.lax.dynamic_update_slice(kv.v, v.astype(kv.v.dtype), start))
            k, v = kv.k.astype(q.dtype), kv.v.astype(q.dtype)
        # GQA: kv head j serves query heads j*g..j*g+g-1, like repeat_kv. Softmax is float32 and
        # masked logits get a finite minimum (not -inf, so all-pad rows give no NaN).
        out = attention(q, k, v, scale=cfg.head_dim**-0.5, key_mask=key_mask, causal=True,
                        q_offset=0 if kv is None else cache_index, impl=self.attention_impl)
        return self.o_proj(out.reshape(b, s, -1)), kv


class MLP(nnx.Module):
    """SwiGLU without bias: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TextConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        kw = dict(bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = dense(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), **kw)
        self.up_proj = dense(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), **kw)
        self.down_proj = dense(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        h = logical_constraint(h, ("batch", "length", "mlp"))
        return self.down_proj(h)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs,
                 attention_impl: str = "auto"):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = Attention(cfg, attention_impl=attention_impl, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(cfg, **kw)

    def __call__(
        self, h: jax.Array, cos: jax.Array, sin: jax.Array, key_mask: jax.Array | None,
        kv: LayerKV | SharedPrefixKV | None = None, cache_index: jax.Array | int | None = None,
        differentiable: bool = False,
    ) -> tuple[jax.Array, LayerKV | SharedPrefixKV | None]:
        a, kv = self.self_attn(self.input_layernorm(h), cos, sin, key_mask, kv, cache_index, differentiable)
        h = h + a
        h = h + self.mlp(self.post_attention_layernorm(h))
        return logical_constraint(h, ("batch", "length", "embed")), kv


def attention_mask_4d(
    attention_mask: jax.Array | None, batch: int, q_len: int, k_len: int, q_offset: jax.Array | int = 0
) -> jax.Array:
    """Boolean [B, 1, T, K]: key j is visible to query i iff j <= q_offset + i and key j is not padding.

    (The layers no longer build this dense mask; `attention.attention` applies the same rule.)"""
    causal = jnp.arange(k_len)[None, :] <= (q_offset + jnp.arange(q_len))[:, None]
    mask = jnp.broadcast_to(causal[None, None], (batch, 1, q_len, k_len))
    if attention_mask is not None:
        mask = mask & jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
    return mask


class TextModel(nnx.Module):
    """Embedding + decoder layers + final norm (HF `model.language_model`)."""

    def __init__(self, cfg: TextConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 remat: str = "none", attention_impl: str = "auto", rngs: nnx.Rngs):
        check_remat(remat)
        self.cfg, self.dtype, self.remat = cfg, dtype, remat
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
            embedding_init=partitioned(nnx.initializers.normal(0.02), ("vocab", "embed")), rngs=rngs,
        )
        self.layers = nnx.List(
            [DecoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs, attention_impl=attention_impl)
             for _ in range(cfg.num_hidden_layers)]
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)

    def set_attention_impl(self, impl: str) -> None:
        """Switch every layer's attention kernel ("auto", "xla", "chunked", "splash", "cudnn"; see `attention.py`)."""
        check_impl(impl)
        for layer in self.layers:
            layer.self_attn.attention_impl = impl

    def __call__(
        self,
        inputs_embeds: jax.Array,
        position_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        deepstack: Sequence[jax.Array] = (),
        output_hidden_states: bool = False,
        cache: list[LayerKV] | list[SharedPrefixKV] | None = None,
        cache_index: jax.Array | int = 0,
        differentiable: bool = False,
    ) -> dict[str, Any]:
        """inputs_embeds [B, T, D]; position_ids [3, B, T]; attention_mask [B, K] (K = T, or the cache
        length P + N when `cache` is given); deepstack: per-layer [B, T, D] additions, zero outside visual
        positions (Qwen3 DeepStack: added after layer k).

        Returns {"last_hidden_state", "hidden_states" (if asked), "cache" (if given)}. hidden_states
        follows HF: (input of layer 0, output of layers 0..N-2 before any DeepStack addition, final
        normed state).

        `differentiable=True` (the shared-prefix update, `train.rl_batch`): the pass is differentiated
        through its cache, so the layers run under the model's remat policy with the cache (an int
        `cache_index` stays static) and a shared-prefix cache is attended with gradients.
        """
        cfg = self.cfg
        h = logical_constraint(inputs_embeds.astype(self.dtype), ("batch", "length", "embed"))
        cos, sin = mrope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, cfg.mrope_section,
                                 cfg.mrope_interleaved, self.dtype)
        key_mask = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        hidden = [h] if output_hidden_states else None
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            if cache is not None and differentiable:
                static, args = {"differentiable": True}, (h, cos, sin, key_mask, cache[i])
                if isinstance(cache_index, int):
                    static["cache_index"] = cache_index
                else:
                    args += (cache_index,)
                h, kv = checkpointed(layer, self.remat, **static)(*args)
                new_cache.append(kv)
            elif cache is not None:
                h, kv = layer(h, cos, sin, key_mask, cache[i], cache_index)
                new_cache.append(kv)
            else:
                h = checkpointed(layer, self.remat)(h, cos, sin, key_mask)[0]
            if hidden is not None and i < len(self.layers) - 1:
                hidden.append(h)
            if i < len(deepstack):
                h = h + deepstack[i].astype(h.dtype)
        h = self.norm(h)
        out: dict[str, Any] = {"last_hidden_state": h}
        if hidden is not None:
            out["hidden_states"] = tuple(hidden) + (h,)
        if new_cache is not None:
            out["cache"] = new_cache
        return out
