"""Flat "one object per query" formats: TimeLens-Bench, TimeLens-100K, Time-R1's training json, our jsonl.

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
  * events entry (TimeLens-100K, `timelens-100k.jsonl`): {"video_path": "<subset>/<id>.mp4", "duration",
    "source": "<subset>", "events": [{"query", "span": [[s, e]] or [s, e]}, ...]} → one record per event,
    qid "<video>#<position>#<event index>", `extra["source"]` the subset; an empty `events` list counts
    `ignored/no_events`.
  * a dict keyed by video id: each value is a flat or grouped entry whose VIDEO defaults to the key.
<position> is the entry's index in the file (for jsonl: among its non-empty lines), from 0.

Queries are normalised as each dataset's own loader does, so prompts match the reference code:
  * TimeLens (Bench and 100K; `parse_query` of the TimeLens repository's dataset loader): runs of
    whitespace become one space, then leading / trailing spaces and periods are removed.
  * Time-R1 (`load_json_dataset_tg` in main.py / finetune.py of xiaomi-research/time-r1): stripped,
    lower-cased, and one trailing period removed.

Time-R1's clip window (`video_start` / `video_end`, 665 of the 2,500 entries of its train_2k5.json).
In xiaomi-research/time-r1 the training loaders (main.py / finetune.py `load_json_dataset_tg`) keep
`video_start` / `video_end` next to `solution = (timestamp[0], timestamp[1])` unchanged and
`durations = duration` unchanged; the trainer (src/time_r1/rl/timer1_trainer.py
`make_conversation_video`) passes the window to the frame reader, which decodes only
[video_start, video_end] of the source file (src/utils/vision_process.py
`_read_video_decord_w_timestamp`: frames int(video_start * fps) .. int(video_end * fps)), and the
prompt (QUESTION_TEMPLATE_TG_v1) carries no duration. So the model sees only the segment, and the
timestamps are seconds from the segment's start: in the file, `duration` equals video_end - video_start
and every timestamp lies in [0, video_end - video_start] (e.g. video_start 299.7, video_end 386.9,
timestamp [38.5, 50.4]). A record of such an entry therefore has `clip = (video_start, video_end)`,
`video_id = clip_video_id(stem, video_start, video_end)`, `extra["source_video"]` the stem,
`extra["video_path"]` the original path, `duration = video_end - video_start` (a file `duration` that
differs from it by more than 0.05 s counts `fixed/clip_duration`) and the timestamps as its spans,
unshifted, validated against the clip's length. A missing `video_start` is 0; a missing `video_end` is
the source video's length from `durations` / the manifest (`missing_duration` if unknown). A window that
is not 0 <= start < end drops as `bad_clip`. Entries whose `video_start` and `video_end` are both null
(or absent) are whole-video records (`clip` None), as before.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable, Iterator, Mapping, Optional

from vtg_jax.data.adapters._common import (BadEntry, Collector, DatasetFormatError, LoadStats, VideoExists,
                                           first_present, is_blank, read_json_or_jsonl, read_lines, to_float,
                                           video_id_from)
from vtg_jax.data.records import GroundingRecord, clip_video_id

log = logging.getLogger(__name__)
QueryFn = Callable[[Any], Any]

VIDEO_KEYS = ("video", "video_path", "video_id", "vid", "video_name")
DURATION_KEYS = ("duration", "video_duration", "length")
QUERY_KEYS = ("query", "problem", "caption", "sentence", "question", "description")
SPAN_KEYS = ("span", "spans", "timestamp", "timestamps", "solution", "relevant_windows", "gt_span", "window")
QID_KEYS = ("qid", "id", "question_id")
GROUP_QUERY_KEYS = ("queries", "sentences", "captions")
GROUP_SPAN_KEYS = ("spans", "timestamps")
CLIP_DURATION_TOLERANCE = 0.05  # seconds between a Time-R1 entry's `duration` and video_end - video_start


def timelens_query(query: Any) -> Any:
    """TimeLens's query normalisation: whitespace runs → one space; leading / trailing spaces and periods
    removed. Non-strings pass through (the collector counts them)."""
    if not isinstance(query, str):
        return query
    return re.sub(r"\s+", " ", query).strip().strip(".").strip()


def time_r1_query(query: Any) -> Any:
    """Time-R1's query normalisation: stripped, lower-cased, one trailing period removed."""
    if not isinstance(query, str):
        return query
    query = query.strip().lower()
    return query[:-1] if query.endswith(".") else query


def _same(query: Any) -> Any:
    return query


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


def _add_flat(col: Collector, entry: Mapping[str, Any], default_vid: Optional[str], position: int,
              query_fn: QueryFn = _same, clips: bool = False) -> None:
    vid = first_present(entry, VIDEO_KEYS) or default_vid
    try:
        name = video_id_from(vid)  # for default qids only; `Collector.add` re-validates the id
    except BadEntry:
        name = ""
    events = entry.get("events")
    if isinstance(events, list):  # TimeLens-100K: one record per event
        if not events:
            col.stats.ignored["no_events"] += 1
        for j, event in enumerate(events):
            if not isinstance(event, Mapping):
                col.skip("unparsable")
                continue
            qid = first_present(event, QID_KEYS)
            duration = first_present(event, DURATION_KEYS)
            col.add(video_id=vid, duration=duration if duration is not None else first_present(entry, DURATION_KEYS),
                    query=query_fn(first_present(event, QUERY_KEYS)), spans=first_present(event, SPAN_KEYS),
                    qid=str(qid) if qid is not None else f"{name}#{position}#{j}", extra=_extra(entry))
        return
    queries = first_present(entry, GROUP_QUERY_KEYS)
    if isinstance(queries, list):  # grouped entry
        spans = first_present(entry, GROUP_SPAN_KEYS)
        spans = spans if isinstance(spans, list) else []
        for j in range(max(len(queries), len(spans))):
            if j >= len(queries) or j >= len(spans):
                col.skip("missing_field")
                continue
            col.add(video_id=vid, duration=first_present(entry, DURATION_KEYS), query=query_fn(queries[j]),
                    spans=spans[j], qid=f"{name}#{j}", extra=_extra(entry))
        return
    qid = first_present(entry, QID_KEYS)
    qid = str(qid) if qid is not None else f"{name}#{position}"
    if clips and (entry.get("video_start") is not None or entry.get("video_end") is not None):
        _add_clip(col, entry, vid, name, qid, query_fn)
        return
    col.add(video_id=vid, duration=first_present(entry, DURATION_KEYS),
            query=query_fn(first_present(entry, QUERY_KEYS)), spans=first_present(entry, SPAN_KEYS), qid=qid,
            extra=_extra(entry))


def _clip_window(col: Collector, entry: Mapping[str, Any], stem: str) -> tuple[float, float]:
    """(start, end) of a Time-R1 entry's window on its source video, or BadEntry."""
    raw_start, raw_end = entry.get("video_start"), entry.get("video_end")
    try:
        start = 0.0 if raw_start is None else to_float(raw_start)
        if raw_end is None:
            end = col.lookup_duration(stem)  # the window runs to the end of the source video
            if end is None:
                raise BadEntry("missing_duration")
        else:
            end = to_float(raw_end)
    except BadEntry as e:
        raise BadEntry(e.reason if e.reason == "missing_duration" else "bad_clip") from None
    if not 0 <= start < end:
        raise BadEntry("bad_clip")
    return float(start), float(end)


def _add_clip(col: Collector, entry: Mapping[str, Any], vid: Any, stem: str, qid: str, query_fn: QueryFn) -> None:
    """A Time-R1 entry with `video_start` / `video_end` (see the module docstring)."""
    if not stem:
        col.skip("missing_field")
        return
    try:
        start, end = _clip_window(col, entry, stem)
    except BadEntry as e:
        col.skip(e.reason)
        return
    length = end - start
    extra = {**_extra(entry), "source_video": stem, "video_path": str(vid).strip()}
    stated = first_present(entry, DURATION_KEYS)
    mismatch = False
    if not is_blank(stated):
        try:
            mismatch = abs(to_float(stated) - length) > CLIP_DURATION_TOLERANCE
        except BadEntry:
            mismatch = True
    added = col.add(video_id=clip_video_id(stem, start, end), duration=length,
                    query=query_fn(first_present(entry, QUERY_KEYS)), spans=first_present(entry, SPAN_KEYS), qid=qid,
                    extra=extra, clip=(start, end))
    if added and mismatch:
        col.stats.fixed["clip_duration"] += 1


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
                        reversed_spans: str = "swap", query_fn: Optional[QueryFn] = None,
                        clips: bool = False) -> tuple[list[GroundingRecord], LoadStats]:
    """The shared reader behind `load_timelens` and `load_time_r1` (schema in the module docstring).
    `query_fn` normalises each query; `clips` reads Time-R1's `video_start` / `video_end` windows."""
    data = read_json_or_jsonl(path)
    col = Collector(source, durations=durations, manifest=manifest, video_exists=video_exists,
                    reversed_spans=reversed_spans)
    for position, (default_vid, entry) in enumerate(_entries(data, path)):
        if not isinstance(entry, Mapping):
            col.skip("unparsable")
            continue
        _add_flat(col, entry, default_vid, position, query_fn or _same, clips)
    return col.result(path)


def load_timelens(path: Any, **kwargs: Any) -> tuple[list[GroundingRecord], LoadStats]:
    """TimeLens-Bench (Charades-/ActivityNet-/QVHighlights-TimeLens: `{video: {"duration", "queries",
    "spans"}}`) and TimeLens-100K (`timelens-100k.jsonl`, one video per line with its `events`), with
    TimeLens's query normalisation."""
    kwargs.setdefault("source", "timelens")
    kwargs.setdefault("query_fn", timelens_query)
    return load_flat_grounding(path, **kwargs)


def load_time_r1(path: Any, **kwargs: Any) -> tuple[list[GroundingRecord], LoadStats]:
    """Time-R1's training json (train_2k5.json): a list of {"video", "duration", "timestamp": [s, e],
    "sentence", "qid", "video_start", "video_end", "difficulty", ...} (aliases: "video_path",
    "problem"/"query", "solution" as [s, e] or "<answer>s to e</answer>"). Entries with a
    `video_start` / `video_end` window become clip records (module docstring); queries get Time-R1's
    normalisation."""
    kwargs.setdefault("source", "time_r1")
    kwargs.setdefault("query_fn", time_r1_query)
    kwargs.setdefault("clips", True)
    return load_flat_grounding(path, **kwargs)


REQUIRED_RECORD_KEYS = ("video_id", "duration", "query", "spans")
MAX_LOGGED_LINES = 20  # per file; the rest are counted in one line


def _record_optional(obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The optional fields of one of our records (saliency, options, answer, extra, clip) as Collector
    keywords, and whether a broken saliency was dropped; BadEntry for a broken options / extra / clip."""
    out: dict[str, Any] = {"answer": obj.get("answer")}
    options = obj.get("options")
    if options is not None:
        if not isinstance(options, list):
            raise BadEntry("missing_field")
        out["options"] = tuple(str(o) for o in options)
    extra = obj.get("extra")
    if extra is not None and not isinstance(extra, Mapping):
        raise BadEntry("missing_field")
    out["extra"] = dict(extra or {})
    clip = obj.get("clip")
    if clip is not None:
        if not isinstance(clip, (list, tuple)) or len(clip) != 2:
            raise BadEntry("bad_clip")
        try:
            start, end = to_float(clip[0]), to_float(clip[1])
        except BadEntry:
            raise BadEntry("bad_clip") from None
        if not 0 <= start < end:
            raise BadEntry("bad_clip")
        out["clip"] = (start, end)
    saliency, dropped = obj.get("saliency"), False
    if saliency is not None:
        try:
            saliency = tuple((int(to_float(c)), tuple(to_float(v) for v in sc)) for c, sc in saliency)
        except (BadEntry, TypeError, ValueError):
            saliency, dropped = None, True
    out["saliency"] = saliency
    return out, dropped


def load_records_jsonl(path: Any, *, manifest: Optional[Mapping[str, Any]] = None,
                       video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                       source: Optional[str] = None) -> tuple[list[GroundingRecord], LoadStats]:
    """Our own jsonl (`records.write_jsonl`), re-validated line by line under the same policy.

    Unlike `records.read_jsonl` (which raises), a bad line is skipped, counted and logged as
    `file:line: reason`: not UTF-8 (`bad_encoding`), not a JSON object (`unparsable`), without one of
    video_id / duration / query / spans or with a malformed options / extra (`missing_field`), a bad
    `clip` (`bad_clip`), and every drop of the adapters' policy (`bad_number`, `bad_duration`,
    `no_valid_span`, ...). Video ids are kept verbatim (they are frame-store keys); a missing qid becomes
    "<video_id>#<line>"; a broken saliency is dropped (`fixed/saliency_dropped`), the record kept. The
    stored `source` is kept unless `source` overrides it.
    """
    name = os.fspath(path)
    col = Collector(source or "jsonl", manifest=manifest, video_exists=video_exists, reversed_spans=reversed_spans,
                    keep_video_ids=True)
    logged = 0

    def dropped(lineno: int, reason: Optional[str]) -> None:
        nonlocal logged
        if logged < MAX_LOGGED_LINES:
            log.warning("%s:%d: record skipped (%s)", name, lineno, reason)
        logged += 1

    for lineno, text in read_lines(path, "records jsonl"):
        if text is None:
            col.skip("bad_encoding")
            dropped(lineno, "bad_encoding: not UTF-8")
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, Mapping):
            col.skip("unparsable")
            dropped(lineno, "unparsable: not a JSON object")
            continue
        missing = [k for k in REQUIRED_RECORD_KEYS if k not in obj]
        if missing:
            col.skip("missing_field")
            dropped(lineno, f"missing_field: no {', '.join(missing)}")
            continue
        try:
            optional, saliency_dropped = _record_optional(obj)
        except BadEntry as e:
            col.skip(e.reason)
            dropped(lineno, e.reason)
            continue
        stored = obj.get("source")
        col.source = source or (str(stored) if isinstance(stored, str) and stored else "jsonl")
        qid = obj.get("qid")
        if is_blank(qid):
            qid = f"{obj.get('video_id')}#{lineno}"
        if col.add(video_id=obj.get("video_id"), duration=obj.get("duration"), query=obj.get("query"),
                   spans=obj.get("spans"), qid=str(qid), **optional):
            if saliency_dropped:
                col.stats.fixed["saliency_dropped"] += 1
        else:
            dropped(lineno, col.last_reason)
    if logged > MAX_LOGGED_LINES:
        log.warning("%s: %d more records skipped (counted, not listed)", name, logged - MAX_LOGGED_LINES)
    return col.result(path)
