"""Parsing of model outputs into temporal spans (pure Python over strings).

Output forms handled (one parser for every paper's prompt):

* TempSamp-R1 / Time-R1 (App. E prompts): ``<think>...</think><answer>12.54 to 17.83</answer>``
* Video-OPD (Fig. 7 prompt): untagged ``12.54 to 17.83`` (possibly after free reasoning text)
* LongVTG-R1 (App. C prompts): ``<think>...</think><timestamp>12.5 to 17.8</timestamp>``, for QA
  prompts with an extra ``<answer>B</answer>`` holding the option letter
* TVG-R1 style ``<time>[12.5, 17.8]</time>`` and bare ``[12.5, 17.8]``
* separators ``to``, ``-``, ``–``, ``—``, ``~``, ``,``, ``and`` / ``until`` / ``till``; optional
  ``s`` / ``sec`` / ``secs`` / ``second`` / ``seconds`` suffix after each time
* clock times ``mm:ss`` and ``hh:mm:ss`` with optional fraction, e.g. ``01:05 to 1:02:03.5``

Policy (documented contract, see tests/rewards/test_rewards_parse.py):

* Tag preference: the content of the *last* ``<answer>``; if it holds no span (e.g. LongVTG's
  option letter), the last ``<timestamp>``, then the last ``<time>``. If any of these tags is
  present, only tag contents are searched: an unparsable answer never falls back to spans quoted in
  the reasoning. An unclosed trailing tag (generation cut at max length) counts as the last one and
  is searched from the opening tag to the end of the text. Within a region the last span wins.
* Without tags the text minus ``<think>...</think>`` blocks is searched and the *last* span wins
  (reasoning tends to quote candidates before the final answer).
* Floats are returned *as written*: a reversed span ``17.8 to 12.5`` is returned as
  ``(17.8, 12.5)``; the reward functions (``spans.py``) decide how to score it.
* Negative, non-finite and malformed clock times (``1:75``) are not spans.
* Never raises: any exception inside the parser yields ``None``.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np

# A time: clock (h:mm:ss / m:ss, optional fraction) or a plain decimal number.
_TIME = r"(?:\d+(?::\d{1,2}){1,2}(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_SEP = r"\s*(?:to|until|till|and|-|–|—|~|,)\s*"
# The first time must not continue a word, number, clock or minus sign; the second must not be cut short.
_SPAN_RE = re.compile(
    rf"(?<![\w.:\-])({_TIME}){_UNIT}{_SEP}({_TIME})(?![\d:])(?!\.\d){_UNIT}",
    re.IGNORECASE,
)
_TAGS = ("answer", "timestamp", "time")
_OPEN_RE = {t: re.compile(rf"<{t}>", re.IGNORECASE) for t in _TAGS + ("think",)}
_CLOSE_RE = {t: re.compile(rf"</{t}>", re.IGNORECASE) for t in _TAGS + ("think",)}


def parse_time(token: str) -> float | None:
    """Seconds from ``"12.5"``, ``"01:05"`` (mm:ss) or ``"1:02:03.5"`` (hh:mm:ss); else None."""
    try:
        parts = token.strip().split(":")
        if len(parts) == 1:
            value = float(parts[0])
        elif len(parts) in (2, 3):
            *head, last = parts
            whole = [int(p) for p in head]
            sec = float(last)
            if sec >= 60 or (len(whole) == 2 and whole[1] >= 60):
                return None
            value = 0.0
            for w in whole:
                value = value * 60 + w
            value = value * 60 + sec
        else:
            return None
        if not math.isfinite(value) or value < 0:
            return None
        return value
    except Exception:  # noqa: BLE001 - parsing must never raise
        return None


def _last_span(text: str) -> tuple[float, float] | None:
    """The last ``TIME SEP TIME`` match in ``text`` whose two times convert."""
    found = None
    for m in _SPAN_RE.finditer(text):
        s, e = parse_time(m.group(1)), parse_time(m.group(2))
        if s is not None and e is not None:
            found = (s, e)
    return found


def last_tag_content(text: str, tag: str) -> str | None:
    """Content of the last ``<tag>`` up to the next ``</tag>`` (or the end if unclosed); None if absent.

    Linear time (a lazy ``<tag>(.*?)</tag>`` regex is quadratic on adversarial repeated tags).
    """
    opens = _OPEN_RE.get(tag) or re.compile(rf"<{re.escape(tag)}>", re.IGNORECASE)
    closes = _CLOSE_RE.get(tag) or re.compile(rf"</{re.escape(tag)}>", re.IGNORECASE)
    last = None
    for last in opens.finditer(text):
        pass
    if last is None:
        return None
    close = closes.search(text, last.end())
    return text[last.end():close.start()] if close else text[last.end():]


def _strip_think(text: str) -> str:
    """Remove closed ``<think>...</think>`` blocks (linear scan)."""
    out, pos = [], 0
    while True:
        m = _OPEN_RE["think"].search(text, pos)
        c = _CLOSE_RE["think"].search(text, m.end()) if m else None
        if c is None:
            out.append(text[pos:])
            return " ".join(out)
        out.append(text[pos:m.start()])
        pos = c.end()


def _tag_regions(text: str) -> list[str] | None:
    """Tag contents to search, in preference order; None when no recognised tag is present."""
    regions = [r for r in (last_tag_content(text, t) for t in _TAGS) if r is not None]
    return regions or None


def parse_span(text: str) -> tuple[float, float] | None:
    """Parse a predicted ``(start, end)`` in seconds from a completion; None when unparsable.

    See the module docstring for the accepted forms and the tag policy. Never raises.
    """
    try:
        if not isinstance(text, str):
            return None
        regions = _tag_regions(text)
        if regions is not None:
            for region in regions:
                span = _last_span(region)
                if span is not None:
                    return span
            return None
        return _last_span(_strip_think(text))
    except Exception:  # noqa: BLE001 - bad model output must never crash a run
        return None


def parse_spans(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Batch parse: ``(spans float32 [N, 2] with NaN rows for failures, ok bool [N])``."""
    n = len(texts)
    spans = np.full((n, 2), np.nan, dtype=np.float32)
    ok = np.zeros((n,), dtype=bool)
    for i, t in enumerate(texts):
        span = parse_span(t)
        if span is not None:
            spans[i] = span
            ok[i] = True
    return spans, ok


def count_parse_failures(texts: Iterable[str]) -> dict[str, float]:
    """Parse-failure counters for a batch: ``{"parse_fail_count", "parse_fail_rate", "n"}``."""
    texts = list(texts)
    fails = sum(parse_span(t) is None for t in texts)
    n = len(texts)
    return {"parse_fail_count": float(fails), "parse_fail_rate": fails / n if n else 0.0, "n": float(n)}
