"""Composable weighted rewards: ``RewardSpec(terms=(("iou", 0.9), ("format_tvg", 0.1)))``.

A spec is called on a batch of completions and returns ``(rewards float32 [N], metrics)`` with flat
``/`` metric keys: ``reward/total``, ``reward/<term>`` (batch mean of the *unweighted* term),
``reward/parse_fail`` (fraction of completions a parser used by the spec could not read) and
``reward/parse_fail_count``. Unparsable completions score 0 on parse-dependent terms (house rule 7).

Terms are looked up in ``TERMS`` (extend with ``register_term``). A term maps a ``RewardBatch`` to
float32 [N]; span terms read the lazily parsed spans (parsed once per batch, shared by all terms).

``gts``: span terms take ground-truth spans ``[N, 2]`` (array or list of pairs); the highlight term
takes a list of ``(timestamps, scores)`` per completion. ``durations``: ``[N]`` seconds, required by
tIoU / CenDist terms (missing durations are a configuration error and raise ``ValueError``; a bad
per-sample duration scores 0).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import numpy as np

from vtg_jax.rewards import format as fmt
from vtg_jax.rewards import spans as sp
from vtg_jax.rewards.highlight import highlight_reward_text
from vtg_jax.rewards.parse import parse_spans


@dataclasses.dataclass
class RewardBatch:
    """One batch to score; ``failed`` collects indices that a parser could not read."""

    completions: Sequence[str]
    gts: Any
    durations: Any = None
    failed: set = dataclasses.field(default_factory=set)

    @functools.cached_property
    def pred_spans(self) -> np.ndarray:
        spans, ok = parse_spans(self.completions)
        self.failed.update(np.flatnonzero(~ok).tolist())
        return spans

    def gt_spans(self) -> np.ndarray:
        gt = np.asarray(self.gts, dtype=np.float32).reshape(len(self.completions), 2)
        return gt

    def duration_array(self, term: str) -> np.ndarray:
        if self.durations is None:
            raise ValueError(f"reward term {term!r} needs durations")
        return np.broadcast_to(np.asarray(self.durations, np.float32), (len(self.completions),))


TermFn = Callable[[RewardBatch], np.ndarray]
TERMS: dict[str, TermFn] = {}


def register_term(name: str, fn: TermFn) -> None:
    """Add a named reward term (raises on a duplicate name)."""
    if name in TERMS:
        raise ValueError(f"reward term {name!r} already registered")
    TERMS[name] = fn


def _span_term(fn, needs_duration: bool, **kw) -> TermFn:
    """Span term; with ``needs_duration=False`` durations are still used (clipping) when given."""
    def term(batch: RewardBatch, _name: str = fn.__name__) -> np.ndarray:
        if needs_duration or batch.durations is not None:
            d = batch.duration_array(_name)
            return np.asarray(fn(batch.pred_spans, batch.gt_spans(), d, **kw), np.float32)
        return np.asarray(fn(batch.pred_spans, batch.gt_spans(), **kw), np.float32)
    return term


def _format_term(fn, **kw) -> TermFn:
    return lambda batch: fmt.batch_format(fn, batch.completions, **kw)


def _highlight_term(batch: RewardBatch) -> np.ndarray:
    out = np.zeros((len(batch.completions),), np.float32)
    for i, (text, gt) in enumerate(zip(batch.completions, batch.gts)):
        r = highlight_reward_text(text, gt[0], gt[1])
        if r is None:
            batch.failed.add(i)
        else:
            out[i] = r
    return out


register_term("iou", _span_term(sp.iou, needs_duration=False))
register_term("tiou", _span_term(sp.tiou, needs_duration=True))
register_term("cendist", _span_term(sp.cendist, needs_duration=True))
register_term("cendist_iou", _span_term(sp.cendist_iou, needs_duration=True))
register_term("format_think_answer", _format_term(fmt.format_think_answer))
register_term("format_tvg", _format_term(fmt.format_tvg))
register_term("format_tvg_time", _format_term(fmt.format_tvg, answer_tag="time"))
register_term("format_timestamp", _format_term(fmt.format_timestamp))
register_term("highlight", _highlight_term)


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """Weighted sum of named reward terms; see the module docstring for the call contract."""

    terms: tuple[tuple[str, float], ...]

    def __post_init__(self):
        unknown = [name for name, _ in self.terms if name not in TERMS]
        if unknown:
            raise ValueError(f"unknown reward terms {unknown}; known: {sorted(TERMS)}")

    def __call__(
        self, completions: Sequence[str], gts: Any, durations: Any = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        batch = RewardBatch(list(completions), gts, durations)
        n = len(batch.completions)
        total = np.zeros((n,), np.float32)
        metrics: dict[str, float] = {}
        for name, weight in self.terms:
            values = np.nan_to_num(TERMS[name](batch).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            total += np.float32(weight) * values
            metrics[f"reward/{name}"] = float(values.mean()) if n else 0.0
        metrics["reward/total"] = float(total.mean()) if n else 0.0
        metrics["reward/parse_fail_count"] = float(len(batch.failed))
        metrics["reward/parse_fail"] = len(batch.failed) / n if n else 0.0
        return total, metrics


# Paper recipes (weights from the papers; format weights where a paper gives none are 1).
TVG_R1 = RewardSpec(terms=(("iou", 0.9), ("format_tvg", 0.1)))  # TVG-R1 §4.1: λ_tIoU 0.9, λ_form 0.1
TIME_R1 = RewardSpec(terms=(("tiou", 1.0), ("format_think_answer", 1.0)))  # Time-R1 tIoU + format
TEMPSAMP_R1 = RewardSpec(terms=(("iou", 1.0), ("format_think_answer", 1.0)))  # TempSamp-R1 §3.3
TEMPSAMP_R1_HIGHLIGHT = RewardSpec(terms=(("highlight", 1.0), ("format_think_answer", 1.0)))
LONGVTG_R1 = RewardSpec(terms=(("cendist_iou", 1.0), ("format_timestamp", 1.0)))  # eq. 1 and 7
IOU_ONLY = RewardSpec(terms=(("iou", 1.0),))  # e.g. Video-OPD's GRPO baseline (no tags)
