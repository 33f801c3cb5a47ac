"""Host-side conversion of a loader batch into the static arrays a jitted step takes.

The vision tower runs on ONE packed list of patch rows with per-video grids (`prepare_vision_inputs`),
and visual features are scattered into the placeholder tokens in order. A padded loader batch instead
holds `pixel_values_videos [B, P, D]` (P = the patch bucket) with a patch mask. The design:

* Packing: within a micro-batch of b samples, the real rows of every sample are concatenated in sample
  order (so placeholder k of the flattened token batch takes feature k), and the b·P − n leftover rows
  go to the END as zero "filler frames". Total rows b·P are static per bucket.
* Fillers are described as one extra grid entry [k, gh, gw] with the frame geometry of the batch, so
  `prepare_vision_inputs` treats them as frames of their own: attention never crosses frame groups, so
  they never mix with real rows, and no placeholder token ever reads their features.
* Static shapes: every vision array's shape then depends only on (b·P, gh, gw): N rows, N/(gh·gw)
  frame segments of gh·gw rows, the same windows per frame. So one compilation per (token bucket,
  patch bucket), as for the text arrays; give the loader one or two boundaries per axis.
* The price: all videos of a batch must share one frame geometry (gh, gw) and P must be a multiple of
  gh·gw. Extraction resizes a fixed-resolution dataset (the synthetic benchmark, most TVG corpora at
  one budget) to one size, so this holds; a batch that breaks it raises a clear ValueError. Mixed
  resolutions would need per-segment padding of the [S, L] layouts to bucketed S and L instead.

Micro-batches (gradient accumulation) are stacked on a new leading axis [A, ...]; each gets its own
packing, so the step can `lax.scan` over them.

Vision shards (`vision_shards=D` > 1, data parallelism through the vision tower): each micro-batch's b
samples split into D groups of b/D consecutive samples, one per data shard of the mesh, each packed on
its own as above; the rows become [A, D, (b/D)·P, C] and every vision array gets the D axis after A.
The tower then runs each group on the chips that hold its samples (`models.qwen_vl.VisionTower`), so
no chip computes, stores or all-reduces another shard's vision activations.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from jax.sharding import PartitionSpec

from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs, stack_packings

TEXT_KEYS = ("input_ids", "attention_mask", "loss_mask")


def _pack_videos(cfg: QwenVLConfig, batch: Mapping[str, np.ndarray], rows: slice) -> tuple[np.ndarray, dict]:
    """Packed pixel rows [b·P, D] and vision_inputs for samples `rows` of a padded batch."""
    pix = np.asarray(batch["pixel_values_videos"][rows], np.float32)
    b, p, d = pix.shape
    pmask = np.asarray(batch.get("video_patch_mask", np.ones((len(pix), p)))[rows]).astype(bool)
    grids = np.asarray(batch["video_grid_thw"][rows]).reshape(b, -1, 3)
    gmask = np.asarray(batch.get("video_grid_mask", np.ones(grids.shape[:2]))[rows]).astype(bool)
    real = np.concatenate([g[m] for g, m in zip(grids, gmask)]).astype(np.int64)
    hw = {(int(h), int(w)) for _, h, w in real}
    if len(hw) != 1:
        raise ValueError(f"one frame geometry per batch is required (see vtg_jax/train/batch.py); got {sorted(hw)}")
    (gh, gw), = hw
    per_frame = gh * gw
    if p % per_frame:
        raise ValueError(f"patch bucket {p} is not a multiple of the rows per frame group {per_frame}")
    counts = pmask.sum(1)
    if not np.array_equal(counts, [int(np.prod(g[m], axis=1).sum()) for g, m in zip(grids, gmask)]):
        raise ValueError("video_patch_mask disagrees with video_grid_thw")
    flat = np.zeros((b * p, d), np.float32)
    n = int(counts.sum())
    flat[:n] = pix[pmask]
    filler = (b * p - n) // per_frame
    grid = real if filler == 0 else np.concatenate([real, [[filler, gh, gw]]])
    return flat, prepare_vision_inputs(cfg.vision, cfg.family, grid)


def prepare_batch(cfg: QwenVLConfig, batch: Mapping[str, np.ndarray], num_micro: int = 1,
                  vision_shards: int = 1, stacked: bool = False) -> dict[str, Any]:
    """Loader batch -> {input_ids, attention_mask, loss_mask [A, b, S]; position_ids [A, 3, b, S];
    pixel_values_videos [A, b·P, D]; vision_inputs {k: [A, ...]}} with A = num_micro, b = B / A; with
    `vision_shards` D > 1, pixel_values_videos [A, D, (b/D)·P, C] and vision_inputs {k: [A, D, ...]}
    (module docstring).

    `position_ids` are the processor's precomputed M-RoPE ids ([B, 3, S] in the loader batch).
    `stacked`: keep the D axis with one vision shard too ([A, 1, ...]): one process's share of a global
    batch of several vision shards (per-host input), which `packed_specs` then shards over the batch axes.
    """
    bsz = np.shape(batch["input_ids"])[0]
    if num_micro < 1 or bsz % num_micro:
        raise ValueError(f"batch size {bsz} is not divisible into {num_micro} micro-batches")
    b = bsz // num_micro
    out: dict[str, Any] = {k: np.asarray(batch[k], np.int32).reshape(num_micro, b, -1) for k in TEXT_KEYS}
    pos = np.asarray(batch["position_ids"], np.int32)  # [B, 3, S]
    out["position_ids"] = pos.reshape(num_micro, b, 3, -1).transpose(0, 2, 1, 3)
    if vision_shards < 1 or b % vision_shards:
        raise ValueError(f"micro-batch of {b} samples does not split into {vision_shards} vision shards")
    if "pixel_values_videos" in batch:
        if vision_shards == 1 and not stacked:
            packed = [_pack_videos(cfg, batch, slice(a * b, (a + 1) * b)) for a in range(num_micro)]
        else:
            per = b // vision_shards
            packed = [stack_packings([_pack_videos(cfg, batch, slice(a * b + d * per, a * b + (d + 1) * per))
                              for d in range(vision_shards)]) for a in range(num_micro)]
        out["pixel_values_videos"], out["vision_inputs"] = stack_packings(packed)
    return out


def packed_specs(packed: Mapping[str, Any], batch: PartitionSpec) -> dict[str, Any]:
    """The PartitionSpec of each array of a `prepare_batch` output that shards its samples (text arrays'
    b axis, the vision shards' D axis) over the mesh axes of `batch` (the logical batch axis' spec, e.g.
    `parallel.distributed.batch_spec`): how per-host input assembles a step batch from each process's
    rows (`parallel.distributed.host_local_to_global`). Without vision shards (one packing of each
    micro-batch: a mesh with one batch shard, so one process) the videos are replicated."""
    axes = batch[0] if len(batch) else None
    specs: dict[str, Any] = {k: PartitionSpec(None, axes) for k in TEXT_KEYS if k in packed}
    specs["position_ids"] = PartitionSpec(None, None, axes)
    if "pixel_values_videos" in packed:
        video = PartitionSpec(None, axes) if np.ndim(packed["pixel_values_videos"]) == 4 else PartitionSpec()
        specs["pixel_values_videos"] = video
        specs["vision_inputs"] = {k: video for k in packed["vision_inputs"]}
    return specs
