"""The one record type every dataset adapter produces, and its jsonl form.

A record is one (video, query) pair with its ground-truth spans in seconds. Optional fields carry what
some benchmarks add: QVHighlights saliency, multiple-choice options and answers (NExT-GQA, ReXTime).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable, Iterator, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class GroundingRecord:
    """One temporal-grounding example.

    Attributes:
      video_id: key of the video in the frame store / video directory.
      duration: video length in seconds (> 0).
      query: the natural-language sentence (or question) to ground.
      spans: ground-truth intervals `((start, end), ...)` in seconds, start <= end, within [0, duration].
      qid: a unique id of the query within its dataset.
      source: the dataset name ("charades_sta", "synthetic", ...).
      saliency: QVHighlights per-clip saliency, `((clip_id, (s1, s2, s3)), ...)`.
      options: multiple-choice options, if any.
      answer: the answer (index or text), if any.
      extra: anything else an adapter wants to keep (difficulty level, split, ...).
      clip: `(start, end)` in seconds of the segment of the source video this record is about, or None
        for the whole video. With a clip (Time-R1's `video_start` / `video_end`), `duration` is the
        clip's length, `spans` are relative to the clip's start, `video_id` is `clip_video_id(stem,
        start, end)` (the frame-store key of the clip's frames) and `extra["source_video"]` names the
        source video; extraction decodes only the window (`vtg_jax.data.extract --records`).
    """

    video_id: str
    duration: float
    query: str
    spans: tuple[tuple[float, float], ...]
    qid: str = ""
    source: str = ""
    saliency: Optional[tuple[tuple[int, tuple[float, ...]], ...]] = None
    options: Optional[tuple[str, ...]] = None
    answer: Optional[Any] = None
    extra: dict = dataclasses.field(default_factory=dict, hash=False, compare=True)
    clip: Optional[tuple[float, float]] = None

    @property
    def span(self) -> tuple[float, float]:
        """The first ground-truth span (most benchmarks have exactly one)."""
        return self.spans[0]

    def validate(self) -> None:
        """Raises ValueError naming the problem if the record is malformed."""
        if not self.video_id:
            raise ValueError(f"record {self.qid!r}: empty video_id")
        if not (isinstance(self.duration, (int, float)) and math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"record {self.qid!r}: duration must be a finite number > 0, got {self.duration!r}")
        if not self.spans:
            raise ValueError(f"record {self.qid!r}: no ground-truth span")
        for s, e in self.spans:
            if not (math.isfinite(s) and math.isfinite(e)):
                raise ValueError(f"record {self.qid!r}: non-finite span {(s, e)}")
            if s > e:
                raise ValueError(f"record {self.qid!r}: reversed span {(s, e)}")
            if s < 0 or e > self.duration:
                raise ValueError(f"record {self.qid!r}: span {(s, e)} outside [0, {self.duration}]")
        if self.clip is not None:
            cs, ce = self.clip
            if not (math.isfinite(cs) and math.isfinite(ce) and 0 <= cs < ce):
                raise ValueError(f"record {self.qid!r}: clip window {self.clip} is not 0 <= start < end")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spans"] = [list(s) for s in self.spans]
        if self.saliency is not None:
            d["saliency"] = [[cid, list(scores)] for cid, scores in self.saliency]
        if self.options is not None:
            d["options"] = list(self.options)
        if self.clip is None:
            del d["clip"]
        else:
            d["clip"] = list(self.clip)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "GroundingRecord":
        saliency = d.get("saliency")
        options = d.get("options")
        clip = d.get("clip")
        return cls(
            video_id=str(d["video_id"]),
            duration=float(d["duration"]),
            query=str(d["query"]),
            spans=tuple((float(s), float(e)) for s, e in d["spans"]),
            qid=str(d.get("qid", "")),
            source=str(d.get("source", "")),
            saliency=None if saliency is None else tuple((int(c), tuple(map(float, sc))) for c, sc in saliency),
            options=None if options is None else tuple(options),
            answer=d.get("answer"),
            extra=dict(d.get("extra") or {}),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
        )


def clip_video_id(source_video: str, start: float, end: float) -> str:
    """The frame-store key of a clip of `source_video`: "<stem>@<start>-<end>" (seconds, as `%g` of the
    values rounded to milliseconds), so records of one segment share its frames and segments differ."""
    return f"{source_video}@{round(float(start), 3):g}-{round(float(end), 3):g}"


def write_jsonl(records: Iterable[GroundingRecord], path: str) -> int:
    """Writes records one JSON object per line; returns the count."""
    n = 0
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r.to_json()) + "\n")
            n += 1
    return n


def read_jsonl(path: str) -> Iterator[GroundingRecord]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield GroundingRecord.from_json(json.loads(line))


def spans_array(records: Sequence[GroundingRecord]):
    """The first span of each record as a float32 [N, 2] numpy array (for rewards and metrics)."""
    import numpy as np

    return np.asarray([r.span for r in records], np.float32).reshape(len(records), 2)
