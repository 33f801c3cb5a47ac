"""Read side of the frame store written by `vtg_jax.data.extract`.

Layout of a store directory:

  store.json          family and sampling rule with its values (frame_sampling.SamplingConfig) the store
                      was made with
  manifest.jsonl      one JSON line per finished video (written last, so a line means complete data):
                      video_id, key, path, family, sampling, fps, sample_fps (the rate the frames
                      represent: Qwen2.5's second_per_grid_ts), source_fps (average), num_source_frames,
                      variable_frame_rate, duration, clip ([start, end] s of the source, or null),
                      frame_indices, timestamps (seconds from the clip start: index / source_fps, or the
                      decoder's presentation times on a variable-frame-rate video), shape [T, H, W, 3],
                      truncated (null, or for a cut-off video kept from its decodable start:
                      decoded_frames, source_frames, kept_fraction, cause; num_source_frames and
                      duration are then the decodable start's)
  errors.jsonl        one line per video that failed: video_id, path, reason
  warnings.jsonl      one line per video kept although cut short (same fields; it is in the manifest)
  frames/<key>/       one zarr3 array per video, uint8 [T, H, W, 3]: one shard file per video holding
                      per-frame chunks (zstd)

Why one array per video: clips differ in T and (after smart-resize) in H and W, so a single ragged
array would need its own offset index; per-video arrays keep shape metadata native, make a write
atomic per video (the manifest line is appended only after the array is complete) and let a rerun
simply overwrite a half-written array. Sharding keeps it to two files per video, and per-frame
chunks let a reader fetch a subset of frames without decoding the rest.

`FrameStore` holds no open handles when pickled and reopens them lazily in each process, so it can be
passed to Grain worker processes; nothing happens at import time.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
WARNINGS = "warnings.jsonl"
STORE_INFO = "store.json"
FRAMES_DIR = "frames"


def read_manifest(path: str) -> tuple[dict[str, dict[str, Any]], int]:
    """{video_id: entry} (a later line for the same id wins) and the number of unreadable lines."""
    entries: dict[str, dict[str, Any]] = {}
    bad = 0
    if not os.path.exists(path):
        return entries, 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                entries[str(d["video_id"])] = d
            except (json.JSONDecodeError, KeyError, TypeError):
                bad += 1  # e.g. a line cut short by a killed run
    return entries, bad


def array_spec(root: str, key: str) -> dict[str, Any]:
    """TensorStore spec of one video's array (without open/create options)."""
    path = os.path.join(os.path.abspath(root), FRAMES_DIR, key)
    return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}


class FrameStore:
    """Random access to extracted clips: `read(video_id) -> (frames uint8 [T,H,W,3], timestamps [T])`."""

    def __init__(self, path: str):
        self.path = path
        self._entries: dict[str, dict[str, Any]] | None = None
        self._arrays: dict[str, Any] = {}
        self._pid: int | None = None
        self.bad_manifest_lines = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def _index(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            if not os.path.isdir(self.path):
                raise FileNotFoundError(f"no frame store at {self.path}")
            self._entries, self.bad_manifest_lines = read_manifest(os.path.join(self.path, MANIFEST))
        return self._entries

    def info(self) -> dict[str, Any]:
        """store.json: the extraction settings (family, fps, pixel budget)."""
        with open(os.path.join(self.path, STORE_INFO)) as f:
            return json.load(f)

    def video_ids(self) -> list[str]:
        return sorted(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index()

    def meta(self, video_id: str) -> dict[str, Any]:
        try:
            return dict(self._index()[video_id])
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in the frame store {self.path}") from None

    def _array(self, video_id: str):
        import tensorstore as ts

        if self._pid != os.getpid():  # handles opened before a fork are not reused
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get(video_id)
        if arr is None:
            key = self.meta(video_id)["key"]
            arr = ts.open(dict(array_spec(self.path, key), open=True), read=True).result()
            self._arrays[video_id] = arr
        return arr

    def read(self, video_id: str, frames: Sequence[int] | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames uint8 [T, H, W, 3] and their timestamps in seconds (float64 [T]); optionally a subset."""
        meta = self.meta(video_id)
        arr = self._array(video_id)
        ts_all = np.asarray(meta["timestamps"], np.float64)
        if frames is None:
            data = arr.read().result()
            stamps = ts_all
        elif isinstance(frames, slice):
            data = arr[frames].read().result()
            stamps = ts_all[frames]
        else:
            idx = np.asarray(frames, np.int64)
            data = arr[idx.tolist()].read().result() if idx.size else np.zeros((0, *arr.shape[1:]), np.uint8)
            stamps = ts_all[idx]
        return np.asarray(data, np.uint8), stamps
