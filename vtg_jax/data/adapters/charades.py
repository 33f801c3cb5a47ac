"""Charades-STA: `charades_sta_{train,test}.txt`, one `VIDEOID start end##sentence` per line.

The file carries no durations; they come from `durations` (a mapping, a json `{id: seconds}`, or the
Charades_v1_{train,test}.csv whose `length` column is the video length) and/or the frame-store manifest.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from vtg_jax.data.adapters._common import Collector, DatasetFormatError, LoadStats, VideoExists
from vtg_jax.data.records import GroundingRecord


def load_charades_sta(path: Any, *, durations: Any = None, manifest: Optional[Mapping[str, Any]] = None,
                      video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                      source: str = "charades_sta") -> tuple[list[GroundingRecord], LoadStats]:
    """Records, one per non-empty line; qid is `"<video>#<line index>"` (stable across runs)."""
    if durations is None and manifest is None:
        raise ValueError("Charades-STA has no durations in its txt: pass durations= (csv/json/mapping) or manifest=")
    col = Collector(source, durations=durations, manifest=manifest, video_exists=video_exists,
                    reversed_spans=reversed_spans)
    try:
        with open(os.fspath(path), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DatasetFormatError(f"cannot read Charades-STA file {path}: {e}") from e
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            col.skip("unparsable")
            continue
        vid, start, end = fields
        col.add(video_id=vid, duration=None, query=sentence, spans=[start, end], qid=f"{vid}#{i}")
    return col.result(path)
