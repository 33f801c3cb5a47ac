"""Host-side (numpy) work of the sampler: length buckets, left padding, M-RoPE prompt positions, stop
strings.

Static shapes (programs are jitted once per shape, so shapes must not vary per prompt): a prompt batch
is left-padded to a power-of-two bucket (`bucket_length`) and the number of new tokens is rounded up to a
multiple of `NEW_TOKEN_ROUND`, so the KV cache length is `bucket + round_up(max_new_tokens)` and a run
compiles one prefill and one decode program per (bucket, batch, visual-grid shape), not one per prompt
length. Extra left padding changes nothing numerically: pads are masked, and the positions below ignore them.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.model import prepare_inputs
from vtg_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs, stack_packings

MIN_BUCKET = 32
NEW_TOKEN_ROUND = 32
# Model inputs the sampler forwards to the prefill (everything else in `inputs` is ignored).
KNOWN_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
                "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")


def bucket_length(n: int, minimum: int = MIN_BUCKET) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


@dataclasses.dataclass
class Prompts:
    """A bucketed, left-padded prompt batch ready for the jitted prefill.

    input_ids / attention_mask [B, P]; position_ids [3, B, P] (int32); pixel arrays and vision_inputs
    as `QwenVL.embed` takes them (None when absent).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    pixel_values: np.ndarray | None
    pixel_values_videos: np.ndarray | None
    vision_inputs: dict[str, np.ndarray] | None

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def _left_pad(x: np.ndarray, length: int) -> np.ndarray:
    pad = length - x.shape[1]
    return np.pad(x, ((0, 0), (pad, 0))) if pad > 0 else x


def generation_positions(attention_mask: np.ndarray) -> np.ndarray:
    """HF generate's positions without 3-D rope ids: cumsum(mask) - 1, pads at 0, on all
    three axes. (Unlike `model.prepare_inputs`, which follows HF's plain forward and ignores padding.)"""
    pos = np.cumsum(attention_mask, axis=-1) - 1
    pos = np.where(attention_mask == 0, 0, pos)
    return np.broadcast_to(pos[None], (3, *pos.shape)).astype(np.int64)


def _check_placeholders(cfg: QwenVLConfig, ids: np.ndarray, inputs: dict[str, Any]) -> None:
    """Placeholder tokens must match the pixel rows (HF raises too); inside the jitted prefill a mismatch
    would silently misplace visual features."""
    merge2 = cfg.vision.spatial_merge_size**2
    for kind, tok in (("pixel_values", cfg.image_token_id), ("pixel_values_videos", cfg.video_token_id)):
        rows = 0 if inputs.get(kind) is None else np.shape(inputs[kind])[0]
        n_tok = int((ids == tok).sum())
        if rows // merge2 != n_tok:
            raise ValueError(f"{kind} gives {rows // merge2} visual tokens but input_ids hold {n_tok} "
                             f"placeholders (id {tok})")


def prepare_prompts(cfg: QwenVLConfig, inputs: dict[str, Any], min_bucket: int = MIN_BUCKET,
                    vision_shards: int = 1, *, min_length: int = 0, min_frames: int = 0,
                    stacked: bool = False) -> Prompts:
    """Validates `inputs` (HF names), left-pads to the bucket and computes positions like HF generate:
    `get_rope_index` when grids and mm_token_type_ids are given, else cumsum(mask) - 1.

    vision_shards D > 1: the videos of each group of B/D consecutive prompts are packed apart
    ([D, rows, C], `models.qwen_vl.VisionTower`), each padded to the same bucketed number of frames, so
    the prefill runs every data shard's videos on its own chips (`shard_videos`). Batches with images or
    with videos of several frame geometries keep one packing.

    min_length / min_frames: pad to at least this bucket / each vision shard to at least this many
    frames; stacked: pack the videos as [D, rows, C] even when D = 1 (a batch that cannot be sharded
    then raises). Per-host sampling uses the three so that every process's prompt arrays have the
    shapes of its share of one global batch (`sampling.process_local`)."""
    if "input_ids" not in inputs:
        raise ValueError("inputs must hold input_ids")
    unknown = sorted(set(inputs) - set(KNOWN_INPUTS))
    if unknown:
        raise ValueError(f"unknown inputs {unknown}; the sampler takes {list(KNOWN_INPUTS)}")
    ids = np.asarray(inputs["input_ids"]).astype(np.int64)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, S], got shape {ids.shape}")
    mask = inputs.get("attention_mask")
    mask = np.ones_like(ids) if mask is None else np.asarray(mask).astype(np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    if not mask[:, -1].all():
        raise ValueError("prompts must be LEFT-padded (attention_mask[:, -1] == 1 for every row)")
    _check_placeholders(cfg, ids, inputs)
    types = inputs.get("mm_token_type_ids")
    has_grids = inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None
    with warnings.catch_warnings():
        # Qwen2.5 without mm_token_type_ids: HF generate falls back to 1-D positions (below).
        warnings.simplefilter("ignore")
        host = prepare_inputs(cfg, ids, mask, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                              inputs.get("second_per_grid_ts"), types)
    positions = host["position_ids"] if (has_grids and types is not None) else generation_positions(mask)
    length = bucket_length(max(ids.shape[1], int(min_length)), min_bucket)

    def opt(name: str) -> np.ndarray | None:
        v = inputs.get(name)
        return None if v is None else np.asarray(v, np.float32)

    videos, vision_inputs = opt("pixel_values_videos"), host["vision_inputs"]
    shardable = videos is not None and inputs.get("pixel_values") is None \
        and len(_geometries(inputs["video_grid_thw"])) == 1
    if videos is not None and stacked and not shardable:
        raise ValueError("per-shard video packing needs prompts without images whose videos share one frame "
                         f"geometry; got geometries {sorted(_geometries(inputs['video_grid_thw']))}"
                         + (" and images" if inputs.get("pixel_values") is not None else ""))
    if shardable and (vision_shards > 1 or stacked):  # else one packing, as before
        videos, vision_inputs = shard_videos(cfg, ids, videos, inputs["video_grid_thw"], vision_shards, min_frames)
    elif videos is not None:
        videos, vision_inputs = _pad_video_rows(cfg, videos, inputs.get("image_grid_thw"),
                                                inputs.get("video_grid_thw"), vision_inputs)
    return Prompts(
        input_ids=_left_pad(ids, length).astype(np.int32),
        attention_mask=_left_pad(mask, length).astype(np.int32),
        position_ids=_left_pad(positions.reshape(3 * ids.shape[0], -1), length)
        .reshape(3, ids.shape[0], length).astype(np.int32),
        pixel_values=opt("pixel_values"),
        pixel_values_videos=videos,
        vision_inputs=vision_inputs,
    )


def frame_bucket(n: int) -> int:
    """Smallest m·2^e >= n with m in {4, 5, 6, 7} (4 buckets per octave: at most ~25% padding)."""
    if n <= 4:
        return max(int(n), 1)
    e = max(int(n - 1).bit_length() - 3, 0)
    m = -(-int(n) // (1 << e))
    return m << e


def _pad_video_rows(cfg: QwenVLConfig, videos: np.ndarray, image_grid: Any, video_grid: Any,
                    vision_inputs: dict) -> tuple[np.ndarray, dict]:
    """Video patch rows padded to a bucketed number of frames with zero "filler frames" after the real
    ones, described by one extra grid entry, so that batches of different total video length compile
    the same prefill / score program (`frame_bucket`). No placeholder token reads the fillers' features
    (they come after every real feature) and attention never crosses frames, so outputs are unchanged
    (tests/sampling/test_sampler_behaviour.py). Mixed frame geometries are left unpadded."""
    vgrid = np.asarray(video_grid, np.int64).reshape(-1, 3)
    hw = _geometries(vgrid)
    if len(hw) != 1:
        return videos, vision_inputs
    (gh, gw), = hw
    frames = len(videos) // (gh * gw)
    filler = frame_bucket(frames) - frames
    if filler == 0:
        return videos, vision_inputs
    grids = [g for g in (None if image_grid is None else np.asarray(image_grid, np.int64).reshape(-1, 3), vgrid)
             if g is not None]
    padded, grid = _with_filler(videos, np.concatenate(grids), filler, gh, gw)
    return padded, prepare_vision_inputs(cfg.vision, cfg.family, grid)


def _geometries(video_grid: Any) -> set[tuple[int, int]]:
    return {(int(h), int(w)) for _, h, w in np.asarray(video_grid, np.int64).reshape(-1, 3)}


def _with_filler(rows: np.ndarray, grid: np.ndarray, frames: int, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` followed by `frames` zero filler frames of gh x gw patches, and `grid` with their entry."""
    if frames == 0:
        return rows, grid
    filler = np.zeros((frames * gh * gw, rows.shape[1]), rows.dtype)
    return np.concatenate([rows, filler]), np.concatenate([grid, np.asarray([[frames, gh, gw]], np.int64)])


def shard_videos(cfg: QwenVLConfig, ids: np.ndarray, videos: np.ndarray, video_grid: Any,
                 shards: int, min_frames: int = 0) -> tuple[np.ndarray, dict]:
    """HF-layout video rows of B prompts ([N, C] in placeholder order, one grid row per video or per
    temporal group) -> [D, rows, C] and vision_inputs {k: [D, ...]}: shard d packs the videos of prompts
    d*B/D .. (d+1)*B/D - 1 (found by counting each prompt's video placeholders), every shard padded with
    filler frames to the same `frame_bucket` of the largest shard, or to `min_frames` when more (one
    frame geometry per batch, as the loader batches)."""
    b = ids.shape[0]
    if b % shards:
        raise ValueError(f"{b} prompts do not split into {shards} vision shards")
    grid = np.asarray(video_grid, np.int64).reshape(-1, 3)
    hw = _geometries(grid)
    if len(hw) != 1:
        raise ValueError(f"vision shards need one frame geometry per batch; got {sorted(hw)}")
    (gh, gw), = hw
    merge2 = cfg.vision.spatial_merge_size**2
    rows_per_prompt = (ids == cfg.video_token_id).sum(1) * merge2
    ends = np.cumsum(grid.prod(1))  # grid rows are consumed in placeholder order
    per = b // shards
    bounds = np.concatenate([[0], np.cumsum(rows_per_prompt)[per - 1::per]])
    parts, grids = [], []
    for d in range(shards):
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        first, last = np.searchsorted(ends, lo, side="right"), np.searchsorted(ends, hi, side="left")
        if hi > lo and ((lo and ends[first - 1] != lo) or ends[last] != hi):
            raise ValueError("video_grid_thw does not split at the prompts' boundaries")
        parts.append(videos[lo:hi])
        grids.append(grid[first:last + 1] if hi > lo else grid[:0])  # text-only prompts: filler frames only
    frames = max(max(frame_bucket(len(p) // (gh * gw)) for p in parts), int(min_frames))
    packed = []
    for part, g in zip(parts, grids):
        part, g = _with_filler(part, g, frames - len(part) // (gh * gw), gh, gw)
        packed.append((part, prepare_vision_inputs(cfg.vision, cfg.family, g)))
    return stack_packings(packed)


# ---------------------------------------------------------------------------------------------------
# Stop strings (checked on the host after decoding).


def _first_stop(tokens: Sequence[int], stops: Sequence[str], decode: Callable[[list[int]], str]) -> int:
    """Smallest n such that decode(tokens[:n]) contains a stop string, or 0 if none does.

    Containment is monotone in n (a longer prefix decodes to a string extending the shorter one for
    byte-level BPE, up to incomplete UTF-8 at the end), so a binary search needs O(log N) decodes.
    """
    toks = list(int(t) for t in tokens)
    if not toks or not any(s in decode(toks) for s in stops):
        return 0
    lo, hi = 1, len(toks)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(toks[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def apply_stop_strings(
    out: dict[str, np.ndarray], stop_strings: Sequence[str], decode: Callable[[list[int]], str] | None,
    pad_id: int,
) -> None:
    """Truncates, in place, every sequence right after the token that completes a stop string (that
    token is kept, like HF's StopStringCriteria) and marks it "stop". Tokens after the cut become
    `pad_id`, their log-probs 0. The decode loop itself runs to EOS / max_new_tokens; stop strings only
    shorten the returned sequences (they can't save decode steps: text needs a tokenizer on the host)."""
    if not stop_strings:
        return
    if decode is None:
        raise ValueError("stop_strings need decode_fn (e.g. tokenizer.decode) to turn tokens into text")
    tokens, lengths, reasons = out["tokens"], out["lengths"], out["finish_reason"]
    for idx in np.ndindex(*lengths.shape):
        n = _first_stop(tokens[idx][: lengths[idx]], stop_strings, decode)
        if n == 0:
            continue
        tokens[idx][n:] = pad_id
        for key in ("logprobs", "sampling_logprobs"):
            out[key][idx][n:] = 0.0
        lengths[idx] = n
        reasons[idx] = "stop"
