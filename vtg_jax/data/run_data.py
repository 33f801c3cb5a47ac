"""The data of a run: its splits of records, the transform that turns a record into model inputs, the
tokenizer and the buckets (built by `vtg_jax.run.data_setup.build_run_data`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from vtg_jax.data.datasets import LoadStats
from vtg_jax.data.frame_store import FrameStore
from vtg_jax.data.records import GroundingRecord


class RecordTransform:
    """record -> processor outputs with the answer, plus what an RL iteration needs of the record:
    `span` float32 [2] (its first ground-truth span, what rewards score against), `duration` float32 []
    and `record_index` int32 [] (its position in the split, -1 if not of it: the sampler's prompt id).
    Picklable (the store reopens in each worker). Raises on a record whose frames are missing; the
    loader skips and counts it."""

    def __init__(self, store_path: str, processor: Any, answer_format: str, index: Mapping[str, int]):
        self.store, self.proc, self.answer_format, self.index = FrameStore(store_path), processor, answer_format, index

    def answer(self, rec: GroundingRecord) -> str:
        """The SFT target: a record's own `extra["completion"]` (e.g. an annotator's reasoning kept by
        TVG-R1's cold-start selection) or the ground-truth span in `answer_format`."""
        if rec.extra.get("completion"):
            return str(rec.extra["completion"])
        start, end = rec.span
        return self.answer_format.format(start=start, end=end)

    def __call__(self, rec: GroundingRecord) -> dict[str, np.ndarray]:
        if rec.video_id not in self.store:
            raise KeyError(f"video {rec.video_id!r} is not in the frame store")
        frames, ts = self.store.read(rec.video_id)
        # The fps the store's frames represent (qwen-vl-utils: n / frames · video fps), which gives
        # Qwen2.5's second_per_grid_ts; stores from before it was recorded: the processor's nominal fps.
        sample_fps = self.store.meta(rec.video_id).get("sample_fps")
        out = self.proc(frames, ts, rec.query, answer=self.answer(rec), duration=rec.duration, sample_fps=sample_fps)
        out["record_index"] = np.asarray(self.index.get(rec.qid, -1), np.int32)  # -1: not of this split
        out["span"] = np.asarray(rec.span, np.float32)
        out["duration"] = np.asarray(rec.duration, np.float32)
        return out


@dataclasses.dataclass
class RunData:
    """What the loop needs of the data; `splits[name]` are lists of records (qid-unique); `load_stats`
    what reading each records file read, kept, dropped and fixed (keys: the splits given, "train_subset")."""
    splits: dict[str, list[GroundingRecord]]
    store_path: str
    processor: Any
    tokenizer: Any
    buckets: dict
    transforms: dict[str, RecordTransform]
    missing_videos: dict[str, int]
    load_stats: dict[str, LoadStats] = dataclasses.field(default_factory=dict)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=True)

    @property
    def eos_id(self) -> int:
        return int(self.processor.im_end_id)
