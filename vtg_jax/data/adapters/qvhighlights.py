"""QVHighlights (Moment-DETR jsonl): one JSON object per line with
`qid, query, duration, vid, relevant_windows [[s, e], ...], relevant_clip_ids [...], saliency_scores
[[a, b, c], ...]`. Spans are the relevant windows; saliency is kept per 2-second clip as
`((clip_id, (a, b, c)), ...)`. The test split has no windows: its lines are dropped (`missing_field`).

Saliency is auxiliary, so a broken saliency never drops the record: ids and scores of different
lengths or non-numeric scores → saliency None (`fixed/saliency_dropped`); clip ids outside
[0, ceil(D / 2)) are removed (`fixed/saliency_clipped`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from vtg_jax.data.adapters._common import (BadEntry, Collector, DatasetFormatError, LoadStats, VideoExists,
                                           read_json_or_jsonl, to_float)
from vtg_jax.data.records import GroundingRecord

CLIP_SECONDS = 2.0


def _saliency(entry: Mapping[str, Any], duration: Any, fixes: dict) -> Optional[tuple]:
    ids, scores = entry.get("relevant_clip_ids"), entry.get("saliency_scores")
    if ids is None and scores is None:
        return None
    try:
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores):
            raise BadEntry("saliency")
        pairs = [(int(to_float(c)), tuple(to_float(v) for v in sc)) for c, sc in zip(ids, scores)]
    except (BadEntry, TypeError):
        fixes["saliency_dropped"] = 1
        return None
    try:
        n_clips = math.ceil(to_float(duration) / CLIP_SECONDS)
    except BadEntry:
        return tuple(pairs)  # the record itself will be dropped for its duration
    kept = tuple(p for p in pairs if 0 <= p[0] < n_clips)
    if len(kept) != len(pairs):
        fixes["saliency_clipped"] = 1
    return kept


def load_qvhighlights(path: Any, *, manifest: Optional[Mapping[str, Any]] = None,
                      video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                      source: str = "qvhighlights") -> tuple[list[GroundingRecord], LoadStats]:
    data = read_json_or_jsonl(path)
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: QVHighlights must be jsonl (or a json list) of query objects")
    col = Collector(source, manifest=manifest, video_exists=video_exists, reversed_spans=reversed_spans)
    for i, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            col.skip("unparsable")
            continue
        fixes: dict = {}
        sal = _saliency(entry, entry.get("duration"), fixes)
        qid = entry.get("qid")
        ok = col.add(video_id=entry.get("vid"), duration=entry.get("duration"), query=entry.get("query"),
                     spans=entry.get("relevant_windows"), qid=str(qid if qid is not None else i), saliency=sal)
        if ok:
            col.stats.fixed.update(fixes)
    return col.result(path)
