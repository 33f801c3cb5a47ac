"""Parsing of model outputs into temporal spans (pure Python over strings).

Output forms handled (one parser for every paper's prompt):

* TempSamp-R1 / Time-R1 (App. E prompts): ``<think>...</think><answer>12.54 to 17.83</answer>``
* Video-OPD (Fig. 7 prompt): untagged ``12.54 to 17.83`` (possibly after free reasoning text)
* LongVTG-R1 (App. C prompts): ``<think>...</think><timestamp>12.5 to 17.8</timestamp>``, for QA
  prompts with an extra ``<answer>B</answer>`` holding the option letter
* TVG-R1 style ``<time>[12.5, 17.8]</time>`` and bare ``[12.5, 17.8]``
* separators ``to``, ``-`` (also the Unicode minus U+2212), ``–``, ``—``, ``~``, ``,``, ``and`` /
  ``until`` / ``till``; optional ``s`` / ``sec`` / ``secs`` / ``second`` / ``seconds`` suffix after
  each time
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
* Negative, non-finite and malformed clock times (``1:75``) are not spans. A minus or dash directly
  before the first time (``-``, the Unicode minus U+2212, hyphens, ``–``, ``—``) makes it negative:
  ``−5 to 3`` is unparsable, never ``(5, 3)``. The Unicode minus is otherwise what ``-`` is: a
  separator between two times (``3.5−7.25``).
* Numbers are read whole or not at all (never as a different number):

  - Scientific notation is a number: ``10 to 1.5e1`` is ``(10, 15)``. A time must be finite and fit
    float32 (``parse_spans`` returns float32): ``0 to 1e30`` is ``(0, 1e30)`` (its reward is ~0), but
    ``0 to 1e39``, ``0 to 1e308`` and 400-digit numbers are unparsable.
  - A comma followed by exactly three digits inside a number whose first group has 1–3 digits is a
    thousands separator when another separator makes the span: ``1,000 to 2,000`` is
    ``(1000, 2000)``, ``0 to 1,000`` is ``(0, 1000)``, ``[1,000, 2,000]`` is ``(1000, 2000)``.
  - Otherwise a comma separates the two times (``12, 20``, ``12,20``, ``[3.2,9.75]``); a comma is
    never a decimal point (``1,5`` is ``(1, 5)``).
  - Where a comma *without spaces* could be either, the answer is unparsable: ``1,000`` (1000 or
    ``(1, 0)``?), ``12,200`` and ``[12,200]`` (12200 or ``(12, 200)``?), ``1,000,2,000``, ``1,000,20``.
    Likewise a list of three or more bare-comma numbers (``12,20,30``) holds no span, nor does a
    bare-comma pair joined to a third time by another separator (``0 to 1,5``, ``1,5 to 3``).
* The *last* span candidate of the searched region decides: if it is unparsable (ambiguous, a bad
  clock time, too large), the answer is unparsable; earlier candidates are not used instead.
* Never raises: any exception inside the parser yields ``None``.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np

# Hyphen-minus, the Unicode minus (U+2212), hyphens (U+2010/U+2011), small and full-width hyphen-minus:
# all are "-" (a separator between times, a sign before a number).
_MINUS = "\\-\u2212\u2010\u2011\ufe63\uff0d"
_EXP = r"(?:[eE][+-]?\d+)"
# A time: clock (h:mm:ss / m:ss, optional fraction), a thousands-grouped number (1,000 / 12,345.5) or a
# plain decimal number with optional exponent (12, 12.5, 12., .5, 1.5e1).
_CLOCK = r"\d+(?::\d{1,2}){1,2}(?:\.\d+)?"
_GROUPED = r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d*)?"
_PLAIN = rf"(?:\d+(?:\.\d*)?|\.\d+){_EXP}?"
_TIME = rf"(?:{_CLOCK}|{_GROUPED}|{_PLAIN})"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_SEP = rf"\s*(?:to|until|till|and|[{_MINUS}]|–|—|~|,)\s*"
# The first time must not continue a word, number, clock, bare-comma list or follow a minus / dash sign;
# the second must not be cut short (by a digit, clock, fraction, exponent or bare-comma continuation).
_SPAN_RE = re.compile(
    rf"(?<![\w.:{_MINUS}–—])(?<!\d,)({_TIME}){_UNIT}({_SEP})({_TIME})"
    rf"(?![\d:])(?!\.\d)(?!{_EXP})(?!,\d){_UNIT}",
    re.IGNORECASE,
)
_GROUPED_RE = re.compile(_GROUPED)
_NUMBER_RE = re.compile(rf"{_GROUPED}|{_PLAIN}")
_MAX_SECONDS = float(np.finfo(np.float32).max)
_TAGS = ("answer", "timestamp", "time")
_OPEN_RE = {t: re.compile(rf"<{t}>", re.IGNORECASE) for t in _TAGS + ("think",)}
_CLOSE_RE = {t: re.compile(rf"</{t}>", re.IGNORECASE) for t in _TAGS + ("think",)}


def parse_time(token: str) -> float | None:
    """Seconds from ``"12.5"``, ``"1.5e1"``, ``"1,000"`` (thousands), ``"01:05"`` (mm:ss) or
    ``"1:02:03.5"`` (hh:mm:ss); None for anything else, negative, non-finite or beyond float32."""
    try:
        token = token.strip()
        parts = token.split(":")
        if len(parts) == 1:
            if not _NUMBER_RE.fullmatch(token):
                return None
            value = float(token.replace(",", "") if _GROUPED_RE.fullmatch(token) else token)
        elif len(parts) in (2, 3):
            *head, last = parts
            if not all(p.isdigit() for p in head) or not re.fullmatch(r"\d{1,2}(?:\.\d+)?", last):
                return None
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
        if not math.isfinite(value) or value < 0 or value > _MAX_SECONDS:
            return None
        return value
    except Exception:  # noqa: BLE001 - parsing must never raise
        return None


_CHAIN_BEFORE_RE = re.compile(rf"\d\.?{_UNIT}{_SEP}$", re.IGNORECASE)
_CHAIN_AFTER_RE = re.compile(rf"{_SEP}\.?\d", re.IGNORECASE)


def _ambiguous_comma(m: re.Match, text: str) -> bool:
    """True when span match `m` is two times joined by a bare comma (no spaces) that could also be a
    thousands separator (``1,000``, ``12,200``, ``1,000,20``, ``1,000,2,000``), or that hangs on to
    another separator and time (``0 to 1,5``, ``1,5 to 3``: which two of the three numbers?)."""
    first, sep, second = m.group(1), m.group(2), m.group(3)
    if sep != ",":
        return False
    if "," in first or "," in second:
        return True
    if re.fullmatch(r"\d{1,3}", first) and re.match(r"\d{3}(?!\d)", second):
        return True
    return bool(_CHAIN_BEFORE_RE.search(text[max(0, m.start() - 64):m.start()])
                or _CHAIN_AFTER_RE.match(text, m.end()))


def _last_span(text: str) -> tuple[float, float] | None:
    """The last ``TIME SEP TIME`` match in ``text``, or None if there is none or it does not convert."""
    last = None
    for last in _SPAN_RE.finditer(text):
        pass
    if last is None or _ambiguous_comma(last, text):
        return None
    s, e = parse_time(last.group(1)), parse_time(last.group(3))
    return None if s is None or e is None else (s, e)


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
