"""SceneTG "propose-then-annotate" data construction (LongVTG-R1 §3.4, Figure 2).

  python -m vtg_jax.data.scenetg --videos DIR|GLOB|LIST.txt --out scenetg.jsonl \
      [--generator template|qwen --checkpoint HF_DIR] [--threshold 27 --min_scene_len 0.5 --window 5]

The paper builds unambiguous grounding data from unlabeled long videos in three steps, all pluggable here:

1. Scene boundaries as candidates (`detect_scenes`): the spans come from natural cuts rather than from
   annotators, so the boundaries are frame-exact. The paper reproduces ShotCoL and merges shots
   between cuts with p > 0.3; we use PySceneDetect's content detector (HSV frame differences) instead,
   so each detected shot is one candidate scene. Any `scenedetect.SceneDetector` or any callable
   `video_path -> [(start_s, end_s), ...]` (e.g. a ShotCoL wrapper) can replace it.
2. Query generation per scene (`QueryGenerator`): the paper prompts Claude-3.7 for QA pairs with
   discriminative clues. The default `TemplateQueryGenerator` needs no model: it names measurable
   attributes of the scene's frames (dominant colour, dark/bright); `QwenCaptionGenerator`
   (scenetg_captioner.py) captions each scene with a Qwen-VL checkpoint through our sampler.
3. Uniqueness check (`uniqueness_check`): a proposal is discarded when any of the ten surrounding
   scenes (five before, five after) (i) contains all the clues of the question or (ii) contains the
   answer. Scenes are compared through text descriptions and a `UniquenessJudge`; the default
   `AttributeJudge` matches clue and answer phrases as whole words in the neighbour's description.

Bad input never stops a run; it is skipped and counted: a missing, corrupt or unreadable video is counted in
`failed_videos`, its reason logged and kept in the stats, and the run goes on.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np

from vtg_jax.data.records import GroundingRecord
from vtg_jax.data.scenes import (Proposal, Scene, SceneDetectorLike, VideoError, detect_scenes, frames_or_read,
                                 read_frames, scene_frames)


class QueryGenerator(Protocol):
    """Proposes queries for one scene; `frames` are the scene's sampled uint8 RGB frames, or None."""

    def __call__(self, video_path: str, scene: Scene, scene_index: int,
                 frames: Optional[np.ndarray]) -> list[Proposal]: ...


class UniquenessJudge(Protocol):
    """Whether a neighbour scene (given by its description) also matches the proposal: falsy when it
    does not; truthy otherwise, a string saying which condition it hits."""

    def __call__(self, proposal: Proposal, description: str) -> Union[bool, str, None]: ...


# ----------------------------------------------------------------------------------- attributes
# Hue bins in OpenCV units (degrees / 2). Chromatic names only apply to saturated, lit pixels.
_HUES = ((8, "red"), (20, "orange"), (35, "yellow"), (80, "green"), (100, "cyan"), (130, "blue"),
         (150, "purple"), (172, "pink"), (180, "red"))


def scene_attributes(frames: np.ndarray) -> dict[str, str]:
    """{"colour": the most frequent pixel colour name, "brightness": "dark" | "bright"} of uint8 RGB frames."""
    import cv2

    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got shape {frames.shape}")
    hsv = cv2.cvtColor(frames.reshape(-1, frames.shape[2], 3), cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    names = ["black", "grey", "white"] + [name for _, name in _HUES]
    label = np.searchsorted(np.asarray([b for b, _ in _HUES]), h, side="right") + 3
    label = np.where(s < 50, np.where(v > 190, 2, 1), label)  # unsaturated: grey or white
    label = np.where(v < 50, 0, label)  # too dark for any hue to show
    counts = np.bincount(label, minlength=len(names))
    by_name: dict[str, int] = {}
    for i, c in enumerate(counts):  # red occupies both ends of the hue circle
        by_name[names[i]] = by_name.get(names[i], 0) + int(c)
    colour = max(by_name, key=lambda k: by_name[k])
    return {"colour": colour, "brightness": "dark" if v.mean() < 128 else "bright"}


def describe_attributes(video_path: str, scene: Scene, scene_index: int, frames: Optional[np.ndarray]) -> str:
    """The attribute description the default judge compares proposals with, e.g. "bright scene, mostly red"."""
    a = scene_attributes(frames_or_read(video_path, scene, frames))
    return f"{a['brightness']} scene, mostly {a['colour']}"


class TemplateQueryGenerator:
    """Deterministic, model-free proposals from measurable attributes of the scene's frames.

    Query "the bright scene where the screen is mostly red": clues (brightness, colour); the answer is
    the colour (what the query is about), so a neighbour of the same colour fails condition (ii) even
    when its brightness differs.
    """

    name = "template"

    def __call__(self, video_path: str, scene: Scene, scene_index: int,
                 frames: Optional[np.ndarray]) -> list[Proposal]:
        a = scene_attributes(frames_or_read(video_path, scene, frames))
        query = f"the {a['brightness']} scene where the screen is mostly {a['colour']}"
        return [Proposal(query=query, clues=(a["brightness"], a["colour"]), answer=a["colour"])]

    describe = staticmethod(describe_attributes)


# ----------------------------------------------------------------------------------- uniqueness
def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case- and punctuation-insensitive containment ("red" is not in "reddish")."""
    p = _norm(phrase)
    return bool(p) and f" {p} " in f" {_norm(text)} "


class AttributeJudge:
    """A neighbour matches when its description holds every clue (i) or the answer (ii).

    A proposal without clues is matched by every neighbour: a query naming nothing discriminates nothing.
    """

    def __call__(self, proposal: Proposal, description: str) -> Optional[str]:
        if all(contains_phrase(description, c) for c in proposal.clues):
            return "contains all the clues"
        if proposal.answer and contains_phrase(description, proposal.answer):
            return "contains the answer"
        return None


def uniqueness_check(proposal: Proposal, scene_idx: int, scene_descriptions: Sequence[str], window: int = 5,
                     judge: Optional[UniquenessJudge] = None) -> tuple[bool, str]:
    """(passed, reason): LongVTG-R1 §3.4's check of a proposal for scene `scene_idx` against the `window`
    scenes before and after it (fewer at the ends of the video). The nearest matching neighbour is named."""
    judge = judge or AttributeJudge()
    n = len(scene_descriptions)
    if not 0 <= scene_idx < n:
        raise ValueError(f"scene_idx {scene_idx} outside [0, {n})")
    for d in range(1, window + 1):
        for j in (scene_idx - d, scene_idx + d):
            if 0 <= j < n:
                hit = judge(proposal, scene_descriptions[j])
                if hit:
                    why = hit if isinstance(hit, str) else "matches"
                    return False, f"scene {j} (offset {j - scene_idx:+d}) {why}"
    k = min(scene_idx, window) + min(n - 1 - scene_idx, window)
    return True, f"unique among {k} neighbouring scenes"


# ----------------------------------------------------------------------------------- dataset
def _describe_all(describer: Any, path: str, scenes: list[Scene], frames: list[np.ndarray]) -> list[str]:
    if hasattr(describer, "describe_scenes"):  # batched describers (e.g. a captioning model)
        return list(describer.describe_scenes(path, scenes, frames))
    return [describer(path, sc, i, f) for i, (sc, f) in enumerate(zip(scenes, frames))]


def _process_video(video_id: str, path: str, *, generator: Any, judge: Any, describer: Any, window: int,
                   detect_kw: dict, frames_fps: float, max_side: Optional[int], source: str
                   ) -> tuple[list[GroundingRecord], dict[str, int]]:
    scenes = detect_scenes(path, **detect_kw)
    all_frames, ts = read_frames(path, fps=frames_fps, max_side=max_side)
    duration = max(scenes[-1][1], float(ts[-1]))
    per_scene = [scene_frames(all_frames, ts, sc) for sc in scenes]
    descriptions = _describe_all(describer, path, scenes, per_scene)
    records, counts = [], {"scenes": len(scenes), "proposals": 0, "rejected_not_unique": 0, "kept": 0}
    gen_name = getattr(generator, "name", type(generator).__name__)
    for i, (sc, fr) in enumerate(zip(scenes, per_scene)):
        for k, p in enumerate(generator(path, sc, i, fr)):
            counts["proposals"] += 1
            ok, reason = uniqueness_check(p, i, descriptions, window, judge)
            if not ok:
                counts["rejected_not_unique"] += 1
                continue
            rec = GroundingRecord(video_id=video_id, duration=duration, query=p.query, spans=(sc,),
                                  qid=f"{video_id}_scene{i:04d}_{k}", source=source, answer=p.answer or None,
                                  extra={"scene_index": i, "num_scenes": len(scenes), "clues": list(p.clues),
                                         "generator": gen_name, "uniqueness": reason})
            rec.validate()
            records.append(rec)
            counts["kept"] += 1
    return records, counts


def build_scenetg(video_paths: Union[str, Sequence[str]], out_jsonl: str, *,
                  generator: Optional[QueryGenerator] = None, judge: Optional[UniquenessJudge] = None,
                  describer: Optional[Callable[..., str]] = None, window: int = 5, threshold: float = 27.0,
                  min_scene_len: float = 0.5, detector: Optional[SceneDetectorLike] = None,
                  frames_fps: float = 1.0, max_side: Optional[int] = 336, source: str = "scenetg",
                  progress: bool = False) -> dict[str, Any]:
    """Runs detect -> propose -> uniqueness check over videos and writes the kept GroundingRecords.

    video_paths: a directory (recursive), a glob, a .txt list or a list of paths (`extract.list_videos`);
      the video id is the file name without extension.
    describer: scene -> text the judge compares with; default the generator's own `describe` if it has
      one, else `describe_attributes`.
    Records (jsonl, `records.write_jsonl` format) have spans = [the scene], qid "<video>_scene<i>_<k>",
    answer = the proposal's answer, extra = scene index, clues, generator, uniqueness verdict.
    Returns counts {videos, scenes, proposals, rejected_not_unique, kept, failed_videos} and
    `failures` [{video_id, path, reason}].
    """
    from vtg_jax.data.extract import list_videos

    generator = generator or TemplateQueryGenerator()
    if describer is None:  # batched describers (a captioning model) are passed as themselves
        describer = generator if hasattr(generator, "describe_scenes") else getattr(generator, "describe",
                                                                                  describe_attributes)
    detect_kw = dict(threshold=threshold, min_scene_len=min_scene_len, detector=detector)
    items = list_videos(video_paths)
    stats: dict[str, Any] = {"videos": len(items), "scenes": 0, "proposals": 0, "rejected_not_unique": 0,
                             "kept": 0, "failed_videos": 0, "failures": []}
    seen: dict[str, str] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="scenetg", unit="video")
    os.makedirs(os.path.dirname(os.path.abspath(out_jsonl)), exist_ok=True)
    with open(out_jsonl, "w") as f:
        for vid, path in items:
            try:
                if vid in seen:  # qids would collide
                    raise VideoError(f"duplicate video id (also {seen[vid]})")
                seen[vid] = path
                records, counts = _process_video(
                    vid, path, generator=generator, judge=judge, describer=describer, window=window,
                    detect_kw=detect_kw, frames_fps=frames_fps, max_side=max_side, source=source)
            except Exception as e:  # noqa: BLE001 - one bad video must not end a long run
                reason = str(e) if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
                logging.warning("scenetg: skipping %s (%s)", path, reason)
                stats["failed_videos"] += 1
                stats["failures"].append({"video_id": vid, "path": path, "reason": reason})
            else:
                for r in records:
                    f.write(json.dumps(r.to_json()) + "\n")
                for k, v in counts.items():
                    stats[k] += v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kept=stats["kept"], failed=stats["failed_videos"])
    if bar is not None:
        bar.close()
    return stats


# ----------------------------------------------------------------------------------- command
def main(argv: Sequence[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    generator = None
    if f.generator == "qwen":
        if not f.checkpoint:
            raise SystemExit("--generator=qwen needs --checkpoint (a local Hugging Face Qwen-VL directory)")
        from vtg_jax.data.scenetg_captioner import QwenCaptionGenerator

        generator = QwenCaptionGenerator.from_pretrained(
            f.checkpoint, max_new_tokens=f.max_new_tokens, num_frames=f.num_frames, min_pixels=f.min_pixels,
            max_pixels=f.max_pixels)
    stats = build_scenetg(f.videos, f.out, generator=generator, window=f.window, threshold=f.threshold,
                          min_scene_len=f.min_scene_len, frames_fps=f.frames_fps, max_side=f.max_side,
                          progress=True)
    print(json.dumps(stats))


def _define_flags() -> None:
    """Flags exist only when run as a command, so importing this module registers none."""
    from absl import flags

    flags.DEFINE_string("videos", None, "directory, glob or .txt list of video paths", required=True)
    flags.DEFINE_string("out", None, "output jsonl of GroundingRecords", required=True)
    flags.DEFINE_enum("generator", "template", ["template", "qwen"], "query generator")
    flags.DEFINE_string("checkpoint", None, "local HF Qwen-VL directory (model + tokenizer) for --generator=qwen")
    flags.DEFINE_integer("max_new_tokens", 32, "caption length limit for --generator=qwen")
    flags.DEFINE_integer("num_frames", 8, "frames per scene shown to --generator=qwen")
    flags.DEFINE_integer("min_pixels", None, "smart-resize minimum for --generator=qwen (None: HF default)")
    flags.DEFINE_integer("max_pixels", None, "smart-resize maximum for --generator=qwen (None: HF default)")
    flags.DEFINE_float("threshold", 27.0, "PySceneDetect ContentDetector threshold")
    flags.DEFINE_float("min_scene_len", 0.5, "shortest scene in seconds")
    flags.DEFINE_integer("window", 5, "neighbouring scenes checked on each side (paper: 5)")
    flags.DEFINE_float("frames_fps", 1.0, "frame sampling rate for describing scenes")
    flags.DEFINE_integer("max_side", 336, "longer side of the sampled frames in pixels")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
