"""Decoding for extraction: a video's sampled frames decoded a chunk at a time, and what a cut-off video needs.

`decode_video` turns a video file (or a clip window of it) into the frames a sampling rule picks, at the
rule's size, with their timestamps (what extraction stores and `python -m vtg_jax.predict` feeds the model).
`decode_resized` keeps memory to the output plus a chunk of source frames. For cut-off videos (see
extract.py's docstring): `whole_samples` gives decord a file it can open (an mp4 cut inside a sample is
copied up to its last whole sample), `open_reader` turns decord's failure to open a file into a readable
reason, `first_undecodable` finds where the decodable prefix ends after a chunk fails (`ChunkFailed`),
and `frames_duration` / `kept_fraction` measure that prefix against the whole video or its clip window.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Any, Iterator, Optional

from vtg_jax.data.ffmpeg_errors import describe_decoder_error
from vtg_jax.data.frame_sampling import SamplingConfig, is_variable_frame_rate, plan_frames
from vtg_jax.data.mp4_index import Mp4Index, read_index
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


FIRST_FRAME_TRIES = 8


def first_frame_shape(open_fresh: Any, vr: Any) -> tuple[tuple[int, int], Any]:
    """((height, width) of frame 0, a reader to go on with). decord's decoder thread runs ahead of the
    reads and keeps the first error it meets, failing every later read, frame 0's too: a file whose
    late frames are corrupt can fail this first read by a race. Each retry opens a fresh reader
    (`open_fresh()`), which restarts the race; a frame 0 that fails every time raises VideoError with
    the decoder's error, readable."""
    import decord

    for attempt in range(FIRST_FRAME_TRIES):
        try:
            return tuple(int(x) for x in vr[0].shape[:2]), vr
        except decord.DECORDError as e:
            if attempt == FIRST_FRAME_TRIES - 1:
                raise VideoError(describe_decoder_error(e)) from e
            vr = open_fresh()


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """A video's sampled frames, uint8 [T, H, W, 3] at the rule's size, and what a frame store records
    of them (`manifest_fields`)."""

    frames: Any
    frame_indices: Any  # source frame numbers
    timestamps: Any  # seconds from the start of the video (or of its window), one per frame
    sample_fps: float  # the rate the frames represent (Qwen2.5's second_per_grid_ts)
    source_fps: float
    num_source_frames: int  # the decodable ones
    variable_frame_rate: bool
    duration: float  # seconds of the video (of its window)
    clip: Optional[tuple[float, float]]
    source_shape: tuple[int, int]
    truncated: Optional[dict]  # {decoded_frames, source_frames, kept_fraction, cause} of a cut-off video

    def manifest_fields(self) -> dict[str, Any]:
        return {"sample_fps": self.sample_fps, "source_fps": self.source_fps,
                "num_source_frames": self.num_source_frames, "variable_frame_rate": self.variable_frame_rate,
                "duration": self.duration, "clip": None if self.clip is None else [float(x) for x in self.clip],
                "frame_indices": [int(i) for i in self.frame_indices],
                "timestamps": [float(t) for t in self.timestamps], "source_shape": list(self.source_shape),
                "truncated": self.truncated}


def decode_video(path: str, family: str, sampling: SamplingConfig, *, window: Optional[tuple[float, float]] = None,
                 chunk_frames: int = 4, min_decoded_fraction: float = 0.9, tmp_dir: Optional[str] = None
                 ) -> DecodedVideo:
    """The frames `sampling` picks from the video at `path` (or its `window` in seconds), resized for
    `family`. Raises VideoError with a readable reason for a missing, empty, undecodable or too-short
    file. A video whose end is missing or does not decode keeps its decodable start when that covers
    `min_decoded_fraction` of it (sampling planned again over that prefix, `truncated` says so); a copy
    of a file cut inside a sample goes to `tmp_dir` (default: the system's) while it is decoded."""
    import numpy as np

    if not os.path.isfile(path):
        raise VideoError("missing file")
    if os.path.getsize(path) == 0:
        raise VideoError("empty file (0 bytes)")
    index = read_index(path)
    with whole_samples(path, index, tmp_dir or tempfile.gettempdir()) as readable:
        vr = open_reader(readable, index)
        total, src_fps = len(vr), float(vr.get_avg_fps())
        if total <= 0:
            raise VideoError("zero-length video (no frames)")
        pts = np.asarray(vr.get_frame_timestamp(list(range(total))), np.float64)[:, 0]
        # One frame at source size: decord has no cheaper way to the frame size.
        (h0, w0), vr = first_frame_shape(lambda: open_reader(readable, index), vr)
        # A file cut short: its own tables know the frames and seconds it had; decord sees only what is left.
        cut_short = index is not None and index.missing_samples and index.video is not None
        source_frames = max(total, len(index.video.sizes)) if cut_short else total
        source_seconds = ((index.video.seconds or source_frames / src_fps) if cut_short
                          else frames_duration(pts, src_fps))
        decodable, cause, kept = total, "the file ends early", 1.0
        while True:  # each failure shortens the decodable prefix, so this ends
            if decodable < source_frames:
                kept_seconds = frames_duration(pts[:decodable], src_fps)
                kept = kept_fraction(kept_seconds, source_seconds, window)
                if kept < min_decoded_fraction:
                    raise VideoError(f"no frame decodes: {cause}" if decodable == 0 else (
                        f"truncated video: only the first {kept_seconds:.2f} s of {source_seconds:.2f} s decode "
                        f"({decodable} of {source_frames} frames, {kept:.1%} of the {'clip' if window else 'video'}, "
                        f"below min_decoded_fraction {min_decoded_fraction:g}): {cause}"))
            plan = plan_frames(sampling, family, decodable, src_fps, h0, w0, pts=pts[:decodable], window=window)
            try:
                frames = decode_resized(vr, plan.indices, plan.size, chunk_frames)
                break
            except ChunkFailed as e:
                cause = describe_decoder_error(e.__cause__)
                # decord's decoder thread keeps an error and fails later reads too: fresh readers from here
                decodable = first_undecodable(open_reader(readable, index), e.good, e.bad)
                vr = open_reader(readable, index)
                if decodable == 0:  # whatever min_decoded_fraction allows, there is nothing to sample
                    raise VideoError(f"no frame decodes: {cause}")
    video_seconds = frames_duration(pts[:decodable], src_fps)
    return DecodedVideo(
        frames=frames, frame_indices=plan.indices, timestamps=plan.timestamps, sample_fps=plan.sample_fps,
        source_fps=src_fps, num_source_frames=decodable, variable_frame_rate=plan.variable_frame_rate,
        duration=video_seconds if window is None else min(window[1], video_seconds) - window[0],
        clip=None if window is None else (float(window[0]), float(window[1])), source_shape=(h0, w0),
        truncated=None if decodable == source_frames else {
            "decoded_frames": decodable, "source_frames": source_frames, "kept_fraction": round(kept, 4),
            "cause": cause})
