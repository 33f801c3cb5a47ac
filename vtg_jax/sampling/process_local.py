"""Per-host sampling: each process passes its own prompts (its rows of a global batch) and gets its own
completions back; the sampler's programs run once on the global batch, its prompts sharded over the
mesh's batch axes.

How a process's rows become one global batch (`generate(..., process_local=True)`, `score(...)`):

* Shapes: every process's prompt arrays must have the shapes of an equal share of the global arrays.
  Each prepares its prompts with its share of the vision shards (`vision_shards_for` of the global
  batch, over the process count), then the processes agree on the largest prompt bucket and frames per
  vision shard (one small all-gather) and pad to them; a batch whose arrays still differ in shape (e.g.
  another frame geometry on one process) raises, naming this process's shapes.
* Layout: `parallel.host_local_to_global` puts each process's rows on its own devices (prompts, their
  M-RoPE ids, their packed video shards, the per-row sample ids), so the vision tower and the prompt
  prefill of a prompt run on the chips of the process that read it; the sampler's global row order is
  the processes' rows in device order, and a prompt's random stream depends on its record id, not on
  its row, so every layout draws the same samples.
* Results: `parallel.global_to_local` hands each process the rows it put in, in its order: nothing is
  gathered.
"""
from __future__ import annotations

import zlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.parallel.distributed import batch_spec, global_to_host, host_local_to_global, max_over_processes
from vtg_jax.parallel.rules import vision_shards_for
from vtg_jax.sampling.host import Prompts, prepare_prompts


def local_vision_shards(mesh: Mesh, local_prompts: int) -> int:
    """This process's share of the vision shards of a global batch of `local_prompts` x processes."""
    n = jax.process_count()
    shards = vision_shards_for(mesh, local_prompts * n)
    if shards % n:
        raise ValueError(f"{shards} vision shards of {local_prompts * n} prompts do not split over {n} processes")
    return shards // n


def _frames_per_shard(prompts: Prompts, inputs: dict[str, Any]) -> int:
    if prompts.pixel_values_videos is None:
        return 0
    _, gh, gw = np.asarray(inputs["video_grid_thw"], np.int64).reshape(-1, 3)[0]
    return int(prompts.pixel_values_videos.shape[-2]) // int(gh * gw)  # rows of a shard (or of the one packing)


def _shapes(prompts: Prompts) -> str:
    arrays = {"input_ids": prompts.input_ids, "position_ids": prompts.position_ids,
              "pixel_values": prompts.pixel_values, "pixel_values_videos": prompts.pixel_values_videos,
              **{f"vision_inputs.{k}": v for k, v in sorted((prompts.vision_inputs or {}).items())}}
    return ", ".join(f"{k} {None if v is None else tuple(np.shape(v))}" for k, v in arrays.items())


def agreed_prompts(cfg: QwenVLConfig, inputs: dict[str, Any], mesh: Mesh, min_bucket: int) -> Prompts:
    """`prepare_prompts` of this process's prompts, padded as every process's (module docstring)."""
    b = int(np.shape(inputs["input_ids"])[0])
    shards = local_vision_shards(mesh, b)
    # several processes stack their shards into the global [D, ...] (one shard each may be theirs)
    videos = inputs.get("pixel_values_videos") is not None and jax.process_count() > 1
    prompts = prepare_prompts(cfg, inputs, min_bucket, shards, stacked=videos)
    mine = np.asarray([prompts.length, _frames_per_shard(prompts, inputs)])
    agreed = max_over_processes(mine)
    if (mine != agreed).any():
        prompts = prepare_prompts(cfg, inputs, min_bucket, shards, min_length=int(agreed[0]),
                                  min_frames=int(agreed[1]), stacked=videos)
    if jax.process_count() > 1:
        shapes = _shapes(prompts)
        every = np.asarray(global_to_host(np.asarray([[zlib.crc32(shapes.encode()) & 0x7FFFFFFF]], np.int64)))
        if len(np.unique(every)) != 1:
            raise ValueError(f"the processes' prompt batches do not form one global batch (another frame "
                             f"geometry or image layout on some process); process {jax.process_index()} has {shapes}")
    return prompts


def prompt_specs(arrays: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """PartitionSpecs of the engine's prompt arrays with the prompts over the mesh's batch axes: the B axis
    of the token arrays and of the [3, B, P] positions, the D axis of videos packed per vision shard
    (videos in one packing stay replicated). Keys of `arrays` that are None get none."""
    axes = batch_spec(mesh)
    rows = PartitionSpec(axes[0] if len(axes) else None)
    specs: dict[str, Any] = {"input_ids": rows, "attention_mask": rows, "position_ids": PartitionSpec(None, *rows)}
    videos = arrays.get("pixel_values_videos")
    if videos is not None:
        video = rows if len(np.shape(videos)) == 3 else PartitionSpec()
        specs["pixel_values_videos"] = video
        specs["vision_inputs"] = {k: video for k in arrays["vision_inputs"]}
    return specs


def global_prompt_arrays(prompts: Prompts, mesh: Mesh) -> dict[str, Any]:
    """The engine's prompt arrays as global arrays, each process's rows (and video shards) on its devices."""
    arrays: dict[str, Any] = {"input_ids": prompts.input_ids, "attention_mask": prompts.attention_mask,
                              "position_ids": prompts.position_ids}
    if prompts.pixel_values_videos is not None:
        arrays["pixel_values_videos"] = prompts.pixel_values_videos
        arrays["vision_inputs"] = prompts.vision_inputs
    if prompts.pixel_values is not None:
        raise ValueError("per-host sampling takes video prompts only (images are packed in one list)")
    out = host_local_to_global(arrays, mesh, prompt_specs(arrays, mesh))
    out.setdefault("pixel_values_videos", None)
    out.setdefault("vision_inputs", None)
    out["pixel_values"] = None
    return out


def global_rows(x: np.ndarray, mesh: Mesh) -> jax.Array:
    """A row-major host array of this process's rows as its part of a global array (rows over the batch axes)."""
    return host_local_to_global({"x": x}, mesh)["x"]
