"""Grounded multiple-choice QA: NExT-GQA and ReXTime. Records carry `options` and `answer` (an index).

NExT-GQA: `gsub_{val,test}.json` = {video_id: {"duration", "location": {qid: [[s, e], ...]}, "fps"}}
joined on (video_id, qid) with the QA csv (`{val,test}.csv`: video_id, qid, question, answer, a0..a4,
type, ...). The csv `answer` is the answer text (NExT-GQA) or its index (NExT-QA); both resolve to an
index into (a0..a4). One record per grounded question (each location entry); a location without a csv
row drops as `missing_qa`; csv rows without a location are outside the grounded subset and are only
counted as `ignored/ungrounded_qa`. qid is `"<video_id>_<qid>"` (NExT-GQA qids repeat across videos).

ReXTime, two forms (a JSON list or JSON lines; keys tried in the order listed):
  * `rextime_{train,val}.json` = [{"vid"|"video_id", "question", "options": [...], "ans" ("A".."D" or an
    index), "answer" (text), "span": [s, e] or [[s, e], ...], "category", "qid"|"id", "duration"?}].
    That release has no duration field: pass `durations` (mapping or json/csv, e.g. the ActivityNet and
    QVHighlights duration files merged) or a manifest. An answer that resolves to no option keeps the
    raw value and counts `fixed/answer_unresolved`.
  * the ground-truth jsonl of ReXTime's evaluation code (`data/rextime_val.jsonl`, read by
    `evaluation/rextime_eval.py` of the ReXTime repository), QVHighlights-like: {"qid", "query",
    "duration", "vid", "relevant_windows": [[s, e], ...], "ans": "A".."D"}, no options. Without options
    a letter answer becomes its index (A → 0, as ReXTime's prompts letter the options), the letter kept
    in `extra["ans"]`; nothing is counted as unresolved since there is nothing to resolve against.
qid is the file's "qid" (else "rextime#<position>"); the query is "question" or "query", stripped.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Mapping, Optional, Sequence

from vtg_jax.data.adapters._common import (Collector, DatasetFormatError, LoadStats, VideoExists, first_present,
                                           is_blank, read_json, read_json_or_jsonl)
from vtg_jax.data.records import GroundingRecord

_LETTERS = "ABCDEFGHIJ"


def resolve_answer(answer: Any, options: Sequence[str]) -> tuple[Any, bool]:
    """(index, True) if `answer` is an option index, letter ("B", "(B)") or option text; else (answer, False)."""
    if isinstance(answer, bool) or answer is None:
        return answer, False
    if isinstance(answer, int):
        return (answer, True) if 0 <= answer < len(options) else (answer, False)
    text = str(answer).strip()
    norm = [str(o).strip().lower() for o in options]
    if text.lower() in norm:
        return norm.index(text.lower()), True
    if text.isdigit() and int(text) < len(options):
        return int(text), True
    letter = text.strip("()").strip().upper()
    if len(letter) == 1 and letter in _LETTERS[:len(options)]:
        return _LETTERS.index(letter), True
    return answer, False


def _read_csv(path: Any) -> list[dict]:
    try:
        with open(os.fspath(path), newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DatasetFormatError(f"cannot read NExT-GQA QA csv {path}: {e}") from e
    if rows and not {"video_id", "qid", "question"} <= set(rows[0]):
        raise DatasetFormatError(f"{path}: NExT-GQA csv needs columns video_id, qid, question, a0..a4")
    return rows


def _default_qa_csv(gsub_path: Any) -> str:
    """gsub_val.json → val.csv next to it (the NExT-GQA release layout)."""
    d, name = os.path.split(os.fspath(gsub_path))
    split = name.replace("gsub_", "").rsplit(".", 1)[0]
    return os.path.join(d, f"{split}.csv")


def load_next_gqa(path: Any, *, qa_csv: Any = None, manifest: Optional[Mapping[str, Any]] = None,
                  video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                  source: str = "next_gqa") -> tuple[list[GroundingRecord], LoadStats]:
    gsub = read_json(path)
    if not isinstance(gsub, Mapping):
        raise DatasetFormatError(f"{path}: NExT-GQA gsub json must map video ids to entries")
    rows = _read_csv(qa_csv if qa_csv is not None else _default_qa_csv(path))
    qa = {(str(r.get("video_id", "")).strip(), str(r.get("qid", "")).strip()): r for r in rows}
    col = Collector(source, manifest=manifest, video_exists=video_exists, reversed_spans=reversed_spans)
    used = set()
    for vid, entry in gsub.items():
        loc = entry.get("location") if isinstance(entry, Mapping) else None
        if not isinstance(loc, Mapping):
            col.skip("unparsable")
            continue
        for qid, spans in loc.items():
            key = (str(vid), str(qid))
            row = qa.get(key)
            if row is None:
                col.skip("missing_qa")
                continue
            used.add(key)
            options = tuple(str(row[k]).strip() for k in ("a0", "a1", "a2", "a3", "a4") if not is_blank(row.get(k)))
            answer, ok = resolve_answer(row.get("answer"), options)
            added = col.add(video_id=vid, duration=entry.get("duration"), query=row.get("question"), spans=spans,
                            qid=f"{vid}_{qid}", options=options or None, answer=answer,
                            extra={"answer_text": row.get("answer"), "type": row.get("type"), "fps": entry.get("fps")})
            if added and not ok:
                col.stats.fixed["answer_unresolved"] += 1
    col.stats.ignored["ungrounded_qa"] += len(set(qa) - used)
    return col.result(path)


def load_rextime(path: Any, *, durations: Any = None, manifest: Optional[Mapping[str, Any]] = None,
                 video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                 source: str = "rextime") -> tuple[list[GroundingRecord], LoadStats]:
    data = read_json_or_jsonl(path)
    if isinstance(data, Mapping):
        data = [data] if "qid" in data and ("query" in data or "question" in data) else list(data.values())
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: ReXTime json must be a list of questions (or JSON lines)")
    col = Collector(source, durations=durations, manifest=manifest, video_exists=video_exists,
                    reversed_spans=reversed_spans)
    for i, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            col.skip("unparsable")
            continue
        raw_opts = entry.get("options")
        options = tuple(str(o).strip() for o in raw_opts) if isinstance(raw_opts, list) and raw_opts else None
        raw_ans = first_present(entry, ("ans", "answer_idx", "answer"))
        extra = {k: entry[k] for k in ("category", "answer", "source", "ans") if isinstance(entry.get(k), str)}
        if options:
            answer, ok = resolve_answer(raw_ans, options)
        else:  # the ground-truth jsonl: a letter among ReXTime's four lettered options
            answer, ok = resolve_answer(raw_ans, _LETTERS[:4])
            answer, ok = (answer if ok else raw_ans), True
        qid = first_present(entry, ("qid", "id", "question_id"))
        added = col.add(video_id=first_present(entry, ("vid", "video_id", "video")), duration=entry.get("duration"),
                        query=first_present(entry, ("question", "query")),
                        spans=first_present(entry, ("span", "spans", "timestamp", "relevant_windows")),
                        qid=str(qid) if qid is not None else f"rextime#{i}", options=options, answer=answer,
                        extra=extra)
        if added and not ok:
            col.stats.fixed["answer_unresolved"] += 1
    return col.result(path)
