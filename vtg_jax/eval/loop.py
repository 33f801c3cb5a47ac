"""Evaluation loop: greedy decoding on a split -> parse -> R@{0.3,0.5,0.7} / mIoU -> predictions jsonl.

    metrics = evaluate(model, run_data, "val", batch_size=16, max_new_tokens=16, out_path=".../val.jsonl")

Why examples are grouped by their number of video patches before batching: the sampler pads a
batch's patch rows to a frame bucket (one compilation per bucket); batches of videos of one length
need no filler frames, and batches are filled to `batch_size` with repeats of their last example
(outputs dropped), so a split compiles a few programs, not one per batch.

Unparsable answers score IoU 0 and are counted (`parse_failures`, DESIGN rule 7); records whose frames
cannot be loaded are skipped and counted (`skipped`), never fatal.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional

import numpy as np


def _batches(examples: Iterable[tuple[int, dict]], batch_size: int):
    """(indices, examples padded to batch_size) of examples grouped by patch count, streamed: a group is
    yielded when it has `batch_size` examples, the partly filled ones at the end (so at most one batch
    per patch count is held, whatever the number of records)."""
    groups: dict[tuple, list[tuple[int, dict]]] = {}

    def emit(chunk):
        exs = [e for _, e in chunk] + [chunk[-1][1]] * (batch_size - len(chunk))
        return [i for i, _ in chunk], exs

    for i, ex in examples:
        key = (len(ex.get("pixel_values_videos", ())), len(ex.get("video_grid_thw", ())))
        group = groups.setdefault(key, [])
        group.append((i, ex))
        if len(group) == batch_size:
            yield emit(group)
            groups[key] = []
    for group in groups.values():
        if group:
            yield emit(group)


def prompt_batches(run_data: Any, split: str, records: list, batch_size: int, counts: dict):
    """Yields (record positions, sampler inputs of their prompts) in `_batches` order; adds the number
    of skipped records to `counts["skipped"]`: the loader's per-record preparation returns a skip marker
    (logged) for a record whose video fails to load or whose example exceeds the buckets."""
    from vtg_jax.data.loader import _SKIP, _Prepare, collate
    from vtg_jax.train.data_setup import prompt_only
    from vtg_jax.train.rollout import sampler_inputs

    prepare = _Prepare(run_data.transforms[split], run_data.buckets)
    counts.setdefault("skipped", 0)

    def prepared():
        for i, rec in enumerate(records):
            ex = prepare(rec)
            if _SKIP in ex:
                counts["skipped"] += 1
            else:
                yield i, ex

    for idx, exs in _batches(prepared(), batch_size):
        yield idx, sampler_inputs(prompt_only(collate(exs, run_data.buckets)))


def completion_text(run_data: Any, out: dict, row: int, sample: int) -> str:
    """The decoded text of `generate` output (row, sample), without its end-of-sequence token."""
    ids = out["tokens"][row, sample, :out["lengths"][row, sample]]
    return run_data.decode([t for t in ids if t != run_data.eos_id])


def _clip_scores(text: str, clip_ids: list[int], clip_seconds: float) -> Optional[np.ndarray]:
    """Per labelled clip, the score of the predicted highlight timestamp nearest the clip's centre."""
    from vtg_jax.rewards.highlight import parse_highlight

    parsed = parse_highlight(text)
    if parsed is None or not parsed[0] or len(parsed[0]) != len(parsed[1]):
        return None
    ts, sc = np.asarray(parsed[0], np.float64), np.asarray(parsed[1], np.float64)
    centres = (np.asarray(clip_ids, np.float64) + 0.5) * clip_seconds
    return sc[np.abs(ts[None, :] - centres[:, None]).argmin(axis=1)]


def qvhighlights_metrics(records: list, texts: list[str], preds: list, clip_seconds: float = 2.0) -> dict[str, float]:
    """QVHighlights metrics where the labels exist: MR-mAP / MR-R1 when some query has several
    ground-truth windows (the greedy answer is one window of score 1), HL-mAP / HL-HIT@1 when the
    records carry saliency labels (clips of `clip_seconds`; the answer's highlight timestamps and
    scores are matched to the nearest labelled clip)."""
    from vtg_jax.eval.qvhighlights import highlight_metrics, moment_retrieval_metrics

    out: dict[str, float] = {}
    if any(len(r.spans) > 1 for r in records):
        windows = [None if p is None else np.asarray([[p[0], p[1], 1.0]]) for p in preds]
        mr = moment_retrieval_metrics(windows, [np.asarray(r.spans) for r in records])
        out.update({k if k.startswith("MR-") else f"MR/{k}": v for k, v in mr.items()})
    labelled = [(r, t) for r, t in zip(records, texts) if r.saliency]
    if labelled:
        gts = [np.asarray([s for _, s in r.saliency], np.float64) for r, _ in labelled]
        hl = [_clip_scores(t, [c for c, _ in r.saliency], clip_seconds) for r, t in labelled]
        out.update({f"HL/{k}" if not k.startswith("HL") else k: v for k, v in highlight_metrics(hl, gts).items()})
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float, np.floating))}


def evaluate(model: Any, run_data: Any, split: str, *, batch_size: int = 16, max_new_tokens: int = 16,
             num: int = 0, out_path: Optional[str] = None, mesh: Any = None, extra: Optional[dict] = None
             ) -> dict[str, float]:
    """Greedy R@m / mIoU of `model` on the first `num` (0: all) records of `split` of a `RunData`.

    Writes one jsonl line per record to `out_path` (qid, video_id, query, gt, answer, pred, iou) when
    given. Returns {"R@0.3", "R@0.5", "R@0.7", "mIoU", "n", "parse_failures", "skipped"}.
    """
    from vtg_jax.eval.metrics import grounding_metrics, prediction_ious
    from vtg_jax.rewards.parse import parse_span
    from vtg_jax.sampling import generate

    records = run_data.splits[split]
    records = records[:num] if num else records
    if not records:
        raise ValueError(f"split {split!r} has no records to evaluate")
    texts: dict[int, str] = {}
    counts: dict[str, int] = {}
    for idx, inputs in prompt_batches(run_data, split, records, batch_size, counts):
        out = generate(model, inputs, num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0,
                       eos_token_ids=[run_data.eos_id], mesh=mesh)
        for j, i in enumerate(idx):
            texts[i] = completion_text(run_data, out, j, 0)
    kept = sorted(texts)
    preds = [parse_span(texts[i]) for i in kept]
    gts = np.asarray([records[i].span for i in kept], np.float64).reshape(-1, 2)
    metrics = grounding_metrics(preds, gts) if kept else {"n": 0}
    metrics["skipped"] = counts.get("skipped", 0)
    if kept:
        metrics.update(qvhighlights_metrics([records[i] for i in kept], [texts[i] for i in kept], preds))
    if out_path:
        ious, _ = prediction_ious(preds, gts) if kept else (np.zeros(0), None)
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        with open(out_path, "w") as f:
            for i, p, iou in zip(kept, preds, ious):
                r = records[i]
                f.write(json.dumps({"qid": r.qid, "video_id": r.video_id, "query": r.query, "gt": list(r.span),
                                    "duration": r.duration, "answer": texts[i],
                                    "pred": None if p is None else [float(p[0]), float(p[1])],
                                    "iou": float(iou), **(extra or {})}) + "\n")
    return metrics
