"""Flat "one object per query" formats: TimeLens-Bench, Time-R1's training json, and our own jsonl.

Accepted TimeLens / Time-R1 schema (keys are tried in the order listed; the file may be a JSON list, a
JSON object keyed by video, or JSON lines):

  * flat entry: {VIDEO, DURATION, QUERY, SPAN, [QID]} where
      VIDEO    = "video" | "video_path" | "video_id" | "vid" | "video_name"  (a path becomes its stem)
      DURATION = "duration" | "video_duration" | "length"        (else the durations mapping / manifest)
      QUERY    = "query" | "problem" | "caption" | "sentence" | "question" | "description"
      SPAN     = "span" | "spans" | "timestamp" | "timestamps" | "solution" | "relevant_windows"
                 | "gt_span" | "window"; any form of `to_spans`: [s, e], [[s, e], ...],
                 {"start", "end"}, or a string with two numbers ("<answer>3.1 to 7.5</answer>")
      QID      = "qid" | "id" | "question_id"  (else "<video>#<position>")
  * grouped entry (ActivityNet-like, as TimeLens-Bench ships per video): a VIDEO (or the dict key) and
    DURATION with parallel lists QUERIES = "queries" | "sentences" | "captions" and
    SPANS = "spans" | "timestamps" → one record per (query, span) pair.
  * a dict keyed by video id: each value is a flat or grouped entry whose VIDEO defaults to the key.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping, Optional

from vtg_jax.data.adapters._common import (BadEntry, Collector, DatasetFormatError, LoadStats, VideoExists,
                                           first_present, read_json_or_jsonl, video_id_from)
from vtg_jax.data.records import GroundingRecord

VIDEO_KEYS = ("video", "video_path", "video_id", "vid", "video_name")
DURATION_KEYS = ("duration", "video_duration", "length")
QUERY_KEYS = ("query", "problem", "caption", "sentence", "question", "description")
SPAN_KEYS = ("span", "spans", "timestamp", "timestamps", "solution", "relevant_windows", "gt_span", "window")
QID_KEYS = ("qid", "id", "question_id")
GROUP_QUERY_KEYS = ("queries", "sentences", "captions")
GROUP_SPAN_KEYS = ("spans", "timestamps")


def _entries(data: Any, path: Any) -> Iterator[tuple[Optional[str], Any]]:
    """(default video id, entry) pairs from a list or a dict keyed by video id."""
    if isinstance(data, list):
        for entry in data:
            yield None, entry
    elif isinstance(data, Mapping):
        if first_present(data, VIDEO_KEYS) is not None:  # a single flat entry
            yield None, data
            return
        for key, entry in data.items():
            yield str(key), entry
    else:
        raise DatasetFormatError(f"{path}: expected a JSON list or object of grounding entries")


def _add_flat(col: Collector, entry: Mapping[str, Any], default_vid: Optional[str], position: int) -> None:
    vid = first_present(entry, VIDEO_KEYS) or default_vid
    try:
        name = video_id_from(vid)  # for default qids only; `Collector.add` re-validates the id
    except BadEntry:
        name = ""
    queries = first_present(entry, GROUP_QUERY_KEYS)
    if isinstance(queries, list):  # grouped entry
        spans = first_present(entry, GROUP_SPAN_KEYS)
        spans = spans if isinstance(spans, list) else []
        for j in range(max(len(queries), len(spans))):
            if j >= len(queries) or j >= len(spans):
                col.skip("missing_field")
                continue
            col.add(video_id=vid, duration=first_present(entry, DURATION_KEYS), query=queries[j], spans=spans[j],
                    qid=f"{name}#{j}", extra=_extra(entry))
        return
    qid = first_present(entry, QID_KEYS)
    col.add(video_id=vid, duration=first_present(entry, DURATION_KEYS), query=first_present(entry, QUERY_KEYS),
            spans=first_present(entry, SPAN_KEYS), qid=str(qid) if qid is not None else f"{name}#{position}",
            extra=_extra(entry))


def _extra(entry: Mapping[str, Any]) -> dict:
    """Keeps the original video path (the frame store may need it) and a few common scalar tags."""
    out = {}
    for k in ("video_path", "video", "difficulty", "split", "source", "category", "iou"):
        v = entry.get(k)
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


def load_flat_grounding(path: Any, *, source: str, durations: Any = None,
                        manifest: Optional[Mapping[str, Any]] = None, video_exists: Optional[VideoExists] = None,
                        reversed_spans: str = "swap") -> tuple[list[GroundingRecord], LoadStats]:
    """The shared reader behind `load_timelens` and `load_time_r1` (schema in the module docstring)."""
    data = read_json_or_jsonl(path)
    col = Collector(source, durations=durations, manifest=manifest, video_exists=video_exists,
                    reversed_spans=reversed_spans)
    for position, (default_vid, entry) in enumerate(_entries(data, path)):
        if not isinstance(entry, Mapping):
            col.skip("unparsable")
            continue
        _add_flat(col, entry, default_vid, position)
    return col.result(path)


def load_timelens(path: Any, **kwargs: Any) -> tuple[list[GroundingRecord], LoadStats]:
    """TimeLens-Bench (Charades-/ActivityNet-/QVHighlights-TimeLens) and TimeLens-100K annotations."""
    kwargs.setdefault("source", "timelens")
    return load_flat_grounding(path, **kwargs)


def load_time_r1(path: Any, **kwargs: Any) -> tuple[list[GroundingRecord], LoadStats]:
    """Time-R1's training json: a list of {"video"|"video_path", "problem"|"query",
    "solution"|"timestamp": [s, e] (or "<answer>s to e</answer>"), "duration"}."""
    kwargs.setdefault("source", "time_r1")
    return load_flat_grounding(path, **kwargs)


def load_records_jsonl(path: Any, *, manifest: Optional[Mapping[str, Any]] = None,
                       video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                       source: Optional[str] = None) -> tuple[list[GroundingRecord], LoadStats]:
    """Our own jsonl (`records.write_jsonl`), re-validated line by line under the same policy.

    Unlike `records.read_jsonl` (which raises), a bad line is skipped and counted. The stored `source`
    is kept unless `source` overrides it.
    """
    col = Collector(source or "jsonl", manifest=manifest, video_exists=video_exists, reversed_spans=reversed_spans)
    try:
        with open(os.fspath(path)) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DatasetFormatError(f"cannot read records jsonl {path}: {e}") from e
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            col.skip("unparsable")
            continue
        try:
            rec = GroundingRecord.from_json(obj)
        except (KeyError, TypeError, ValueError):
            col.skip("missing_field")
            continue
        col.source = source or rec.source or "jsonl"
        col.add(video_id=rec.video_id, duration=rec.duration, query=rec.query, spans=[list(s) for s in rec.spans],
                qid=rec.qid, saliency=rec.saliency, options=rec.options, answer=rec.answer, extra=rec.extra)
    return col.result(path)
