"""Sample tables of an ISO base media file (mp4, mov, m4v, 3gp), read from its boxes without decoding.

Extraction uses them to recognise a cut-off file (a download or copy that stopped early). decord cannot:
a file cut inside a sample does not open at all (the mov demuxer reports a "partial file" and decord
fails with "av_read_frame failed with 1094995529", FFmpeg's AVERROR_INVALIDDATA, while indexing the
packets), and a file cut between two samples opens as a shorter video without complaint. The moov box
lists every sample's byte range, so the samples that run past the end of the file are the missing
ones, the file up to the first of them is a valid shorter video, and the video track's own tables
say how many frames and seconds the whole file had.

Only what that needs is read (ISO/IEC 14496-12: hdlr, mdhd, stsz, stsc, stco/co64). Files this does
not understand (not ISO-BMFF, compact stz2 sizes, a malformed moov) give no tracks; fragmented files
(samples in moof boxes) have empty tables. Either way extraction then trusts decord, as before.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import Iterator, Optional

import numpy as np

# Box types that may open an ISO-BMFF file: anything else is not one (e.g. Matroska, AVI, MPEG-TS).
FIRST_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


@dataclasses.dataclass(frozen=True)
class Track:
    """One track's handler ('vide', 'soun', ...), media duration and samples (decode order)."""

    handler: str
    seconds: float
    offsets: np.ndarray  # int64 byte offset of each sample in the file
    sizes: np.ndarray  # int64 byte size of each sample


@dataclasses.dataclass(frozen=True)
class Mp4Index:
    """What the boxes of a file say: its size, whether its last box is whole, and its tracks."""

    file_size: int
    boxes_complete: bool  # False: the last top-level box runs past the end of the file
    has_moov: bool
    tracks: tuple[Track, ...]

    @property
    def video(self) -> Optional[Track]:
        return next((t for t in self.tracks if t.handler == "vide" and len(t.sizes)), None)

    @property
    def missing_samples(self) -> bool:
        """Whether any sample lies (partly) past the end of the file: the file was cut short."""
        return any(bool(np.any(t.offsets + t.sizes > self.file_size)) for t in self.tracks)

    def complete_prefix(self) -> int:
        """Length of the longest prefix that holds only whole samples (the file size unless cut inside one)."""
        cut = self.file_size
        for t in self.tracks:
            past = t.offsets + t.sizes > self.file_size
            if past.any():
                cut = min(cut, int(t.offsets[past].min()))
        return cut


def read_index(path: str) -> Optional[Mp4Index]:
    """The index of an ISO-BMFF file; None when the file does not start with an ISO-BMFF box."""
    size = os.path.getsize(path)
    moov, complete, pos = None, True, 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            parsed = _box_header(head, 0, size - pos)
            if parsed is None or (pos == 0 and parsed[0] not in FIRST_BOXES):
                if pos == 0:
                    return None
                complete = False  # a header cut short, or garbage after the last box
                break
            kind, header, box_size = parsed
            if pos + box_size > size:
                complete = False
                break
            if kind == b"moov":
                f.seek(pos + header)
                moov = f.read(box_size - header)
            pos += box_size
    try:
        tracks = () if moov is None else tuple(_track(moov, trak) for trak in _children(moov, 0, len(moov), b"trak"))
    except (ValueError, struct.error, IndexError):  # a table this reader does not understand: no index
        tracks = ()
    return Mp4Index(size, complete, moov is not None, tuple(t for t in tracks if t is not None))


def _box_header(buf: bytes, pos: int, room: int) -> Optional[tuple[bytes, int, int]]:
    """(type, header length, box length) of the box at buf[pos:], `room` bytes being left; None if malformed."""
    if len(buf) - pos < 8:
        return None
    size, kind = struct.unpack_from(">I4s", buf, pos)
    header = 8
    if size == 1:  # 64-bit size after the type
        if len(buf) - pos < 16:
            return None
        size, header = struct.unpack_from(">Q", buf, pos + 8)[0], 16
    elif size == 0:  # the box runs to the end of its container
        size = room
    return None if size < header else (kind, header, size)


def _children(buf: bytes, start: int, end: int, kind: bytes) -> Iterator[tuple[int, int]]:
    """(payload start, end) of each child box of type `kind` in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        parsed = _box_header(buf, pos, end - pos)
        if parsed is None or pos + parsed[2] > end:
            raise ValueError("malformed box")
        if parsed[0] == kind:
            yield pos + parsed[1], pos + parsed[2]
        pos += parsed[2]


def _child(buf: bytes, span: tuple[int, int], *path: bytes) -> tuple[int, int]:
    for kind in path:
        span = next(_children(buf, *span, kind), None)
        if span is None:
            raise ValueError(f"no {kind!r} box")
    return span


def _track(buf: bytes, trak: tuple[int, int]) -> Optional[Track]:
    mdia = _child(buf, trak, b"mdia")
    handler = buf[_child(buf, mdia, b"hdlr")[0] + 8:][:4].decode("latin-1")
    mdhd = _child(buf, mdia, b"mdhd")[0]
    if buf[mdhd] == 1:  # version 1: 64-bit creation/modification times and duration
        timescale, duration = struct.unpack_from(">IQ", buf, mdhd + 20)
    else:
        timescale, duration = struct.unpack_from(">II", buf, mdhd + 12)
    stbl = _child(buf, mdia, b"minf", b"stbl")
    try:
        stsz = _child(buf, stbl, b"stsz")[0]
    except ValueError:
        return None  # compact sizes (stz2): not read here
    uniform, count = struct.unpack_from(">II", buf, stsz + 4)
    sizes = (np.full(count, uniform, np.int64) if uniform
             else np.frombuffer(buf, ">u4", count, stsz + 12).astype(np.int64))
    stsc = _child(buf, stbl, b"stsc")[0]
    runs = np.frombuffer(buf, ">u4", 3 * struct.unpack_from(">I", buf, stsc + 4)[0], stsc + 8).reshape(-1, 3)
    wide = next(_children(buf, *stbl, b"co64"), None)
    stco = wide[0] if wide else _child(buf, stbl, b"stco")[0]
    chunks = np.frombuffer(buf, ">u8" if wide else ">u4", struct.unpack_from(">I", buf, stco + 4)[0],
                           stco + 8).astype(np.int64)
    return Track(handler, duration / timescale if timescale else 0.0, _sample_offsets(chunks, runs, sizes), sizes)


def _sample_offsets(chunks: np.ndarray, runs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Byte offset of each sample: samples are stored back to back inside chunks (stsc maps them)."""
    first_chunk = runs[:, 0].astype(np.int64) - 1
    per_chunk = np.repeat(runs[:, 1].astype(np.int64), np.diff(np.append(first_chunk, len(chunks))))
    if per_chunk.sum() < len(sizes):
        raise ValueError("the sample-to-chunk table holds fewer samples than the size table")
    chunk = np.repeat(np.arange(len(per_chunk)), per_chunk)[:len(sizes)]
    before = np.cumsum(sizes) - sizes  # bytes of all earlier samples
    chunk_first = np.cumsum(per_chunk) - per_chunk  # index of each chunk's first sample
    return chunks[chunk] + before - before[chunk_first[chunk]]
