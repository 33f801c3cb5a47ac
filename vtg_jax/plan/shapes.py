"""The shapes one iteration of a recipe runs at, as `jax.ShapeDtypeStruct`s: no data, no pixels.

A plan needs the arrays the loop would pass to each jitted program, for the video a user plans for:

    geometry = video_geometry(config, model_cfg)        # frames, frame size, tokens of one prompt
    sampler_prompts(model_cfg, geometry, batch[, D])      # what `sampling.generate` / `score` prefill
    sft_batch(model_cfg, geometry, batch, micro[, D])     # `train.prepare_batch` of a loader batch
    rl_batch(model_cfg, geometry, batch, g, n, micro, ..) # `rollout.packing.build_rl_batch`

The video: `config.plan.video_seconds` of a `config.plan.source_height` x `source_width` video at
`config.plan.source_fps`, sampled by the recipe's own rule (`config.data`: fps, frame cap, pixel
budgets; `data.frame_sampling.plan_frames`), every video of the batch alike (the loader batches one
frame geometry). The prompt's text besides the video placeholders is `config.plan.text_tokens`
(system prompt, template and query; None = 160) plus, when timestamps are interleaved (Qwen3), 8 tokens per
temporal group ("<12.5 seconds>" and the vision start / end markers). The answer is `plan.answer_tokens`.

The layouts mirror the host functions exactly (tests/plan/test_plan.py compares them with the real
functions' outputs on a small video): the loader pads to the longest example, the sampler left-pads
prompts to a power of two (`sampling.host.bucket_length`) and pads video rows to a bucketed number of
frames (`sampling.host.frame_bucket`), completions are rounded up to `NEW_TOKEN_ROUND`. Small metadata
(the vision tower's index arrays) is computed for real, on the host, from the grid.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtg_jax.data.frame_sampling import plan_frames
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs
from vtg_jax.sampling.host import NEW_TOKEN_ROUND, bucket_length, frame_bucket, round_up
from vtg_jax.run.data_setup import sampling_config
from vtg_jax.train.rl_batch import RLBatch

DEFAULT_TEXT_TOKENS = 160  # Qwen chat template + a grounding prompt + a one-sentence query
TIMESTAMP_TOKENS_PER_GROUP = 8  # "<12.5 seconds>" + vision start / end, per temporal group (Qwen3)
SDS = jax.ShapeDtypeStruct


@dataclasses.dataclass(frozen=True)
class VideoGeometry:
    """One planned video and the prompt around it."""

    seconds: float
    frames: int  # sampled frames
    height: int  # frame size after the sampling rule's resize
    width: int
    groups: int  # temporal patch groups (frames / temporal_patch_size)
    grid_h: int  # patches per frame side
    grid_w: int
    video_tokens: int  # placeholders: groups * grid_h * grid_w / merge**2
    prompt_tokens: int  # everything before the answer
    answer_tokens: int

    @property
    def patches(self) -> int:
        """Vision rows of one video."""
        return self.groups * self.grid_h * self.grid_w

    @property
    def loader_tokens(self) -> int:
        """A loader example's length: prompt + answer (what the train step's prompt arrays span)."""
        return self.prompt_tokens + self.answer_tokens


def _interleaved(config: Any, cfg: QwenVLConfig) -> bool:
    value = str(config.data.interleave_timestamps).lower()
    return value == "true" or (value == "auto" and cfg.family == "qwen3_vl")


def video_geometry(config: Any, cfg: QwenVLConfig) -> VideoGeometry:
    """The planned video of `config.plan` sampled by `config.data`'s rule for model `cfg`."""
    p = config.plan
    total = max(1, int(round(float(p.video_seconds) * float(p.source_fps))))
    fp = plan_frames(sampling_config(config.data), cfg.family, total, float(p.source_fps),
                     int(p.source_height), int(p.source_width))
    v = cfg.vision
    frames = len(fp.indices)
    groups = math.ceil(frames / v.temporal_patch_size)
    h, w = fp.size
    gh, gw = h // v.patch_size, w // v.patch_size
    video_tokens = groups * gh * gw // v.spatial_merge_size**2
    text = DEFAULT_TEXT_TOKENS if p.text_tokens is None else int(p.text_tokens)
    if _interleaved(config, cfg):
        text += TIMESTAMP_TOKENS_PER_GROUP * groups
    return VideoGeometry(seconds=float(p.video_seconds), frames=frames, height=h, width=w, groups=groups,
                         grid_h=gh, grid_w=gw, video_tokens=video_tokens, prompt_tokens=text + video_tokens,
                         answer_tokens=int(p.answer_tokens))


def _abstract(tree: Any) -> Any:
    """numpy metadata -> ShapeDtypeStructs of the dtypes jax would give them (int64 -> int32 without x64)."""
    return jax.tree.map(lambda x: SDS(np.shape(x), jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)), tree)


def _grid(geo: VideoGeometry, videos: int, filler_groups: int = 0) -> np.ndarray:
    rows = [[geo.groups, geo.grid_h, geo.grid_w]] * videos
    if filler_groups:
        rows.append([filler_groups, geo.grid_h, geo.grid_w])
    return np.asarray(rows, np.int64)


def sampler_prompts(cfg: QwenVLConfig, geo: VideoGeometry, batch: int, vision_shards: int = 1
                    ) -> tuple[dict[str, Any], int]:
    """(prompt arrays of `engine.prefill`, prompt length P) for `batch` prompts of the loader's length;
    with `vision_shards` D > 1 their videos packed per shard, [D, rows, C] (`sampling.host.shard_videos`)."""
    length = bucket_length(geo.loader_tokens)
    per = batch // vision_shards
    groups = per * geo.groups
    filler = frame_bucket(groups) - groups
    rows = (groups + filler) * geo.grid_h * geo.grid_w
    meta = _abstract(prepare_vision_inputs(cfg.vision, cfg.family, _grid(geo, per, filler)))
    lead = () if vision_shards == 1 else (vision_shards,)
    prompts = dict(input_ids=SDS((batch, length), jnp.int32), attention_mask=SDS((batch, length), jnp.int32),
                   position_ids=SDS((3, batch, length), jnp.int32), pixel_values=None,
                   pixel_values_videos=SDS((*lead, rows, cfg.vision.patch_dim), jnp.float32),
                   vision_inputs=jax.tree.map(lambda s: SDS((*lead, *s.shape), s.dtype), meta))
    return prompts, length


def completion_buffer(max_new_tokens: int) -> int:
    """Completion slots the sampler allocates and the train step pads to (`NEW_TOKEN_ROUND` multiples)."""
    return round_up(max_new_tokens, NEW_TOKEN_ROUND)


def _packed_videos(cfg: QwenVLConfig, geo: VideoGeometry, batch: int, micro: int, shards: int) -> dict[str, Any]:
    """`train.batch.prepare_batch`'s packed videos: [A, b·P, C], or [A, D, (b/D)·P, C] with D > 1 vision
    shards (and the vision arrays' leading axes alike)."""
    b = batch // micro
    per = b // shards
    lead = (micro,) if shards == 1 else (micro, shards)
    meta = _abstract(prepare_vision_inputs(cfg.vision, cfg.family, _grid(geo, per)))
    return {"pixel_values_videos": SDS((*lead, per * geo.patches, cfg.vision.patch_dim), jnp.float32),
            "vision_inputs": jax.tree.map(lambda s: SDS((*lead, *s.shape), s.dtype), meta)}


def _check_micro(batch: int, micro: int) -> int:
    if micro < 1 or batch % micro:
        raise ValueError(f"batch size {batch} is not divisible into {micro} micro-batches")
    return batch // micro


def sft_batch(cfg: QwenVLConfig, geo: VideoGeometry, batch: int, micro: int, vision_shards: int = 1) -> dict[str, Any]:
    """`train.prepare_batch` of a loader batch: [A, b, S] text, [A, 3, b, S] positions, packed videos."""
    b, s = _check_micro(batch, micro), geo.loader_tokens
    out = {k: SDS((micro, b, s), jnp.int32) for k in ("input_ids", "attention_mask", "loss_mask")}
    out["position_ids"] = SDS((micro, 3, b, s), jnp.int32)
    out.update(_packed_videos(cfg, geo, batch, micro, vision_shards))
    return out


def rl_batch(cfg: QwenVLConfig, geo: VideoGeometry, batch: int, samples: int, completion: int, micro: int, *,
             ref_logp: bool = False, teacher_logp: bool = False, vision_shards: int = 1) -> RLBatch:
    """`rollout.packing.build_rl_batch` of `batch` prompts x `samples` completions of `completion` slots:
    the same `RLBatch`, of ShapeDtypeStructs (`ref_logp` / `teacher_logp` None unless asked for)."""
    b, p, n = _check_micro(batch, micro), geo.loader_tokens, completion
    r = b * samples
    per_token = SDS((micro, r, n), jnp.float32)
    return RLBatch(prompt_ids=SDS((micro, b, p), jnp.int32), prompt_mask=SDS((micro, b, p), jnp.int32),
                   prompt_pos=SDS((micro, 3, b, p), jnp.int32), completions=SDS((micro, r, n), jnp.int32),
                   completion_mask=SDS((micro, r, n), jnp.int32), completion_pos=SDS((micro, 3, r, n), jnp.int32),
                   old_logp=per_token, advantages=SDS((micro, r), jnp.float32), rewards=SDS((micro, r), jnp.float32),
                   off_policy=SDS((micro, r), jnp.bool_), ref_logp=per_token if ref_logp else None,
                   teacher_logp=per_token if teacher_logp else None,
                   **_packed_videos(cfg, geo, batch, micro, vision_shards))
