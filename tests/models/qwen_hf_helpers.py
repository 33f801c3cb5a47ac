"""Tiny HF Qwen2.5-VL / Qwen3-VL models and inputs for parity tests (the `*-tiny` preset configs)."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jax
import numpy as np
import torch

IMG, VID, VS, VE = 1000, 1001, 1002, 1003
TXT = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6)
IDS = dict(image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS, vision_end_token_id=VE,
           tie_word_embeddings=False)
Q25 = dict(vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                              temporal_patch_size=2, spatial_merge_size=2, window_size=56,
                              fullatt_block_indexes=[1], out_hidden_size=64, tokens_per_second=2),
           text_config=dict(**TXT, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                    "mrope_section": [2, 3, 3]}), **IDS)
Q3 = dict(vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                             temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64,
                             num_position_embeddings=16, deepstack_visual_indexes=[0, 1]),
          text_config=dict(**TXT, head_dim=16, rope_parameters={
              "rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
          **IDS)


def hf_model(family: str, tied: bool = False, seed: int = 0):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    cls, ccls, cfg = ((Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, Q25) if family == "qwen2_5_vl"
                      else (Qwen3VLForConditionalGeneration, Qwen3VLConfig, Q3))
    cfg = copy.deepcopy(cfg)
    cfg["tie_word_embeddings"] = tied
    torch.manual_seed(seed)
    config = ccls(**cfg)
    config._attn_implementation = "eager"
    model = cls(config).eval().float()
    with torch.no_grad():  # random (not constant) norm weights and biases, so that every tensor matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def patch_size(family: str) -> int:
    return 14 if family == "qwen2_5_vl" else 16


def patchify_video(v: torch.Tensor, ps: int, tps: int = 2, m: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(T, C, H, W) frames -> HF processor-layout rows, padding T by repeating the last frame."""
    if v.shape[0] % tps:
        v = torch.cat([v, v[-1:].expand(tps - v.shape[0] % tps, -1, -1, -1)])
    t, c, h, w = v.shape
    gt, gh, gw = t // tps, h // ps, w // ps
    p = v.reshape(gt, tps, c, gh // m, m, ps, gw // m, m, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gt * gh * gw, c * tps * ps * ps).numpy(), np.array([[gt, gh, gw]])


@dataclasses.dataclass
class Sample:
    """One sequence's token ids and its visual inputs, in order of appearance."""

    ids: list[int]
    images: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    videos: list[tuple[np.ndarray, np.ndarray, float]] = dataclasses.field(default_factory=list)


class Builder:
    """Builds token sequences with image / video placeholders for one family."""

    def __init__(self, family: str, seed: int = 0):
        self.family, self.ps = family, patch_size(family)
        self.rng = torch.Generator().manual_seed(seed)

    def text(self, n: int) -> Sample:
        return Sample([int(x) for x in torch.randint(0, 900, (n,), generator=self.rng)])

    def image(self, gh: int, gw: int) -> Sample:
        img = torch.randn(1, 3, gh * self.ps, gw * self.ps, generator=self.rng)
        rows, grid = patchify_video(img, self.ps)  # the processor repeats an image tps times
        return Sample([VS] + [IMG] * (gh * gw // 4) + [VE], images=[(rows, grid)])

    def video(self, frames: int, gh: int, gw: int, spgt: float = 1.0) -> Sample:
        vid = torch.randn(frames, 3, gh * self.ps, gw * self.ps, generator=self.rng)
        rows, grid = patchify_video(vid, self.ps)
        n = gh * gw // 4
        if self.family == "qwen2_5_vl":
            ids = [VS] + [VID] * n * int(grid[0, 0]) + [VE]
        else:  # textual timestamp before each temporal group, as Qwen3-VL's processor writes
            ids = [VS] + sum(([11, 12 + g, VS] + [VID] * n + [VE] for g in range(int(grid[0, 0]))), []) + [VE]
        return Sample(ids, videos=[(rows, grid, spgt)])


def concat(*parts: Sample) -> Sample:
    out = Sample([])
    for p in parts:
        out.ids += p.ids
        out.images += p.images
        out.videos += p.videos
    return out


def batch(samples: list[Sample]) -> dict[str, Any]:
    """Left-padded HF-style batch (numpy arrays) with mm_token_type_ids."""
    seq = max(len(s.ids) for s in samples)
    ids = np.zeros((len(samples), seq), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(samples):
        ids[i, seq - len(s.ids):] = s.ids
        mask[i, seq - len(s.ids):] = 1
    out: dict[str, Any] = dict(input_ids=ids, attention_mask=mask,
                               mm_token_type_ids=(ids == IMG) * 1 + (ids == VID) * 2)
    images = [im for s in samples for im in s.images]
    videos = [v for s in samples for v in s.videos]
    if images:
        out["pixel_values"] = np.concatenate([r for r, _ in images]).astype(np.float32)
        out["image_grid_thw"] = np.concatenate([g for _, g in images])
    if videos:
        out["pixel_values_videos"] = np.concatenate([r for r, _, _ in videos]).astype(np.float32)
        out["video_grid_thw"] = np.concatenate([g for _, g, _ in videos])
        out["second_per_grid_ts"] = np.array([s for _, _, s in videos], np.float32)
    return out


def hf_forward(model, inputs: dict[str, Any], family: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """HF (logits, hidden_states)."""
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
    if family == "qwen3_vl":
        kw.pop("second_per_grid_ts", None)
    with torch.no_grad():
        out = model(**kw, output_hidden_states=True)
    return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]


def hf_logits(model, inputs: dict[str, Any], family: str) -> np.ndarray:
    return hf_forward(model, inputs, family)[0]


def ours_logits(model, inputs: dict[str, Any]) -> np.ndarray:
    return ours_forward(model, inputs)[0]


def ours_forward(model, inputs: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Our (logits, hidden_states) with host-precomputed position ids and vision inputs (the way a
    training step calls the model); the model jits its array part itself."""
    from vtg_jax.models.qwen_vl.model import prepare_inputs

    host = prepare_inputs(model.cfg, inputs["input_ids"], inputs.get("attention_mask"),
                          inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                          inputs.get("second_per_grid_ts"), inputs.get("mm_token_type_ids"))
    out = model(inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                pixel_values=inputs.get("pixel_values"), pixel_values_videos=inputs.get("pixel_values_videos"),
                position_ids=host["position_ids"], vision_inputs=host["vision_inputs"], output_hidden_states=True)
    return np.asarray(out["logits"]), [np.asarray(h) for h in out["hidden_states"]]


def max_valid_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> float:
    """max |a - b| over non-padding positions."""
    if mask is None:
        return float(np.abs(a - b).max())
    return float(np.abs(a - b)[np.asarray(mask, bool)].max())


def devices_available(n: int) -> bool:
    return len(jax.devices()) >= n
