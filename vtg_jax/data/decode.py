"""Decoding for extraction: a video's sampled frames decoded a chunk at a time, and what a cut-off video needs.

`decode_resized` keeps memory to the output plus a chunk of source frames. For cut-off videos (see
extract.py's docstring): `whole_samples` gives decord a file it can open (an mp4 cut inside a sample is
copied up to its last whole sample), `open_reader` turns decord's failure to open a file into a readable
reason, `first_undecodable` finds where the decodable prefix ends after a chunk fails (`ChunkFailed`),
and `frames_duration` / `kept_fraction` measure that prefix against the whole video or its clip window.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Optional

from vtg_jax.data.ffmpeg_errors import describe_decoder_error
from vtg_jax.data.frame_sampling import is_variable_frame_rate
from vtg_jax.data.mp4_index import Mp4Index
from vtg_jax.data.video import resize_frames


class VideoError(ValueError):
    """A per-video problem whose message is the whole reason (no exception type prefix needed)."""


def frames_duration(pts: Any, fps: float) -> float:
    """How long frames with these presentation times last: count / fps, or their span if the rate varies."""
    if len(pts) == 0:
        return 0.0
    return float(pts[-1] - pts[0]) + 1.0 / fps if is_variable_frame_rate(pts, fps) else len(pts) / fps


def kept_fraction(kept_seconds: float, source_seconds: float, window: Optional[tuple[float, float]]) -> float:
    """The fraction of the video (or of its window) that its first `kept_seconds` cover."""
    lo, hi = (0.0, source_seconds) if window is None else (float(window[0]), min(float(window[1]), source_seconds))
    return 1.0 if hi <= lo else min(1.0, max(0.0, (min(kept_seconds, hi) - lo) / (hi - lo)))


@contextlib.contextmanager
def whole_samples(path: str, index: Optional[Mp4Index], tmp_dir: str) -> Iterator[str]:
    """`path`, or for an mp4 cut inside a sample (which decord refuses to open) a temporary copy of its
    longest prefix of whole samples, which decodes like the original up to the cut."""
    cut = None if index is None else index.complete_prefix()
    if cut is None or cut >= index.file_size:
        yield path
        return
    os.makedirs(tmp_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=os.path.splitext(path)[1])
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            while dst.tell() < cut and (buf := src.read(min(cut - dst.tell(), 1 << 22))):
                dst.write(buf)
        yield tmp
    finally:
        os.remove(tmp)


def open_reader(path: str, index: Optional[Mp4Index]) -> Any:
    """A one-thread decord reader of `path`; raises VideoError with a readable reason if it cannot open
    (`index`, the original file's sample tables, tells a cut-off mp4 from a corrupt file)."""
    import decord

    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # noqa: BLE001 - decord raises DECORDError, RuntimeError or AssertionError
        reason = describe_decoder_error(e)
        if str(e).startswith("Error reading "):  # all decord says when FFmpeg cannot open the file
            reason = f"decoder error: FFmpeg cannot open the file as a video ({e})"
        if index is not None and not index.has_moov and not index.boxes_complete:
            reason = f"truncated mp4: the file ends before its index (moov box), so no frame can be found ({reason})"
        elif index is not None and index.missing_samples:
            reason = f"truncated video: nothing before the cut decodes ({reason})"
        raise VideoError(reason) from e


class ChunkFailed(Exception):
    """A chunk of sampled frames did not decode: frame `good` did (-1: none known), `bad` ends the chunk."""

    def __init__(self, good: int, bad: int):
        super().__init__(good, bad)
        self.good, self.bad = good, bad


def decode_resized(vr: Any, indices: Any, size: tuple[int, int], chunk_frames: int) -> Any:
    """Frames `indices` of `vr` resized to `size`, decoded `chunk_frames` at a time into the output array,
    so that memory is the output plus a chunk of source frames (resize_frames works frame by frame, so
    the pixels are those of one batch decode). Raises ChunkFailed from the decoder's error."""
    import decord
    import numpy as np

    h, w = size
    out = np.empty((len(indices), h, w, 3), np.uint8)
    for start in range(0, len(indices), max(1, chunk_frames)):
        part = indices[start:start + max(1, chunk_frames)]
        try:
            frames = vr.get_batch(part.tolist()).asnumpy()
        except decord.DECORDError as e:
            raise ChunkFailed(int(indices[start - 1]) if start else -1, int(part[-1])) from e
        if frames.ndim != 4 or frames.shape[0] != len(part) or frames.shape[-1] != 3:
            raise VideoError(f"decoder returned frames of shape {frames.shape} for {len(part)} indices")
        out[start:start + len(part)] = resize_frames(np.ascontiguousarray(frames, np.uint8), h, w)
    return out


def first_undecodable(vr: Any, good: int, bad: int) -> int:
    """The first frame after `good` that fails when read in order with a fresh reader `vr`, or `bad`, the
    last frame of the chunk that failed, if none before it does (answering at most `bad` keeps the
    caller's retries shrinking the video, so they end)."""
    import decord

    for i in range(good + 1, bad):
        try:
            vr[i]  # the next frame after the first: decoded in sequence
        except decord.DECORDError:
            return i
    return bad
