"""The Qwen2.5-VL / Qwen3-VL vision tower (as in transformers 5.23) and its HF conversion rows.

Public API:
  prepare_vision_inputs(cfg, family, grid_thw) -> dict of numpy metadata   (vision_inputs.py)
  VisionTower(cfg, family, *, dtype, param_dtype, remat, rngs)(pixel_values, vision_inputs)
      -> (features [N/4, out_hidden] in the original token order, deepstack list (empty for Qwen2.5))
  vision_conversion_rows(cfg, family, *, hf_prefix, ours_prefix) -> list[Row]

Attribute names mirror HF's `model.visual` so conversion is a table of names, not a chain of ifs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vtg_jax.models.qwen_vl import convert_table as ct
from vtg_jax.models.qwen_vl.attention import check_impl
from vtg_jax.models.qwen_vl.config import VisionConfig
from vtg_jax.models.qwen_vl.remat import checkpointed
from vtg_jax.models.qwen_vl.text import logical_constraint
from vtg_jax.models.qwen_vl.vision_inputs import check_family, prepare_vision_inputs
from vtg_jax.models.qwen_vl.vision_layers import (
    Dtype, Qwen25PatchMerger, Qwen3PatchMerger, VisionBlock, annotated, dense, per_shard, permute_rows,
    vision_rope)

__all__ = ["VisionTower", "prepare_vision_inputs", "vision_conversion_rows"]


class VisionTower(nnx.Module):
    """ViT + patch merger (+ Qwen3 DeepStack mergers) over a packed batch of images / videos.

    `pixel_values` [N, C*T*P*P] rows in the processor's order; `vision_inputs` from
    `prepare_vision_inputs` (numpy or jax arrays; all shapes depend only on N).

    Vision shards: `pixel_values` [D, N, C*T*P*P] and every `vision_inputs` array with the same leading
    axis, D packings of their own (each data shard's prompts: `train.batch.prepare_batch(vision_shards=)`),
    give features [D, N/4, out_hidden]. Row-wise layers see the extra axis as a batch dim; the gathers
    (segments, window order) run per shard; attention takes the D x S segments as one batch. The
    leading axis is constrained to the logical `batch` axis, so under a mesh each chip runs the tower on
    its own shard's rows only, and nothing crosses shards.
    """

    def __init__(self, cfg: VisionConfig, family: str, *, dtype: Dtype = jnp.float32,
                 param_dtype: Dtype = jnp.float32, remat: bool = False, attention_impl: str = "auto",
                 rngs: nnx.Rngs):
        check_family(family)
        self.cfg, self.family, self.dtype, self.remat = cfg, family, dtype, remat
        qwen3 = family == "qwen3_vl"
        d = cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # Conv3d with kernel == stride as a Dense over (C, T, P, P) rows; bias only in Qwen3 (§1).
        self.patch_embed = dense(cfg.patch_dim, d, (None, "embed"), bias=qwen3, **kw)
        if qwen3:
            self.pos_embed = nnx.Embed(
                cfg.num_position_embeddings, d, embedding_init=annotated(nnx.initializers.normal(0.02),
                                                                         (None, "embed")), **kw)
        self.blocks = nnx.List([VisionBlock(cfg, family, attention_impl=attention_impl, **kw)
                                for _ in range(cfg.depth)])
        if qwen3:
            self.merger = Qwen3PatchMerger(cfg, postshuffle=False, **kw)
            self.deepstack_merger_list = nnx.List(
                [Qwen3PatchMerger(cfg, postshuffle=True, **kw) for _ in cfg.deepstack_visual_indexes])
        else:
            self.merger = Qwen25PatchMerger(cfg, **kw)

    def set_attention_impl(self, impl: str) -> None:
        """Switch every block's attention kernel ("auto", "xla", "chunked", "splash", "cudnn"; see `attention.py`)."""
        check_impl(impl)
        for block in self.blocks:
            block.attn.attention_impl = impl

    def _window_gather(self, x: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
        """Permutes rows in groups of merge**2 (HF `permute_input_for_window_attn`, §6.7)."""
        unit = self.cfg.spatial_merge_size**2
        lead = x.shape[:-2]  # () or (D,)
        units = x.reshape(*lead, -1, unit, x.shape[-1])
        return per_shard(permute_rows, units, index, inverse).reshape(x.shape)

    def _pos_embed(self, inputs: dict[str, jax.Array]) -> jax.Array:
        """Bilinear interpolation of the learned table: 4 taps summed in fp32 (§1, §6.11)."""
        table = self.pos_embed.embedding[...].astype(jnp.float32)
        taps = table[jnp.asarray(inputs["interp_indices"])]  # [N, 4, D]
        weights = jnp.asarray(inputs["interp_weights"], jnp.float32)
        return jnp.einsum("...td,...t->...d", taps, weights, precision=jax.lax.Precision.HIGHEST)

    def __call__(self, pixel_values: jax.Array, vision_inputs: dict) -> tuple[jax.Array, list[jax.Array]]:
        cfg, qwen3 = self.cfg, self.family == "qwen3_vl"
        inputs = {k: jnp.asarray(v) for k, v in vision_inputs.items()}
        x = self.patch_embed(pixel_values.astype(self.dtype))  # input cast to the weight dtype (§1)
        if x.ndim == 3:  # vision shards: each chip keeps its shard's rows
            x = logical_constraint(x, ("batch", None, None))
        pos = inputs["pos_ids"]
        # Attention segments: frame groups (full) and, for Qwen2.5, windows (§1 "cu_seqlens").
        full = tuple(inputs[f"full_{k}"] for k in ("gather", "valid", "scatter"))
        if qwen3:
            x = x + self._pos_embed(inputs).astype(x.dtype)
            win = full
        else:
            # Window order for the whole stack; rotary ids move with the rows (§6.7).
            index, inverse = inputs["window_index"], inputs["reverse_index"]
            x, pos = self._window_gather(x, index, inverse), self._window_gather(pos, index, inverse)
            win = tuple(inputs[f"win_{k}"] for k in ("gather", "valid", "scatter"))
        cos, sin = vision_rope(pos, cfg.head_dim)  # from the permuted ids == permuted cos/sin
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = checkpointed(block, "full" if self.remat else "none")(x, cos, sin, full if qwen3 or i in cfg.fullatt_block_indexes else win)
            if qwen3 and i in cfg.deepstack_visual_indexes:
                k = cfg.deepstack_visual_indexes.index(i)
                deepstack.append(self.deepstack_merger_list[k](x))
        merged = self.merger(x)
        if not qwen3:
            # Back to the original token order (§1 step 5).
            merged = per_shard(permute_rows, merged, inputs["reverse_index"], inputs["window_index"])
        if merged.ndim == 3:
            merged = logical_constraint(merged, ("batch", None, None))
        return merged, deepstack


def _patch_embed_rows(cfg: VisionConfig, hf: str, ours: ct.Path, bias: bool) -> list[ct.Row]:
    shape = (cfg.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
    rows = [ct.Row(f"{hf}.patch_embed.proj.weight", (*ours, "patch_embed", "kernel"),
                   ct.conv3d_to_dense, ct.dense_to_conv3d(shape))]
    if bias:
        rows.append(ct.Row(f"{hf}.patch_embed.proj.bias", (*ours, "patch_embed", "bias"),
                           ct.identity, ct.identity))
    return rows


def _qwen3_merger_rows(hf: str, ours: ct.Path) -> list[ct.Row]:
    return (ct.norm(f"{hf}.norm", (*ours, "norm"), bias=True)
            + ct.linear(f"{hf}.linear_fc1", (*ours, "linear_fc1"), bias=True)
            + ct.linear(f"{hf}.linear_fc2", (*ours, "linear_fc2"), bias=True))


def vision_conversion_rows(cfg: VisionConfig, family: str, *, hf_prefix: str = "model.visual",
                           ours_prefix: ct.Path = ("visual",)) -> list[ct.Row]:
    """Every transformers-5 `model.visual.*` state_dict key -> our param path.

    `ours_prefix` is where the tower sits in the enclosing model (`()` for a bare `VisionTower`).
    """
    check_family(family)
    qwen3 = family == "qwen3_vl"
    hf, ours = hf_prefix, tuple(ours_prefix)
    rows = _patch_embed_rows(cfg, hf, ours, bias=qwen3)
    if qwen3:
        rows.append(ct.Row(f"{hf}.pos_embed.weight", (*ours, "pos_embed", "embedding"), ct.identity, ct.identity))
    for i in range(cfg.depth):
        h, o = f"{hf}.blocks.{i}", (*ours, "blocks", i)
        rows += ct.norm(f"{h}.norm1", (*o, "norm1"), bias=qwen3)
        rows += ct.norm(f"{h}.norm2", (*o, "norm2"), bias=qwen3)
        rows += ct.linear(f"{h}.attn.qkv", (*o, "attn", "qkv"), bias=True)
        rows += ct.linear(f"{h}.attn.proj", (*o, "attn", "proj"), bias=True)
        names = ("linear_fc1", "linear_fc2") if qwen3 else ("gate_proj", "up_proj", "down_proj")
        for name in names:
            rows += ct.linear(f"{h}.mlp.{name}", (*o, "mlp", name), bias=True)
    if qwen3:
        rows += _qwen3_merger_rows(f"{hf}.merger", (*ours, "merger"))
        for k in range(len(cfg.deepstack_visual_indexes)):
            rows += _qwen3_merger_rows(f"{hf}.deepstack_merger_list.{k}", (*ours, "deepstack_merger_list", k))
    else:
        rows += ct.norm(f"{hf}.merger.ln_q", (*ours, "merger", "ln_q"))
        rows += ct.linear(f"{hf}.merger.mlp.0", (*ours, "merger", "mlp0"), bias=True)
        rows += ct.linear(f"{hf}.merger.mlp.2", (*ours, "merger", "mlp2"), bias=True)
    return rows
