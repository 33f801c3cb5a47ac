"""Format rewards (structural checks of a completion; pure Python over strings, never raise).

* ``format_think_answer`` — TempSamp-R1 §3.3 "Format reward" (and Time-R1): 1 iff the whole
  completion is ``<think>...</think>`` followed by ``<answer>...</answer>`` (regex validation),
  else 0. Tag names are matched case-insensitively (TempSamp §3.3 writes ``<Think>``/``<Answer>``,
  its App. E prompts ``<think>``/``<answer>``). Each tag must occur exactly once (Time-R1's bare
  ``.*?`` regex would also accept ``<answer>a</answer><answer>b</answer>``).
* ``format_tvg`` — TVG-R1 §3.3.1: r_form = 1{<think>, </think>, <answer>, </answer> ⊆ output}, a
  containment test (no order). ``answer_tag="time"`` gives the ``<think>…</think><time>…</time>``
  variant (TVG-R1-style ``<time>[s, e]</time>`` answers).
* ``format_timestamp`` — LongVTG-R1 App. C prompts: ``<think>...</think>`` then
  ``<timestamp>...</timestamp>``, with an optional ``<answer>...</answer>`` (option letter of the
  QA prompts) before or after the timestamp; nothing else outside the tags; each tag once.

Format rewards only check structure; whether the answer content parses is the span rewards' job
(an unparsable answer scores 0 there and is counted as a parse failure).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_F = re.IGNORECASE | re.DOTALL
_THINK_ANSWER_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", _F)
_TIMESTAMP_RE = re.compile(
    r"\s*<think>.*?</think>\s*"
    r"(?:<answer>.*?</answer>\s*<timestamp>.*?</timestamp>"
    r"|<timestamp>.*?</timestamp>(?:\s*<answer>.*?</answer>)?)\s*",
    _F,
)


def _no_nested(text: str, tags: Sequence[str]) -> bool:
    """Each tag opens and closes exactly once (rejects ``<answer>a</answer><answer>b</answer>``)."""
    low = text.lower()
    return all(low.count(f"<{t}>") == 1 and low.count(f"</{t}>") == 1 for t in tags)


def format_think_answer(text: str) -> float:
    """TempSamp-R1 / Time-R1 think-answer format reward in {0, 1}."""
    try:
        # The tag-count check runs first: with each tag once the regex below is linear-time.
        ok = _no_nested(text, ("think", "answer")) and _THINK_ANSWER_RE.fullmatch(text) is not None
        return 1.0 if ok else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def format_tvg(text: str, answer_tag: str = "answer") -> float:
    """TVG-R1 §3.3.1 format reward: all four tags present (order not checked), in {0, 1}."""
    try:
        low = text.lower()
        tags = ("<think>", "</think>", f"<{answer_tag}>", f"</{answer_tag}>")
        return 1.0 if all(t in low for t in tags) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def format_timestamp(text: str) -> float:
    """LongVTG-R1 think + timestamp (+ optional answer) format reward in {0, 1}."""
    try:
        low = text.lower()
        tags = ["think", "timestamp"] + (["answer"] if "<answer>" in low or "</answer>" in low else [])
        if not _no_nested(text, tags):  # checked first: keeps the regex linear-time
            return 0.0
        return 1.0 if _TIMESTAMP_RE.fullmatch(text) is not None else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def batch_format(fn, texts: Sequence[str], **kwargs) -> np.ndarray:
    """Apply a format reward to a batch: float32 [N]."""
    return np.asarray([fn(t, **kwargs) for t in texts], dtype=np.float32).reshape(len(texts))
