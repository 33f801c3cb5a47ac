"""Shared validation for every annotation adapter.

All adapters funnel raw entries through one `Collector`, so the policy below is applied identically to
every dataset and every drop or fix is counted in `LoadStats` (bad input is skipped and counted, never
silently wrong, never a crash of a long preprocessing run).

Validation policy (per raw entry = one (video, query) pair):
  * missing / empty video id, query or span, or a span that is not a pair → drop, `missing_field`.
  * a duration or span bound that is NaN, inf, a bool or not a number → drop, `bad_number`.
  * no duration in the annotation nor in the durations mapping / manifest → drop, `missing_duration`.
  * duration <= 0 → drop, `bad_duration`.
  * reversed span (start > end) → swapped and counted `fixed/swapped_span` (policy "swap", the default:
    such spans are annotation typos whose interval is still right); policy "drop" discards the span.
  * a span overlapping [0, D] only partly → clipped to [0, D], `fixed/clipped_span`.
  * a span entirely outside [0, D] (end <= 0 or start >= D) → that span is removed; a record left with
    no span is dropped (`no_valid_span`); a record that keeps other spans counts `fixed/removed_span`.
  * `video_exists(video_id)` false, or video id absent from the frame-store manifest → drop, `missing_video`.
  * a line that is not valid UTF-8 → drop, `bad_encoding`; a line that is not JSON → drop, `unparsable`.
  * a clip window (Time-R1's `video_start` / `video_end`, our records' `clip`) that is not
    0 <= start < end with finite bounds → drop, `bad_clip`.
A whole file that cannot be read or whose top-level structure is not the format raises
`DatasetFormatError`; that is a configuration mistake, not a bad line.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from vtg_jax.data.records import GroundingRecord

VideoExists = Callable[[str], bool]


class DatasetFormatError(ValueError):
    """The annotation file is unreadable or not in the format its adapter expects."""


class BadEntry(Exception):
    """Internal: one raw entry is unusable; `reason` is the stats key it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class LoadStats:
    """What an adapter read, kept, dropped (by reason) and fixed (by kind)."""

    read: int = 0
    kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fixed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ignored: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, int]:
        """Flat `{"read", "kept", "dropped/<reason>", "fixed/<kind>", "ignored/<kind>"}`, zeros omitted."""
        out = {"read": self.read, "kept": self.kept}
        for prefix, counter in (("dropped", self.dropped), ("fixed", self.fixed), ("ignored", self.ignored)):
            out.update({f"{prefix}/{k}": v for k, v in sorted(counter.items()) if v})
        return out

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


# ---------------------------------------------------------------- value coercion


def is_blank(x: Any) -> bool:
    return x is None or (isinstance(x, str) and not x.strip())


def to_float(x: Any) -> float:
    """A finite float, or BadEntry: `missing_field` for None/"", `bad_number` for anything else odd."""
    if is_blank(x):
        raise BadEntry("missing_field")
    if isinstance(x, bool):
        raise BadEntry("bad_number")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise BadEntry("bad_number") from None
    if not math.isfinite(v):
        raise BadEntry("bad_number")
    return v


def to_text(x: Any) -> str:
    if is_blank(x) or isinstance(x, (dict, list)):
        raise BadEntry("missing_field")
    return str(x).strip()


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR_RE = re.compile(rf"({_NUM})\s*(?:-|–|to|,|\s)\s*({_NUM})")


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (int, float, str))


def to_spans(raw: Any) -> list[tuple[float, float]]:
    """Parses the span spellings found in public annotations into `[(start, end), ...]`.

    Accepted: `[s, e]`, `[[s, e], ...]`, `{"start": s, "end": e}` (or a list of those), and a string
    holding two numbers ("12.5 to 20", "12.5-20", "<answer>12.5, 20</answer>").
    """
    if is_blank(raw):
        raise BadEntry("missing_field")
    if isinstance(raw, str):
        m = _PAIR_RE.search(raw)
        if not m:
            raise BadEntry("bad_number")
        return [(to_float(m.group(1)), to_float(m.group(2)))]
    if isinstance(raw, Mapping):
        s = raw.get("start", raw.get("begin"))
        e = raw.get("end", raw.get("stop"))
        return [(to_float(s), to_float(e))]
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise BadEntry("missing_field")
        if all(_is_scalar(v) for v in raw):
            if len(raw) != 2:
                raise BadEntry("missing_field")
            return [(to_float(raw[0]), to_float(raw[1]))]
        out: list[tuple[float, float]] = []
        for item in raw:
            out.extend(to_spans(item))
        return out
    raise BadEntry("missing_field")


def first_present(entry: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The value of the first alias in `keys` that is present and not None."""
    for k in keys:
        if k in entry and entry[k] is not None:
            return entry[k]
    return None


def video_id_from(value: Any) -> str:
    """Video ids are file stems: "videos/abc.mp4" → "abc" (frame-store keys never carry extensions)."""
    text = to_text(value)
    base = os.path.basename(text.rstrip("/"))
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"} else base


# ---------------------------------------------------------------- durations / manifest


def manifest_duration(entry: Any) -> Optional[float]:
    """Duration from a frame-store manifest entry: a number, a mapping or object with `duration`."""
    value = entry
    if isinstance(entry, Mapping):
        value = entry.get("duration")
    elif not isinstance(entry, (int, float, str)):
        value = getattr(entry, "duration", None)
    try:
        return to_float(value)
    except BadEntry:
        return None


def load_durations(source: Any) -> dict[str, float]:
    """Video durations from a mapping, a json file `{id: seconds}` or a csv with `id`/`length` columns.

    The csv form is Charades_v1_{train,test}.csv (`length` is the video length in seconds); the columns
    `video_id`/`vid` and `duration` are accepted as aliases. Rows with unusable numbers are skipped.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        items: Iterable = source.items()
    else:
        path = os.fspath(source)
        try:
            with open(path, newline="") as f:
                if path.endswith(".json"):
                    items = json.load(f).items()
                else:
                    rows = list(csv.DictReader(f))
                    items = [(first_present(r, ("id", "video_id", "vid")),
                              first_present(r, ("length", "duration"))) for r in rows]
        except (OSError, ValueError, AttributeError) as e:
            raise DatasetFormatError(f"cannot read durations from {path}: {e}") from e
    out = {}
    for k, v in items:
        d = manifest_duration(v)
        if k is not None and d is not None:
            out[str(k)] = d
    return out


def read_json(path: Any) -> Any:
    try:
        with open(os.fspath(path)) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"cannot read annotation json {path}: {e}") from e


def _read_bytes(path: Any, what: str) -> bytes:
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise DatasetFormatError(f"cannot read {what} {path}: {e}") from e


def read_lines(path: Any, what: str = "annotation file") -> list[tuple[int, Optional[str]]]:
    """`(line number from 1, text)` of every line (LF, CRLF or CR endings; a UTF-8 BOM dropped); the text
    is None for a line that is not valid UTF-8, so one bad byte costs one line, not the file."""
    raw = _read_bytes(path, what)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    out: list[tuple[int, Optional[str]]] = []
    for i, line in enumerate(raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), start=1):
        try:
            out.append((i, line.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((i, None))
    if out and out[-1] == (len(out), ""):
        out.pop()  # the empty "line" after a final newline
    return out


def read_json_or_jsonl(path: Any) -> Any:
    """A whole-file JSON value, or a list when the file is jsonl (bad jsonl lines, including lines that
    are not valid UTF-8, become None)."""
    path = os.fspath(path)
    raw = _read_bytes(path, "annotation file")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError included: a bad byte in one line of a jsonl
        pass
    lines = [text for _, text in read_lines(path) if text is None or text.strip()]
    out = []
    for ln in lines:
        try:
            out.append(None if ln is None else json.loads(ln))
        except ValueError:
            out.append(None)
    if not lines or all(x is None for x in out):
        raise DatasetFormatError(f"{path} is neither JSON nor JSON lines (in UTF-8)")
    return out


# ---------------------------------------------------------------- the collector


class Collector:
    """Validates raw entries into GroundingRecords under the module's policy, counting everything."""

    def __init__(self, source: str, *, durations: Any = None, manifest: Optional[Mapping[str, Any]] = None,
                 video_exists: Optional[VideoExists] = None, reversed_spans: str = "swap",
                 keep_video_ids: bool = False):
        """`keep_video_ids`: take video ids verbatim (our records jsonl, whose ids are frame-store keys)
        instead of reducing paths to their stems."""
        if reversed_spans not in ("swap", "drop"):
            raise ValueError(f"reversed_spans must be 'swap' or 'drop', got {reversed_spans!r}")
        self.source = source
        self.durations = load_durations(durations)
        self.manifest = manifest
        self.video_exists = video_exists
        self.reversed_spans = reversed_spans
        self.keep_video_ids = keep_video_ids
        self.stats = LoadStats()
        self.records: list[GroundingRecord] = []
        self.last_reason: Optional[str] = None  # why the last `add` / `skip` dropped its entry (None: kept)

    def skip(self, reason: str) -> None:
        """Counts one raw entry that could not even be parsed into fields."""
        self.stats.read += 1
        self.stats.dropped[reason] += 1
        self.last_reason = reason

    def lookup_duration(self, video_id: str) -> Any:
        if video_id in self.durations:
            return self.durations[video_id]
        if self.manifest is not None and video_id in self.manifest:
            return manifest_duration(self.manifest[video_id])
        return None

    def add(self, *, video_id: Any, duration: Any, query: Any, spans: Any, qid: str = "", **optional: Any) -> bool:
        """Validates one entry; appends the record and returns True, or counts the drop and returns False.

        `spans` may be raw (any form `to_spans` accepts) or a zero-arg callable that raises BadEntry.
        """
        self.stats.read += 1
        self.last_reason = None
        try:
            record, fixes = self._build(video_id, duration, query, spans, qid, optional)
        except BadEntry as e:
            self.stats.dropped[e.reason] += 1
            self.last_reason = e.reason
            return False
        self.stats.fixed.update(fixes)
        self.stats.kept += 1
        self.records.append(record)
        return True

    def _build(self, video_id, duration, query, spans, qid, optional):
        vid = to_text(video_id) if self.keep_video_ids else video_id_from(video_id)
        text = to_text(query)
        raw_spans = to_spans(spans() if callable(spans) else spans)
        if is_blank(duration):
            duration = self.lookup_duration(vid)
            if duration is None:
                raise BadEntry("missing_duration")
        dur = to_float(duration)
        if dur <= 0:
            raise BadEntry("bad_duration")
        fixes: collections.Counter = collections.Counter()
        kept = []
        for s, e in raw_spans:
            if s > e:
                if self.reversed_spans == "drop":
                    fixes["removed_span"] += 1
                    continue
                s, e = e, s
                fixes["swapped_span"] += 1
            if e <= 0 or s >= dur:
                fixes["removed_span"] += 1
                continue
            if s < 0 or e > dur:
                s, e = max(s, 0.0), min(e, dur)
                fixes["clipped_span"] += 1
            kept.append((s, e))
        if not kept:
            raise BadEntry("no_valid_span")
        if self.manifest is not None and vid not in self.manifest:
            raise BadEntry("missing_video")
        if self.video_exists is not None and not self.video_exists(vid):
            raise BadEntry("missing_video")
        extra = dict(optional.pop("extra", None) or {})
        record = GroundingRecord(video_id=vid, duration=dur, query=text, spans=tuple(kept), qid=str(qid),
                                 source=self.source, extra=extra, **optional)
        try:
            record.validate()
        except ValueError:  # unreachable under the policy above; kept as a guard, still counted
            raise BadEntry("invalid") from None
        return record, fixes

    def result(self, path: Any = None) -> tuple[list[GroundingRecord], LoadStats]:
        """Records and stats; an input where nothing at all parsed is an unrecognised file, not data."""
        s = self.stats
        if s.read and s.dropped.get("unparsable", 0) == s.read:
            raise DatasetFormatError(f"no entry of {path or self.source} is in the {self.source} format")
        return self.records, self.stats
