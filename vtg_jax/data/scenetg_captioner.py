"""Qwen-VL scene captioner: a SceneTG query generator and describer (LongVTG-R1 §3.4, query generation).

    gen = QwenCaptionGenerator.from_pretrained("/ckpt/Qwen2.5-VL-7B-Instruct")
    stats = build_scenetg("videos/", "scenetg.jsonl", generator=gen)

The paper prompts Claude-3.7 for QA pairs with discriminative clues; with no API here we caption each
scene with a local Qwen-VL checkpoint, greedily, through `vtg_jax.sampling.generate`. The caption is the
query, its content words are the clues, and there is no separate answer, so the uniqueness check applies
its condition (i) only, comparing clue words with the neighbours' captions.

Every scene is shown as exactly `num_frames` frames (repeated for short scenes) at one smart-resized
size, so all prompts of a video share shapes and the sampler compiles once; scenes are captioned in
batches of `batch_size` (the last batch filled with repeats whose outputs are dropped).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import numpy as np

from vtg_jax.data.processor import EOT, QwenVLProcessor
from vtg_jax.data.prompts import PromptTemplate
from vtg_jax.data.scenes import Proposal, Scene, frames_or_read
from vtg_jax.data.video import resize_frames, target_size
from vtg_jax.models.qwen_vl import from_pretrained
from vtg_jax.sampling import generate

CAPTION_PROMPT = ("Describe this video clip in one short sentence that names the people, objects, actions and "
                  "setting that distinguish it.")
STOPWORDS = frozenset(
    "a an the of in on at to and or with from by for as into onto over under up down out off is are was were be "
    "been being it its this that these those there here he she they we you i his her their our your him them "
    "then while who which what where when one some another other video clip scene shows showing".split())


def clue_words(text: str) -> tuple[str, ...]:
    """Lower-cased content words of a caption in first-seen order (letters only, stop words dropped)."""
    seen: dict[str, None] = {}
    for w in re.findall(r"[^\W\d_]+", text.lower()):
        if len(w) > 1 and w not in STOPWORDS:
            seen.setdefault(w)
    return tuple(seen)


def _clean(text: str) -> str:
    """One printable line: byte-level decoding of a partial character yields U+FFFD, which is dropped."""
    text = "".join(ch if ch.isprintable() and ch != "\ufffd" else " " for ch in text)
    return " ".join(text.split())


class QwenCaptionGenerator:
    """Captions scenes with a Qwen-VL model (greedy); usable as `generator` and `describer` of build_scenetg.

    Args:
      model: a `vtg_jax.models.qwen_vl.QwenVL`.
      tokenizer: a transformers / `tokenizers` tokenizer or a local directory (ignored if `processor`).
      processor: a ready `QwenVLProcessor`; by default one is built with a template whose user turn is
        the caption prompt alone.
      num_frames: frames shown per scene. min_pixels / max_pixels: smart-resize budget (None: the
        family's HF defaults). batch_size: scenes per `generate` call. mesh: passed to `generate`.
    """

    name = "qwen_caption"

    def __init__(self, model: Any, tokenizer: Any = None, *, processor: Any = None, prompt: str = CAPTION_PROMPT,
                 num_frames: int = 8, max_new_tokens: int = 32, min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None, batch_size: int = 8, mesh: Any = None):

        if processor is None:
            if tokenizer is None:
                raise ValueError("pass a tokenizer or a processor")
            template = PromptTemplate(name="scenetg_caption", user="{query}", verbatim=False,
                                      citation="LongVTG-R1 §3.4 query generation (our caption wording)")
            processor = QwenVLProcessor(model.cfg, tokenizer, template=template)
        if num_frames < 1 or batch_size < 1 or max_new_tokens < 1:
            raise ValueError("num_frames, batch_size and max_new_tokens must be >= 1")
        self.model, self.processor, self.prompt = model, processor, prompt
        self.num_frames, self.max_new_tokens, self.batch_size, self.mesh = num_frames, max_new_tokens, batch_size, mesh
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        eot = processor.enc.token_id(EOT)
        self.eos_ids = [processor.im_end_id] + ([eot] if eot is not None else [])
        self._cache: dict[tuple, str] = {}

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> "QwenCaptionGenerator":
        """Model and tokenizer from one local Hugging Face directory."""
        return cls(from_pretrained(path), path, **kwargs)

    # ------------------------------------------------------------------ inputs
    def _example(self, frames: np.ndarray, scene: Scene) -> dict[str, np.ndarray]:
        frames = np.asarray(frames, np.uint8)
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ValueError(f"scene frames must be uint8 [T>0, H, W, 3], got shape {frames.shape}")
        idx = np.linspace(0, len(frames) - 1, self.num_frames).round().astype(int)
        frames = frames[idx]
        h, w = target_size(self.processor.family, len(frames), frames.shape[1], frames.shape[2],
                           self.min_pixels, self.max_pixels)
        frames = resize_frames(frames, h, w)
        # Times relative to the scene start: the model sees a clip, not the position in the video.
        length = max(scene[1] - scene[0], 1e-3)
        ts = (np.arange(self.num_frames) + 0.5) * length / self.num_frames
        ex = self.processor(frames, ts, self.prompt)
        if "second_per_grid_ts" in ex:  # the clip's own frame rate, not the processor's nominal one
            tps = self.model.cfg.vision.temporal_patch_size
            ex["second_per_grid_ts"] = np.full_like(ex["second_per_grid_ts"], tps * length / self.num_frames)
        return ex

    def _batch_inputs(self, exs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Left-padded HF-named sampler inputs (visual rows and grid rows concatenated in batch order)."""
        n = max(len(e["input_ids"]) for e in exs)

        def left(key: str) -> np.ndarray:
            out = np.zeros((len(exs), n), np.int32)
            for i, e in enumerate(exs):
                out[i, n - len(e[key]):] = e[key]
            return out

        inputs = {k: left(k) for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        inputs["pixel_values_videos"] = np.concatenate([e["pixel_values_videos"] for e in exs])
        inputs["video_grid_thw"] = np.concatenate([e["video_grid_thw"] for e in exs]).astype(np.int64)
        if "second_per_grid_ts" in exs[0]:
            inputs["second_per_grid_ts"] = np.concatenate([e["second_per_grid_ts"] for e in exs])
        return inputs

    # ------------------------------------------------------------------ captions
    def caption_batch(self, frames: Sequence[np.ndarray], scenes: Sequence[Scene]) -> list[str]:
        """Greedy captions of scenes given their sampled uint8 RGB frames."""
        tok = self.processor.enc.tok
        exs = [self._example(f, s) for f, s in zip(frames, scenes)]
        texts: list[str] = []
        for k in range(0, len(exs), self.batch_size):
            chunk = exs[k:k + self.batch_size]
            chunk = chunk + [chunk[-1]] * (self.batch_size - len(chunk))  # one shape for every batch
            out = generate(self.model, self._batch_inputs(chunk), num_samples=1, temperature=0.0,
                           max_new_tokens=self.max_new_tokens, eos_token_ids=self.eos_ids, mesh=self.mesh)
            for j in range(min(self.batch_size, len(exs) - k)):
                ids = [int(t) for t in out["tokens"][j, 0, :out["lengths"][j, 0]] if int(t) not in self.eos_ids]
                texts.append(_clean(tok.decode(ids, skip_special_tokens=True)))
        return texts

    def describe_scenes(self, video_path: str, scenes: Sequence[Scene], frames: Sequence[np.ndarray]) -> list[str]:
        """Captions of all scenes of a video, kept for the proposals that follow (one video at a time)."""
        caps = self.caption_batch(frames, scenes)
        self._cache = {(video_path, tuple(s)): c for s, c in zip(scenes, caps)}
        return caps

    def describe(self, video_path: str, scene: Scene, scene_index: int, frames: Optional[np.ndarray]) -> str:
        key = (video_path, tuple(scene))
        if key not in self._cache:
            self._cache[key] = self.caption_batch([frames_or_read(video_path, scene, frames)], [scene])[0]
        return self._cache[key]

    def __call__(self, video_path: str, scene: Scene, scene_index: int,
                 frames: Optional[np.ndarray]) -> list[Proposal]:
        text = self.describe(video_path, scene, scene_index, frames)
        return [Proposal(query=text, clues=clue_words(text), answer="")] if text else []
