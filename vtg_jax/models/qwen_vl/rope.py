"""Text multimodal RoPE (M-RoPE): cos/sin tables, rotation, and the host-side 3-D position index.

Follows transformers 5.23's Qwen2.5-VL / Qwen3-VL text rotary embedding and `get_rope_index`: inv_freq in
float32, half-split `rotate_half` pairing, and the position-index rules documented on `get_rope_index`.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vtg_jax.models.qwen_vl.config import QwenVLConfig

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values, as in HF.


# ---------------------------------------------------------------------------------------------------
# cos / sin and rotation (jit-friendly).


def mrope_axis_of_freq(head_dim: int, mrope_section: Sequence[int], interleaved: bool) -> np.ndarray:
    """For each of the head_dim/2 frequencies, which position axis (0=t, 1=h, 2=w) drives it.

    Qwen2.5 uses contiguous chunks of `mrope_section`; Qwen3 interleaves: frequency j takes h when
    j % 3 == 1 and j < 3 * s_h, w when j % 3 == 2 and j < 3 * s_w, else t (as HF Qwen3-VL).
    """
    half = head_dim // 2
    if sum(mrope_section) != half:
        raise ValueError(f"sum(mrope_section)={sum(mrope_section)} must equal head_dim/2={half}")
    if not interleaved:
        return np.repeat(np.arange(3), np.asarray(mrope_section))
    j = np.arange(half)
    axis = np.zeros(half, np.int32)
    axis[(j % 3 == 1) & (j < 3 * mrope_section[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * mrope_section[2])] = 2
    return axis


def inv_freq(head_dim: int, theta: float) -> jax.Array:
    """1 / theta^(2i/hd), always in float32 (as HF)."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def mrope_cos_sin(
    position_ids: jax.Array,
    head_dim: int,
    theta: float,
    mrope_section: Sequence[int],
    interleaved: bool,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, S, head_dim] from 3-D position ids [3, B, S] (or 1-D ids [B, S]).

    Angles are computed in float32 and the tables are then CAST to the activation dtype, as HF does
    (unlike the vision RoPE, which stays float32).
    """
    position_ids = jnp.asarray(position_ids)
    if position_ids.ndim == 2:
        position_ids = jnp.broadcast_to(position_ids[None], (3, *position_ids.shape))
    freqs = position_ids[..., None].astype(jnp.float32) * inv_freq(head_dim, theta)  # [3, B, S, hd/2]
    axis = mrope_axis_of_freq(head_dim, mrope_section, interleaved)
    # Select per frequency the axis it belongs to; where() keeps this exact.
    sel = jnp.where(axis == 0, freqs[0], jnp.where(axis == 1, freqs[1], freqs[2]))
    emb = jnp.concatenate([sel, sel], axis=-1)
    return cos_sin_tables(emb, dtype)


def cos_sin_tables(angles: jax.Array, dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """cos(angles), sin(angles) cast to `dtype`, evaluated ONCE per forward on XLA:CPU.

    XLA fuses elementwise producers into their consumers, so without a fusion boundary cos/sin are
    re-evaluated for every element of every rotation that reads them: for each of the heads, twice
    per `rotate_half`, in every layer, forward and backward. XLA:CPU's float32 cos/sin are slow
    (about 15x numpy's), and this made the text rope's backward ~15x slower than its memory traffic.
    `lax.optimization_barrier` does not help (XLA:CPU removes it before fusion); a conditional is a
    fusion boundary that XLA cannot remove while its predicate is data-dependent. Both branches are
    the same function, so the predicate only has to be opaque, never right. GPU/TPU evaluate
    transcendentals cheaply in the fused kernels and keep the plain expression.
    """
    def tables(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.cos(a).astype(dtype), jnp.sin(a).astype(dtype)

    if jax.default_backend() != "cpu" or angles.size == 0:
        return tables(angles)
    opaque = jnp.isfinite(angles.reshape(-1)[0])
    return jax.lax.cond(opaque, tables, tables, angles)


def rotate_half(x: jax.Array) -> jax.Array:
    """(x1, x2) -> (-x2, x1) over the last axis: half-split pairing, not GPT-J interleave (as HF)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, S, heads, hd]; cos/sin: [B, S, hd] (already in x's dtype)."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------------------------------------------
# 3-D position index (host-side numpy).


def _runs(types: np.ndarray) -> list[tuple[int, int]]:
    """(modality, length) of each maximal run of equal mm_token_type ids."""
    return [(int(k), len(list(g))) for k, g in itertools.groupby(types.tolist())]


def _vision_positions(grid: np.ndarray, merge: int, scale: tuple[float, ...], start: int) -> np.ndarray:
    """[3, t*lh*lw] ids of one vision run, in the merger's (t, h, w) order.

    Temporal ids are `trunc(arange(t) * scale[0] * scale[1] ...)` plus `start`, multiplied left to right
    in float32 as torch does (float multiply, then truncate).
    """
    t, lh, lw = int(grid[0]), int(grid[1]) // merge, int(grid[2]) // merge
    tt = np.arange(t).astype(np.float32)
    for f in scale:
        tt = tt * np.float32(f)
    tt = tt.astype(np.int64)
    ti, hi, wi = np.meshgrid(tt, np.arange(lh), np.arange(lw), indexing="ij")
    return np.stack([ti.ravel(), hi.ravel(), wi.ravel()]).astype(np.int64) + start


def get_rope_index(
    cfg: QwenVLConfig,
    input_ids: Any,
    mm_token_type_ids: Any = None,
    attention_mask: Any = None,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid_ts: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """3-D M-RoPE position ids [3, B, S] (int64) and rope deltas [B, 1] = max(pos) + 1 - n_valid.

    Token runs come from `mm_token_type_ids` (0 text, 1 image, 2 video); when it is None it is derived
    from `input_ids == image/video_token_id`. Pads (attention_mask == 0) are removed and keep position 0.
    Grids are consumed in order across the batch (images and videos separately). A text run of length
    n gets arange(n) + cur on all axes. A vision run gets (t·interval, h, w) + cur with the merged grid.

    Where the next run starts after a vision run depends on `cfg.rope_index_rule` (the rule
    changed between transformers releases):
      * "original" (default): cur = max(all positions so far) + 1. This is Qwen's own code and
        transformers <= 4.5x, which is what the released Qwen2.5-VL checkpoints were trained with.
        Temporal ids use the float product `trunc(i * tokens_per_second * second_per_grid_t)` of
        Qwen's release; some transformers 4.5x releases cast second_per_grid_t to int first, which
        only differs for fractional values (second_per_grid_t = 1.0 at the usual 2 fps sampling).
      * "transformers5": cur += max(lh, lw), ignoring the temporal extent (transformers 5.23).
    The two differ only when (t-1)·interval >= max(lh, lw), i.e. for multi-group Qwen2.5 videos. For
    Qwen3 each video run is one temporal group (HF splits video_grid_thw per group) with no
    temporal scaling, so both rules coincide.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, S], got shape {ids.shape}")
    bsz, seq = ids.shape
    if mm_token_type_ids is None:
        types = (ids == cfg.image_token_id) * IMAGE + (ids == cfg.video_token_id) * VIDEO
    else:
        types = np.asarray(mm_token_type_ids).astype(np.int64)
    mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    merge = cfg.vision.spatial_merge_size
    qwen3 = cfg.family == "qwen3_vl"
    images = [] if image_grid_thw is None else list(np.asarray(image_grid_thw).reshape(-1, 3))
    videos = [] if video_grid_thw is None else list(np.asarray(video_grid_thw).reshape(-1, 3))
    if qwen3:  # One (1, h, w) grid per temporal group; no temporal scaling (as HF Qwen3-VL).
        videos = [np.array([1, g[1], g[2]]) for g in videos for _ in range(int(g[0]))]
        spgt: list[float] = [1.0] * len(videos)
    elif second_per_grid_ts is None:
        spgt = [1.0] * len(videos)
    else:
        spgt = [float(s) for s in np.asarray(second_per_grid_ts, np.float64).reshape(-1)]
    grids = {IMAGE: iter(images), VIDEO: iter(zip(videos, spgt))}

    positions = np.zeros((3, bsz, seq), np.int64)
    deltas = np.zeros((bsz, 1), np.int64)
    for b in range(bsz):
        cur, chunks = 0, []
        for kind, n in _runs(types[b][mask[b]]):
            if kind == TEXT:
                chunks.append(np.broadcast_to(np.arange(n, dtype=np.int64) + cur, (3, n)))
                cur += n
                continue
            if kind not in (IMAGE, VIDEO):
                raise ValueError(f"mm_token_type_ids values must be 0/1/2, got {kind}")
            try:
                grid, s = (next(grids[IMAGE]), 1.0) if kind == IMAGE else next(grids[VIDEO])
            except StopIteration:
                name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
                raise ValueError(f"more {'image' if kind == IMAGE else 'video'} runs than rows of {name}") from None
            if kind == IMAGE or qwen3:
                scale: tuple[float, ...] = ()
            elif cfg.rope_index_rule == "original":  # Qwen: (i * second_per_grid_t) * tokens_per_second.
                scale = (s, cfg.tokens_per_second)
            else:  # transformers 5.23: i * (tokens_per_second * second_per_grid_t), float32.
                scale = (float(np.float32(cfg.tokens_per_second) * np.float32(s)),)
            pos = _vision_positions(grid, merge, scale, cur)
            if pos.shape[1] != n:
                raise ValueError(f"a vision run has {n} tokens but its grid {tuple(grid)} gives {pos.shape[1]}")
            chunks.append(pos)
            if cfg.rope_index_rule == "original":
                cur = int(pos.max()) + 1
            else:
                cur += max(int(grid[1]), int(grid[2])) // merge
        row = np.concatenate(chunks, axis=1) if chunks else np.zeros((3, 0), np.int64)
        positions[:, b, mask[b]] = row
        deltas[b, 0] = (int(row.max()) + 1 if row.size else 0) - row.shape[1]
    return positions, deltas


def text_position_ids(attention_mask: Any, seq_len: int, batch: int) -> np.ndarray:
    """HF's fallback when no 3-D ids can be built: arange(S) on all three axes, ignoring padding."""
    del attention_mask
    return np.broadcast_to(np.arange(seq_len, dtype=np.int64), (3, batch, seq_len)).copy()
