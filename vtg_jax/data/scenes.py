"""Scenes of a video for SceneTG (LongVTG-R1 §3): shot boundaries, the frames of a scene, and the query a
scene gets (`Proposal`). Shared by the propose-then-annotate builder (`scenetg`) and its Qwen-VL
captioner (`scenetg_captioner`)."""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np


Scene = tuple[float, float]
SceneDetectorLike = Union[Any, Callable[[str], Sequence[Scene]]]


class VideoError(ValueError):
    """A per-video problem; the message is the whole reason."""


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One query proposed for a scene.

    query: the sentence to ground. clues: the discriminative phrases the query relies on (condition (i)
    of the uniqueness check). answer: the scene's answer fact, "" when the generator has none (then
    only condition (i) applies).
    """

    query: str
    clues: tuple[str, ...]
    answer: str = ""


# ----------------------------------------------------------------------------------- scenes and frames
def detect_scenes(video_path: str, threshold: float = 27.0, min_scene_len: float = 0.5,
                  detector: Optional[SceneDetectorLike] = None) -> list[Scene]:
    """Scene intervals [(start_s, end_s), ...] in seconds, contiguous and covering the whole video.

    The paper (LongVTG-R1 §3.4) uses ShotCoL; we use PySceneDetect's `ContentDetector(threshold,
    min_scene_len seconds)`. `detector` replaces it: a `scenedetect.SceneDetector` instance (deep-copied
    per video, since detectors keep the previous frame) or a callable `video_path -> scenes`.
    Raises VideoError for a missing or undecodable video.
    """
    if detector is not None and not hasattr(detector, "process_frame") and callable(detector):
        scenes = [(float(s), float(e)) for s, e in detector(video_path)]
        if not scenes:
            raise VideoError("the scene detector found no scene")
        return scenes
    from scenedetect import ContentDetector, SceneManager, open_video

    if not os.path.isfile(video_path):
        raise VideoError("missing file")
    try:
        video = open_video(video_path, backend="opencv")
    except Exception as e:  # noqa: BLE001 - scenedetect raises several types for unreadable files
        raise VideoError(f"cannot open video ({type(e).__name__}: {e})") from None
    manager = SceneManager()
    manager.add_detector(copy.deepcopy(detector) if detector is not None
                         else ContentDetector(threshold=threshold, min_scene_len=float(min_scene_len)))
    if manager.detect_scenes(video) <= 0:
        raise VideoError("no decodable frames")
    # start_in_scene: a video without cuts is one scene, not none.
    scenes = [(round(a.seconds, 6), round(b.seconds, 6)) for a, b in manager.get_scene_list(start_in_scene=True)]
    if not scenes:
        raise VideoError("no decodable frames")
    return scenes


def read_frames(video_path: str, fps: float = 1.0, max_side: Optional[int] = 336) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB frames [T, H, W, 3], timestamps [T] s) sampled at about `fps`, longer side <= max_side.

    Frames are kept small because a whole long video is held in memory while its scenes are compared.
    """
    import cv2

    if not os.path.isfile(video_path):
        raise VideoError("missing file")
    cap = cv2.VideoCapture(video_path)
    src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not cap.isOpened() or not src_fps > 0:
        cap.release()
        raise VideoError("cannot open video (no frame rate)")
    frames, times, n, next_t = [], [], 0, 0.0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        t = n / src_fps
        if t + 1e-6 >= next_t:
            h, w = bgr.shape[:2]
            if max_side and max(h, w) > max_side:
                s = max_side / max(h, w)
                bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            frames.append(bgr[..., ::-1])
            times.append(t)
            next_t += 1.0 / fps
        n += 1
    cap.release()
    if not frames:
        raise VideoError("no decodable frames")
    return np.ascontiguousarray(np.stack(frames)), np.asarray(times, np.float64)


def scene_frames(frames: np.ndarray, timestamps: np.ndarray, scene: Scene) -> np.ndarray:
    """The sampled frames inside [start, end); a scene shorter than the sampling step gets its nearest one."""
    inside = (timestamps >= scene[0]) & (timestamps < scene[1])
    if inside.any():
        return frames[inside]
    return frames[[int(np.abs(timestamps - (scene[0] + scene[1]) / 2).argmin())]]


def frames_or_read(video_path: str, scene: Scene, frames: Optional[np.ndarray]) -> np.ndarray:
    if frames is not None:
        return np.asarray(frames)
    all_frames, ts = read_frames(video_path)
    return scene_frames(all_frames, ts, scene)
