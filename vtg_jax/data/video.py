"""Frame sampling and smart-resize rules of the Qwen2.5-VL and Qwen3-VL video processors.

These reproduce transformers 5.23 (QWEN_VL_PORTING_BRIEF.md §3) so that frames extracted once, ahead
of training, are the frames the HF processor would have picked from the same decoded video:

* Qwen2.5-VL (`Qwen2VLVideoProcessor.sample_frames`): n = floor(clamp(total/src_fps·fps, min_frames,
  floor(min(max_frames, total)/2)·2) / 2)·2 and indices = arange(0, total, total/n).int(), which is
  floor(i·total/n) for i < n. HF computes the arange in floating point and, for some (total, n)
  (e.g. total=17, n=14), gets one extra element equal to `total`, an out-of-range index; we keep the
  n in-range indices (tests/data/test_extract.py checks this against torch).
* Qwen3-VL (`Qwen3VLVideoProcessor.sample_frames`): n = min(max(int(total/src_fps·fps), min_frames),
  max_frames, total) and indices = linspace(0, total-1, n).round() (numpy, round-half-even). n may
  be odd; the processor repeats the last frame to make T even, we store the n sampled frames.
* smart_resize: Qwen2.5 rounds each side to a multiple of 28 with a per-frame pixel budget;
  Qwen3 uses factor 32 and applies the budget to t·h·w of the whole clip (t rounded to a multiple of
  the temporal factor), upsizing sides shorter than the factor first.

Resizing uses PIL's bicubic filter, which antialiases when downscaling like torchvision's
`antialias=True` bicubic that HF uses, but it is not bit-identical to it; for pixel parity feed the
HF processor's own arrays (it needs torchvision) rather than re-implementing its resize.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Per-family processor constants; the pixel defaults are the HF video processors' `size`."""

    name: str
    factor: int  # patch_size · merge_size
    temporal_factor: int
    min_pixels: int  # size["shortest_edge"]
    max_pixels: int  # size["longest_edge"]
    per_clip_budget: bool  # Qwen3: the min/max apply to t·h·w


FAMILIES: dict[str, FamilySpec] = {
    "qwen2_5_vl": FamilySpec("qwen2_5_vl", 28, 2, 128 * 28 * 28, 28 * 28 * 768, False),
    "qwen3_vl": FamilySpec("qwen3_vl", 32, 2, 128 * 32 * 32, 32 * 32 * 768, True),
}


def family_spec(family: str) -> FamilySpec:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def qwen2_5_num_frames(total: int, src_fps: float, fps: float = 2.0, min_frames: int = 4,
                       max_frames: int = 768, temporal_patch: int = 2) -> int:
    """Qwen2VLVideoProcessor's frame count for fps sampling (same float operations as HF)."""
    cap = math.floor(min(max_frames, total) / temporal_patch) * temporal_patch
    n = total / src_fps * fps
    n = min(max(n, min_frames), cap, total)
    return math.floor(n / temporal_patch) * temporal_patch


def qwen2_5_indices(total: int, src_fps: float, fps: float = 2.0, min_frames: int = 4, max_frames: int = 768,
                    temporal_patch: int = 2) -> np.ndarray:
    n = qwen2_5_num_frames(total, src_fps, fps, min_frames, max_frames, temporal_patch)
    if n <= 0:
        raise ValueError(f"{total} frames are too few for qwen2_5_vl sampling (needs >= {temporal_patch})")
    return (np.arange(n, dtype=np.int64) * total) // n


def qwen3_num_frames(total: int, src_fps: float, fps: float = 2.0, min_frames: int = 4,
                     max_frames: int = 768) -> int:
    """Qwen3VLVideoProcessor's frame count for fps sampling."""
    n = int(total / src_fps * fps)
    return min(max(n, min_frames), max_frames, total)


def qwen3_indices(total: int, src_fps: float, fps: float = 2.0, min_frames: int = 4,
                  max_frames: int = 768, temporal_factor: int = 2) -> np.ndarray:
    n = qwen3_num_frames(total, src_fps, fps, min_frames, max_frames)
    if n < temporal_factor:  # HF's smart_resize raises for t < temporal_factor
        raise ValueError(f"{total} frames are too few for qwen3_vl (needs >= {temporal_factor})")
    return np.linspace(0, total - 1, n).round().astype(np.int64)


def sample_indices(family: str, total: int, src_fps: float, fps: float = 2.0, min_frames: int = 4,
                   max_frames: int = 768) -> np.ndarray:
    """Source-frame indices the family's processor samples at `fps` (raises ValueError if impossible)."""
    spec = family_spec(family)
    if total <= 0 or not (math.isfinite(src_fps) and src_fps > 0):
        raise ValueError(f"cannot sample a video with {total} frames at source fps {src_fps}")
    if spec.name == "qwen2_5_vl":
        return qwen2_5_indices(total, src_fps, fps, min_frames, max_frames, spec.temporal_factor)
    return qwen3_indices(total, src_fps, fps, min_frames, max_frames, spec.temporal_factor)


def _check_aspect(height: float, width: float) -> None:
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {height}x{width}")


def smart_resize_qwen2_5(height: int, width: int, factor: int = 28, min_pixels: int = 128 * 28 * 28,
                         max_pixels: int = 28 * 28 * 768) -> tuple[int, int]:
    """Per-frame rule: sides rounded to `factor`, area rescaled into [min_pixels, max_pixels]."""
    _check_aspect(height, width)
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize_qwen3(num_frames: int, height: int, width: int, factor: int = 32, temporal_factor: int = 2,
                       min_pixels: int = 128 * 32 * 32, max_pixels: int = 32 * 32 * 768) -> tuple[int, int]:
    """Per-clip rule: the budget bounds t·h·w; sides below `factor` are upsized first."""
    if num_frames < temporal_factor:
        raise ValueError(f"t:{num_frames} must be larger than temporal_factor:{temporal_factor}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    _check_aspect(height, width)
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def target_size(family: str, num_frames: int, height: int, width: int, min_pixels: int | None = None,
                max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) the family's processor resizes a clip of `num_frames` sampled frames to."""
    spec = family_spec(family)
    lo = spec.min_pixels if min_pixels is None else int(min_pixels)
    hi = spec.max_pixels if max_pixels is None else int(max_pixels)
    if spec.per_clip_budget:
        return smart_resize_qwen3(num_frames, height, width, spec.factor, spec.temporal_factor, lo, hi)
    return smart_resize_qwen2_5(height, width, spec.factor, lo, hi)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic (PIL, antialiased on downscale) resize of uint8 [T, H, W, 3]; identity when sizes match."""
    if frames.shape[1:3] == (height, width):
        return frames
    from PIL import Image

    out = np.empty((frames.shape[0], height, width, frames.shape[3]), np.uint8)
    for i, f in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
    return out
