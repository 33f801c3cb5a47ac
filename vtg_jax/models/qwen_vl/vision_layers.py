"""Building blocks of the Qwen-VL vision tower: norms, 2-D rotary embedding, attention, MLPs, mergers.

Every parameter carries logical axis names (`out_sharding` metadata, applied later through
`vtg_jax.parallel.rules`; eager sharding is off so modules build without a mesh). Numerics follow
transformers 5.23's vision encoders: norms in fp32 with eps 1e-6, vision RoPE in fp32 with
`rotate_half`, softmax in fp32, exact-erf GELU in the mergers.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.models.qwen_vl.attention import attention, check_impl
from vtg_jax.models.qwen_vl.config import VisionConfig
from vtg_jax.models.qwen_vl.linear import Linear
from vtg_jax.models.qwen_vl.rope import cos_sin_tables

Axes = tuple[str | None, ...]
Dtype = Any
NORM_EPS = 1e-6  # hard-coded in HF for every vision norm, whatever the config says
ROPE_THETA = 10_000.0  # vision rope_parameters default (RotaryEmbeddingConfigMixin.default_theta)
_INIT = nnx.initializers.normal(0.02)  # HF initializer_range


def annotated(init: Any, axes: Axes) -> Any:
    """An initializer whose Param records logical axis names (no mesh needed at construction)."""
    return nnx.with_partitioning(init, axes, eager_sharding=False)


def dense(d_in: int, d_out: int, axes: Axes, *, bias: bool, dtype: Dtype, param_dtype: Dtype,
          rngs: nnx.Rngs) -> nnx.Linear:
    """A Dense layer; `axes` names the (in, out) kernel dims, the bias takes the out name."""
    return Linear(
        d_in, d_out, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
        kernel_init=annotated(_INIT, axes), bias_init=annotated(nnx.initializers.zeros_init(), axes[1:]),
        rngs=rngs)


def _norm_param(dim: int, value: float, param_dtype: Dtype) -> nnx.Param:
    return nnx.Param(jnp.full((dim,), value, param_dtype), out_sharding=("embed",), eager_sharding=False)


class RMSNorm(nnx.Module):
    """Qwen2.5 RMSNorm: normalise in fp32, cast to the input dtype, then scale (no +1 on the weight)."""

    def __init__(self, dim: int, *, dtype: Dtype, param_dtype: Dtype):
        self.scale = _norm_param(dim, 1.0, param_dtype)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + NORM_EPS)
        return self.scale[...].astype(self.dtype) * y.astype(self.dtype)


class LayerNorm(nnx.Module):
    """Qwen3 `nn.LayerNorm(eps=1e-6)` with bias, statistics in fp32."""

    def __init__(self, dim: int, *, dtype: Dtype, param_dtype: Dtype):
        self.scale = _norm_param(dim, 1.0, param_dtype)
        self.bias = _norm_param(dim, 0.0, param_dtype)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + NORM_EPS)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


def vision_rope(pos_ids: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """cos/sin [..., N, head_dim] in fp32 from (h, w) ids [..., N, 2], as HF's vision rotary embedding.

    hd/4 frequencies; angles cat(h*inv, w*inv) (length hd/2), then concatenated with themselves.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (ROPE_THETA ** (jnp.arange(0, half, 2, dtype=jnp.float32) / half))
    pos = pos_ids.astype(jnp.float32)
    angles = jnp.concatenate([pos[..., 0:1] * inv_freq, pos[..., 1:2] * inv_freq], axis=-1)
    emb = jnp.concatenate([angles, angles], axis=-1)
    return cos_sin_tables(emb)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_vision_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., N, H, hd]; rotation in fp32, result cast back (HF `apply_rotary_pos_emb_vision`, §6.2)."""
    xf = x.astype(jnp.float32)
    out = xf * cos[..., None, :] + _rotate_half(xf) * sin[..., None, :]
    return out.astype(x.dtype)


Layout = tuple[jax.Array, jax.Array, jax.Array]  # gather [S, L], valid [S, L], scatter [N] (pack_segments)
# With vision shards (the rows of each data shard's prompts packed apart: `VisionTower`) every array of a
# layout has a leading shard axis [D, ...], and the row ops below run per shard (`per_shard`).


def per_shard(op: Any, x: jax.Array, *index: jax.Array) -> jax.Array:
    """op(x, *index) for one packing, or vmapped over the leading shard axis when the index arrays
    carry one (x [D, N, ...] with index [D, ...]): a batched gather, local to each shard's chips."""
    sharded = index[0].ndim > _INDEX_NDIM[op]
    return jax.vmap(op)(x, *index) if sharded else op(x, *index)

# Row gathers whose inverse is known on the host. Their VJPs are gathers by the inverse index rather than
# the scatter-adds autodiff would emit (scatter is slow on CPU and serialises on accelerators).


@jax.custom_vjp
def permute_rows(x: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
    """x[index] for a permutation `index` whose inverse permutation is `inverse`."""
    return x[index]


def _permute_fwd(x, index, inverse):
    return x[index], inverse


def _permute_bwd(inverse, g):
    return g[inverse], None, None


permute_rows.defvjp(_permute_fwd, _permute_bwd)


def _slot_mask(valid: jax.Array, ndim: int) -> jax.Array:
    return valid.reshape(valid.shape + (1,) * (ndim - 1))


@jax.custom_vjp
def to_segments(x: jax.Array, gather: jax.Array, valid: jax.Array, scatter: jax.Array) -> jax.Array:
    """[N, ...] rows -> [S, L, ...] padded segments; padding slots are zero."""
    return jnp.where(_slot_mask(valid, x.ndim), x[gather], 0)


def _to_segments_fwd(x, gather, valid, scatter):
    return to_segments(x, gather, valid, scatter), scatter


def _to_segments_bwd(scatter, g):
    # Every row sits in exactly one valid slot and padding slots were zeroed: dx = g at the row's slot.
    return g.reshape(-1, *g.shape[2:])[scatter], None, None, None


to_segments.defvjp(_to_segments_fwd, _to_segments_bwd)


@jax.custom_vjp
def from_segments(y: jax.Array, gather: jax.Array, valid: jax.Array, scatter: jax.Array) -> jax.Array:
    """[S, L, ...] padded segments -> [N, ...] rows (padding slots dropped)."""
    return y.reshape(-1, *y.shape[2:])[scatter]


def _from_segments_fwd(y, gather, valid, scatter):
    return from_segments(y, gather, valid, scatter), (gather, valid)


def _from_segments_bwd(res, g):
    gather, valid = res
    return jnp.where(_slot_mask(valid, g.ndim), g[gather], 0), None, None, None


from_segments.defvjp(_from_segments_fwd, _from_segments_bwd)

# Rank of each row op's first index array for ONE packing (more: a leading shard axis).
_INDEX_NDIM = {permute_rows: 1, to_segments: 2, from_segments: 2}


class VisionAttention(nnx.Module):
    """Fused-qkv attention inside segments (frame groups or windows: HF's `cu_seqlens` segments).

    Rows are gathered into a padded [S, L] batch of segments, attended with a key-validity mask
    (equivalent to the block-diagonal mask of the packed sequence, in O(S*L^2) instead of O(N^2)
    memory, like HF's per-segment split) and scattered back. `attention_impl`: see `attention.py`.
    """

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs,
                 attention_impl: str = "auto"):
        check_impl(attention_impl)
        self.attention_impl = attention_impl
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = dense(d, 3 * d, ("embed", "heads"), **kw)
        self.proj = dense(d, d, ("heads", "embed"), **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, layout: Layout) -> jax.Array:
        lead = x.shape[:-1]  # (N,), or (D, N) with vision shards
        gather, valid = layout[0], layout[1]
        qkv = self.qkv(x).reshape(*lead, 3, self.num_heads, self.head_dim)  # HF: reshape(N, 3, heads, hd)
        width = gather.shape[-1]

        def segments(y: jax.Array) -> jax.Array:  # -> [(D*)S, L, H, hd]: shards' segments side by side
            return per_shard(to_segments, y, *layout).reshape(-1, width, *y.shape[-2:])

        q = segments(apply_vision_rope(qkv[..., 0, :, :], cos, sin))
        k = segments(apply_vision_rope(qkv[..., 1, :, :], cos, sin))
        v = segments(qkv[..., 2, :, :])
        out = attention(q, k, v, scale=self.head_dim**-0.5, key_mask=valid.reshape(-1, width),
                        impl=self.attention_impl)
        out = out.reshape(*gather.shape, *out.shape[-2:])
        return self.proj(per_shard(from_segments, out, *layout).reshape(*lead, -1))


_ACTS = {
    "silu": jax.nn.silu,
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


def activation(name: str) -> Any:
    if name not in _ACTS:
        raise ValueError(f"unsupported vision hidden_act {name!r}; known: {sorted(_ACTS)}")
    return _ACTS[name]


class GatedMLP(nnx.Module):
    """Qwen2.5 vision MLP: down(act(gate(x)) * up(x)), all with bias."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = dense(d, f, ("embed", "mlp"), **kw)
        self.up_proj = dense(d, f, ("embed", "mlp"), **kw)
        self.down_proj = dense(f, d, ("mlp", "embed"), **kw)
        activation(cfg.hidden_act)  # validate early
        self.hidden_act = cfg.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(activation(self.hidden_act)(self.gate_proj(x)) * self.up_proj(x))


class PlainMLP(nnx.Module):
    """Qwen3 vision MLP: fc2(gelu_tanh(fc1(x))), with bias."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_fc1 = dense(d, f, ("embed", "mlp"), **kw)
        self.linear_fc2 = dense(f, d, ("mlp", "embed"), **kw)
        activation(cfg.hidden_act)  # validate early
        self.hidden_act = cfg.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_fc2(activation(self.hidden_act)(self.linear_fc1(x)))


class VisionBlock(nnx.Module):
    """Pre-norm residual block: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(self, cfg: VisionConfig, family: str, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs,
                 attention_impl: str = "auto"):
        qwen3 = family == "qwen3_vl"
        norm = LayerNorm if qwen3 else RMSNorm
        self.norm1 = norm(cfg.hidden_size, dtype=dtype, param_dtype=param_dtype)
        self.norm2 = norm(cfg.hidden_size, dtype=dtype, param_dtype=param_dtype)
        self.attn = VisionAttention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                                    attention_impl=attention_impl)
        mlp = PlainMLP if qwen3 else GatedMLP
        self.mlp = mlp(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, layout: Layout) -> jax.Array:
        x = x + self.attn(self.norm1(x), cos, sin, layout)
        return x + self.mlp(self.norm2(x))


def _exact_gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)  # torch nn.GELU() default; JAX defaults to tanh


class Qwen25PatchMerger(nnx.Module):
    """RMSNorm(D) -> view(-1, 4D) -> Linear -> GELU(erf) -> Linear(out), as HF's Qwen2.5 merger."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        d4 = cfg.hidden_size * cfg.spatial_merge_size**2
        kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_q = RMSNorm(cfg.hidden_size, dtype=dtype, param_dtype=param_dtype)
        self.mlp0 = dense(d4, d4, ("embed", "mlp"), **kw)
        self.mlp2 = dense(d4, cfg.out_hidden_size, ("mlp", "embed"), **kw)
        self.d4 = d4

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.mlp2(_exact_gelu(self.mlp0(self.ln_q(x).reshape(*x.shape[:-2], -1, self.d4))))


class Qwen3PatchMerger(nnx.Module):
    """LayerNorm before the 2x2 view (main merger) or after it over 4D (`postshuffle`, DeepStack)."""

    def __init__(self, cfg: VisionConfig, *, postshuffle: bool, dtype: Dtype, param_dtype: Dtype,
                 rngs: nnx.Rngs):
        d4 = cfg.hidden_size * cfg.spatial_merge_size**2
        kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(d4 if postshuffle else cfg.hidden_size, dtype=dtype, param_dtype=param_dtype)
        self.linear_fc1 = dense(d4, d4, ("embed", "mlp"), **kw)
        self.linear_fc2 = dense(d4, cfg.out_hidden_size, ("mlp", "embed"), **kw)
        self.postshuffle, self.d4 = postshuffle, d4

    def __call__(self, x: jax.Array) -> jax.Array:
        grouped = (*x.shape[:-2], -1, self.d4)  # merge units of 4 consecutive rows (per shard)
        if self.postshuffle:
            x = self.norm(x.reshape(grouped))
        else:
            x = self.norm(x).reshape(grouped)
        return self.linear_fc2(_exact_gelu(self.linear_fc1(x)))
