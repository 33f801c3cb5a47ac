"""Which frames of a video the model sees, and at what size: the `qwen-vl-utils` rule and the HF one.

Two rules, chosen by `SamplingConfig.rule` (extraction's `--sampling`):

* ``qwen_vl_utils`` (the default): what the Qwen model cards and the TVG code bases (Time-R1, TVG-R1,
  TimeLens) do: `qwen_vl_utils.fetch_video` (0.0.14) picks and sizes the frames, then the HF processor
  runs with `do_sample_frames=False, do_resize=False`. Its behaviour, reproduced here:
    - frame count (`smart_nframes`): with `nframes`, that number rounded to an even count; else
      n = total/video_fps·fps clamped to [ceil2(min_frames), floor2(max_frames or min(768, total))] and
      to total, then floored to an even count; 2 <= n <= total or the video is refused.
    - a window (`video_start` / `video_end`, our records' `clip`): frames ceil(start·fps) ..
      min(floor(end·fps), total-1) (`calculate_video_frame_range`), and the count above is of that range.
    - indices: `torch.linspace(first, last, n).round()` in float32 (`linspace_round_like_torch`).
    - size: one budget per FRAME: `smart_resize(h, w, factor=2·image_patch_size, min_pixels,
      max_pixels')` where max_pixels' = min(max_pixels, max(min(768·factor², total_pixels/n·2),
      int(1.05·min_pixels))); so long videos get smaller frames (total_pixels, default
      128000·factor²·0.9, bounds the whole clip). image_patch_size is 14 for Qwen2.5-VL, 16 for Qwen3-VL.
    - the fps actually sampled, n / frames_in_range · video_fps: Qwen2.5-VL's
      `second_per_grid_ts = temporal_patch_size / sample_fps` (the HF processor is called with it).
* ``transformers``: the HF video processors' own `sample_frames` + `smart_resize`
  (`vtg_jax/data/video.py`), for users who feed videos straight to the HF processor; Qwen2.5-VL's
  `second_per_grid_ts` then uses the nominal fps, as that processor does.

Frame times: a constant-frame-rate video's frame k is at k / video_fps (what both references assume). A
variable-frame-rate video (a decoder timestamp more than half a frame away from k / average fps) is
sampled by TIME instead: n target times evenly over the window, each taking the frame whose
presentation time is nearest, and the manifest keeps the decoder's presentation times
(`plan_frames(..., pts=...)`). Index sampling on such a file (both references do it) is off by
seconds: 10 fps for 2 s then 50 fps puts frame 20 at 0.69 s instead of 2.0 s.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np

from vtg_jax.data.video import family_spec, sample_indices, target_size

RULES = ("qwen_vl_utils", "transformers")
IMAGE_PATCH_SIZE = {"qwen2_5_vl": 14, "qwen3_vl": 16}  # qwen-vl-utils' `image_patch_size` per family
FRAME_FACTOR = 2
VIDEO_MIN_TOKENS, VIDEO_MAX_TOKENS = 128, 768
DEFAULT_MAX_FRAMES = 768
MODEL_SEQ_LEN = 128000  # qwen-vl-utils' default of the MODEL_SEQ_LEN environment variable


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The knobs of frame sampling (None: the rule's default for the family).

    fps / nframes: frames per second of video, or a fixed even count (qwen_vl_utils only; 0 = use fps).
    min_frames / max_frames: clamp of the fps count. min_pixels / max_pixels: per-frame budget
    (qwen_vl_utils) or per-clip budget (transformers, Qwen3). total_pixels: budget of the whole clip
    (qwen_vl_utils only).
    """

    rule: str = "qwen_vl_utils"
    fps: float = 2.0
    nframes: int = 0
    min_frames: int = 4
    max_frames: int = DEFAULT_MAX_FRAMES  # qwen-vl-utils' default min(768, total) samples the same
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    total_pixels: Optional[float] = None

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"sampling rule must be one of {RULES}, got {self.rule!r}")
        if self.nframes and self.rule != "qwen_vl_utils":
            raise ValueError("nframes is a qwen_vl_utils option; the transformers rule samples by fps")
        if not self.nframes and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.total_pixels is not None and self.rule != "qwen_vl_utils":
            raise ValueError("total_pixels is a qwen_vl_utils option")

    def describe(self) -> dict[str, Any]:
        """The settings a frame store records (store.json): a store made with others is refused."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """What to decode: source `indices`, their `timestamps` (s, relative to the window start), the
    output `size` (h, w) and the fps the frames represent (`sample_fps`: Qwen2.5's second_per_grid_ts)."""

    indices: np.ndarray
    timestamps: np.ndarray
    size: tuple[int, int]
    sample_fps: float
    variable_frame_rate: bool


# ------------------------------------------------------------------ qwen-vl-utils 0.0.14


def _round2(x: float) -> int:
    return round(x / FRAME_FACTOR) * FRAME_FACTOR


def _ceil2(x: float) -> int:
    return math.ceil(x / FRAME_FACTOR) * FRAME_FACTOR


def _floor2(x: float) -> int:
    return math.floor(x / FRAME_FACTOR) * FRAME_FACTOR


def qwen_vl_utils_nframes(total: int, video_fps: float, *, fps: float = 2.0, nframes: int = 0, min_frames: int = 4,
                          max_frames: Optional[int] = None) -> int:
    """`smart_nframes`: the number of frames of a range of `total` frames (raises ValueError if < 2)."""
    if nframes:
        n = _round2(nframes)
    else:
        lo = _ceil2(min_frames)
        hi = _floor2(max_frames if max_frames is not None else min(DEFAULT_MAX_FRAMES, total))
        n = _floor2(min(min(max(total / video_fps * fps, lo), hi), total))
    if not FRAME_FACTOR <= n <= total:
        raise ValueError(f"cannot sample {n} frames from {total} (qwen_vl_utils needs {FRAME_FACTOR} <= n <= total)")
    return n


def qwen_vl_utils_frame_range(total: int, video_fps: float, start: Optional[float] = None,
                              end: Optional[float] = None) -> tuple[int, int]:
    """`calculate_video_frame_range`: first and last frame index of the window [start, end] seconds."""
    if start is None and end is None:
        return 0, total - 1
    length = total / video_fps
    first = math.ceil(max(0.0, min(start, length)) * video_fps) if start is not None else 0
    last = min(math.floor(max(0.0, min(end, length)) * video_fps), total - 1) if end is not None else total - 1
    if first >= last:
        raise ValueError(f"window {start}-{end} s holds no frames of a {length:.2f} s video "
                         f"(frames {first} to {last} at {video_fps:g} fps)")
    return first, last


def linspace_round_like_torch(first: int, last: int, n: int) -> np.ndarray:
    """`torch.linspace(first, last, n).round().long()` bit for bit, without torch.

    torch (CPU, float32) takes step = float32((last - first) / (n - 1)), evaluates the first half as
    first + i·step and the second half as last - (n-1-i)·step, each rounded once to float32, then
    rounds half to even. Long videos make this matter: at 100k frames float32 spacing is 0.008 and
    many positions lie that close to a half.
    """
    if n == 1:
        return np.array([first], np.int64)
    lo, hi = np.float32(first), np.float32(last)
    step = np.float64(np.float32((hi - lo) / np.float32(n - 1)))
    i = np.arange(n, dtype=np.float64)
    exact = np.where(i < n // 2, np.float64(lo) + i * step, np.float64(hi) - (n - 1 - i) * step)
    return np.round(exact.astype(np.float32)).astype(np.int64)


def qwen_vl_utils_smart_resize(height: int, width: int, factor: int, min_pixels: float,
                               max_pixels: float) -> tuple[int, int]:
    """qwen-vl-utils' `smart_resize` (differs from the HF one: sides floored to `factor` at least first)."""
    if max_pixels < min_pixels:  # qwen-vl-utils asserts this
        raise ValueError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar, w_bar = max(factor, _round_to(height, factor)), max(factor, _round_to(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _round_to(x: float, factor: int) -> int:
    return round(x / factor) * factor


def qwen_vl_utils_size(family: str, num_frames: int, height: int, width: int, *, min_pixels: Optional[float] = None,
                       max_pixels: Optional[float] = None, total_pixels: Optional[float] = None) -> tuple[int, int]:
    """(h, w) `fetch_video` resizes each of `num_frames` frames of (height, width) to."""
    factor = IMAGE_PATCH_SIZE[family_spec(family).name] * 2
    lo = VIDEO_MIN_TOKENS * factor * factor if min_pixels is None else min_pixels
    total = MODEL_SEQ_LEN * factor * factor * 0.9 if total_pixels is None else total_pixels
    cap = max(min(VIDEO_MAX_TOKENS * factor * factor, total / num_frames * FRAME_FACTOR), int(lo * 1.05))
    hi = cap if max_pixels is None else min(max_pixels, cap)
    return qwen_vl_utils_smart_resize(height, width, factor, lo, hi)


# ------------------------------------------------------------------ one plan for both rules


def is_variable_frame_rate(pts: np.ndarray, video_fps: float) -> bool:
    """Whether any decoder timestamp is more than half a frame away from index / average fps."""
    pts = np.asarray(pts, np.float64)
    return bool(pts.size) and bool(np.max(np.abs(pts - pts[0] - np.arange(pts.size) / video_fps)) > 0.5 / video_fps)


def _nearest(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the presentation time nearest each target (the earlier frame on a tie)."""
    right = np.clip(np.searchsorted(pts, targets), 1, len(pts) - 1)
    left = right - 1
    return np.where(targets - pts[left] <= pts[right] - targets, left, right).astype(np.int64)


def plan_frames(cfg: SamplingConfig, family: str, total: int, video_fps: float, height: int, width: int, *,
                pts: Optional[Sequence[float]] = None, window: Optional[tuple[float, float]] = None) -> FramePlan:
    """The frames and size of one video (or of its `window` in seconds) under `cfg`; ValueError if impossible.

    `pts`: the decoder's presentation time of every frame (None: a constant frame rate is assumed).
    """
    if total <= 0 or not (math.isfinite(video_fps) and video_fps > 0):
        raise ValueError(f"cannot sample a video with {total} frames at {video_fps} fps")
    pts_arr = None if pts is None else np.asarray(pts, np.float64).reshape(-1)
    if pts_arr is not None and len(pts_arr) != total:
        raise ValueError(f"{len(pts_arr)} frame timestamps for {total} frames")
    vfr = pts_arr is not None and is_variable_frame_rate(pts_arr, video_fps)
    origin = 0.0 if window is None else float(window[0])
    if vfr:
        idx, sample_fps = _plan_by_time(cfg, family, pts_arr, video_fps, window)
        stamps = pts_arr[idx] - origin
    else:
        idx, sample_fps = _plan_by_index(cfg, family, total, video_fps, window)
        stamps = idx / video_fps - origin
    if cfg.rule == "qwen_vl_utils":
        size = qwen_vl_utils_size(family, len(idx), height, width, min_pixels=cfg.min_pixels,
                                  max_pixels=cfg.max_pixels, total_pixels=cfg.total_pixels)
    else:
        size = target_size(family, len(idx), height, width, cfg.min_pixels, cfg.max_pixels)
    return FramePlan(idx, np.maximum(stamps, 0.0), size, float(sample_fps), vfr)


def _plan_by_index(cfg: SamplingConfig, family: str, total: int, video_fps: float,
                   window: Optional[tuple[float, float]]) -> tuple[np.ndarray, float]:
    if cfg.rule == "transformers":
        if window is not None:
            raise ValueError("clip windows need the qwen_vl_utils rule (the HF processors take whole videos)")
        return sample_indices(family, total, video_fps, cfg.fps, cfg.min_frames, cfg.max_frames), cfg.fps
    first, last = qwen_vl_utils_frame_range(total, video_fps, *(window or (None, None)))
    count = last - first + 1
    n = qwen_vl_utils_nframes(count, video_fps, fps=cfg.fps, nframes=cfg.nframes, min_frames=cfg.min_frames,
                              max_frames=cfg.max_frames)
    return linspace_round_like_torch(first, last, n), n / max(count, 1e-6) * video_fps


def _plan_by_time(cfg: SamplingConfig, family: str, pts: np.ndarray, video_fps: float,
                  window: Optional[tuple[float, float]]) -> tuple[np.ndarray, float]:
    """Variable frame rate: the frame count of the window's duration, frames nearest evenly spaced times."""
    lo, hi = (pts[0], pts[-1]) if window is None else (max(window[0], pts[0]), min(window[1], pts[-1]))
    inside = np.nonzero((pts >= lo - 1e-9) & (pts <= hi + 1e-9))[0]
    if len(inside) < 2 or hi <= lo:
        raise ValueError(f"window {window} holds fewer than 2 frames of the video")
    count = len(inside)
    span_fps = count / (hi - lo + 1.0 / video_fps)  # the window's own average frame rate
    if cfg.rule == "transformers":
        n = len(sample_indices(family, count, span_fps, cfg.fps, cfg.min_frames, cfg.max_frames))
        sample_fps = cfg.fps
    else:
        n = qwen_vl_utils_nframes(count, span_fps, fps=cfg.fps, nframes=cfg.nframes, min_frames=cfg.min_frames,
                                  max_frames=cfg.max_frames)
        sample_fps = n / count * span_fps
    return _nearest(pts, np.linspace(lo, hi, n)), sample_fps
