"""Host-side (numpy) metadata of the vision tower, computed once per batch from `grid_thw`.

Everything that depends on the *values* of `grid_thw` (position ids, attention segments, the Qwen2.5
window permutation, the Qwen3 position-embedding interpolation taps) is computed here, so that the
tower itself is pure array code that jits with static shapes (HF computes the same
quantities in transformers/vision_utils.py).

Row order throughout is the order of `pixel_values`: entries in `grid_thw` order, within an entry the
temporal groups t, within a frame group the patches in block-major order
(merge-block row, merge-block col, in-block row, in-block col), so 4 consecutive rows form one 2x2 merge
block (the HF processors' patch layout).
"""
from __future__ import annotations

import numpy as np

from vtg_jax.models.qwen_vl.config import VisionConfig

FAMILIES = ("qwen2_5_vl", "qwen3_vl")


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _check_grid(cfg: VisionConfig, grid_thw: np.ndarray) -> np.ndarray:
    grid = np.asarray(grid_thw, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        raise ValueError(f"grid_thw must have shape [K, 3] with K >= 1, got {grid.shape}")
    m = cfg.spatial_merge_size
    if (grid <= 0).any() or (grid[:, 1] % m).any() or (grid[:, 2] % m).any():
        raise ValueError(f"grid_thw entries must be positive with h, w divisible by {m}; got {grid.tolist()}")
    return grid


def _block_major_hw(h: int, w: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) patch coordinates of one frame, in block-major order (HF's vision rotary ids)."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // m, m, w // m, m)
    return (rows.reshape(shape).transpose(0, 2, 1, 3).reshape(-1),
            cols.reshape(shape).transpose(0, 2, 1, 3).reshape(-1))


def _axis_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear align_corners=True taps (floor, floor+1; clamped) and weights along one axis, in fp32
    with the operation order of transformers' vision_utils `_interpolation_axis_taps_weights` (5.23
    computes the weights in fp32; older releases used the model dtype)."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    offsets = np.arange(2, dtype=np.float32)
    taps = np.clip(floor.astype(np.int64)[:, None] + np.arange(2), 0, side - 1)
    weights = np.clip(np.float32(1) - np.abs(src[:, None] - floor[:, None] - offsets), 0, None)
    return taps, weights.astype(np.float32)


def _window_order(t: int, lh: int, lw: int, vw: int) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5 window order of one entry's merge units (VU `get_vision_window_index`).

    Units (t, r, c) are visited window by window in (t, window row, window col) order, row-major inside
    a window; windows at the right/bottom edge are truncated (HF pads with -100 and drops the padding).
    Returns (unit indices in visiting order, local window id of each visited unit).
    """
    tt, rr, cc = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
    tt, rr, cc = tt.reshape(-1), rr.reshape(-1), cc.reshape(-1)
    n_win_w = -(-lw // vw)
    n_win = -(-lh // vw) * n_win_w
    window = tt * n_win + (rr // vw) * n_win_w + cc // vw
    order = np.lexsort((cc, rr, window))  # last key is primary: window, then row, then col
    return order, window[order]


def pack_segments(segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded per-segment layout of contiguous segments, for attention in O(sum of segment²) memory.

    Returns gather [S, L] (row of each slot; padding slots point at row 0), valid [S, L] (real slots),
    scatter [N] (flat slot of each row), with S segments of at most L rows.
    """
    seg = np.asarray(segment_ids)
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    lengths = np.diff(np.r_[starts, seg.size])
    if len(np.unique(seg)) != len(starts):
        raise ValueError("attention segments must be contiguous")
    s, width = len(starts), int(lengths.max())
    slot = np.arange(width)
    valid = slot[None, :] < lengths[:, None]
    gather = np.where(valid, starts[:, None] + slot[None, :], 0)
    owner = np.repeat(np.arange(s), lengths)
    scatter = owner * width + (np.arange(seg.size) - starts[owner])
    return gather.astype(np.int32), valid, scatter.astype(np.int32)


def prepare_vision_inputs(cfg: VisionConfig, family: str, grid_thw: np.ndarray) -> dict[str, np.ndarray]:
    """Metadata for `VisionTower.__call__` (N = sum of t*h*w rows; U = N / merge**2 merge units).

    Always:
      pos_ids      int32 [N, 2]  (h, w) rotary positions, block-major, repeated t times.
      segment_ids  int32 [N]     one id per temporal patch group of each entry (HF `cu_seqlens`); full
                                 attention never crosses frame groups.
      full_gather int32 [S, L], full_valid bool [S, L], full_scatter int32 [N]
                                 `pack_segments` of the frame groups, in the tower's working row order
                                 (windowed order for Qwen2.5; frame groups stay contiguous there).
    Qwen2.5 ("qwen2_5_vl"):
      window_index        int32 [U]  merge unit at each windowed position (HF `window_index`).
      reverse_index       int32 [U]  argsort(window_index): restores the original token order.
      window_segment_ids  int32 [N]  window of each row, in the *windowed* row order (HF `cu_window_seqlens`).
      win_gather, win_valid, win_scatter  `pack_segments` of the windows (windowed order).
    Qwen3 ("qwen3_vl"):
      interp_indices  int32 [N, 4]    rows of `pos_embed` (bilinear taps, align_corners=True).
      interp_weights  float32 [N, 4]  their weights.
    """
    check_family(family)
    grid = _check_grid(cfg, grid_thw)
    m = cfg.spatial_merge_size
    unit = m * m
    pos, seg = [], []
    win_index, win_seg = [], []
    interp_idx, interp_w = [], []
    n_frames = n_windows = n_units = 0
    side = int(round(cfg.num_position_embeddings ** 0.5)) if family == "qwen3_vl" else 0
    if family == "qwen3_vl" and side * side != cfg.num_position_embeddings:
        raise ValueError(f"num_position_embeddings must be a perfect square, got {cfg.num_position_embeddings}")
    vw = cfg.window_size // m // cfg.patch_size
    if family == "qwen2_5_vl" and vw < 1:
        raise ValueError(f"window_size {cfg.window_size} is smaller than one merge unit")

    for t, h, w in grid.tolist():
        rows, cols = _block_major_hw(h, w, m)
        pos.append(np.tile(np.stack([rows, cols], axis=-1), (t, 1)))
        seg.append(np.repeat(np.arange(n_frames, n_frames + t), h * w))
        n_frames += t
        if family == "qwen2_5_vl":
            order, window = _window_order(t, h // m, w // m, vw)
            win_index.append(order + n_units)
            # Dense window ids (every window is non-empty), offset to be unique over the batch.
            _, dense = np.unique(window, return_inverse=True)
            win_seg.append(np.repeat(dense.reshape(-1) + n_windows, unit))
            n_windows += int(dense.max()) + 1
            n_units += t * (h // m) * (w // m)
        else:
            h_taps, h_w = _axis_taps(rows, h, side)
            w_taps, w_w = _axis_taps(cols, w, side)
            idx = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
            wts = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4)
            interp_idx.append(np.tile(idx, (t, 1)))
            interp_w.append(np.tile(wts, (t, 1)))

    out = {
        "pos_ids": np.concatenate(pos).astype(np.int32),
        "segment_ids": np.concatenate(seg).astype(np.int32),
    }
    if family == "qwen2_5_vl":
        window_index = np.concatenate(win_index).astype(np.int32)
        out["window_index"] = window_index
        out["reverse_index"] = np.argsort(window_index).astype(np.int32)
        out["window_segment_ids"] = np.concatenate(win_seg).astype(np.int32)
        out["win_gather"], out["win_valid"], out["win_scatter"] = pack_segments(out["window_segment_ids"])
    else:
        out["interp_indices"] = np.concatenate(interp_idx).astype(np.int32)
        out["interp_weights"] = np.concatenate(interp_w).astype(np.float32)
    # The window permutation stays inside each frame group (as in HF), so frame segments keep their
    # positions in the windowed order and one layout serves both orders.
    out["full_gather"], out["full_valid"], out["full_scatter"] = pack_segments(out["segment_ids"])
    return out


def stack_packings(packed: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(pixel rows, `prepare_vision_inputs`) packings of equal shapes stacked on a new leading axis: the
    micro-batches of a step batch, or the vision shards of one (`VisionTower`)."""
    return np.stack([p for p, _ in packed]), {k: np.stack([v[k] for _, v in packed]) for k in packed[0][1]}
