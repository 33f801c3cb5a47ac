"""Evaluation loop: greedy decoding on a split -> parse -> R@{0.3,0.5,0.7} / mIoU -> predictions jsonl.

    metrics = evaluate(model, run_data, "val", batch_size=16, max_new_tokens=16, out_path=".../val.jsonl")

Why examples are grouped by their number of video patches before batching: the sampler pads a
batch's patch rows to a frame bucket (one compilation per bucket); batches of videos of one length
need no filler frames, and batches are filled to `batch_size` with repeats of their last example
(outputs dropped), so a split compiles a few programs, not one per batch.

Unparsable answers score IoU 0 and are counted (`parse_failures`); records whose frames
cannot be loaded are skipped and counted (`skipped`), never fatal.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional

import jax
import numpy as np

from vtg_jax.data.loader import PrepareExample, SKIP_KEY, collate
from vtg_jax.data.run_data import RunData
from vtg_jax.eval.metrics import grounding_metrics, prediction_ious
from vtg_jax.eval.qvhighlights import HL_MIN_SCORES, full_video_saliency, highlight_metrics, moment_retrieval_metrics
from vtg_jax.rewards.highlight import parse_highlight
from vtg_jax.rewards.parse import parse_span
from vtg_jax.rollout.packing import sampler_inputs
from vtg_jax.rollout.prompts import prompt_only
from vtg_jax.parallel.distributed import gather_json, max_over_processes
from vtg_jax.parallel.rules import vision_shards_for
from vtg_jax.sampling import generate


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


def prompt_batches(run_data: RunData, split: str, records: list, batch_size: int, counts: dict):
    """Yields (record positions, sampler inputs of their prompts) in `_batches` order; adds the number
    of skipped records to `counts["skipped"]`: the loader's per-record preparation returns a skip marker
    (logged) for a record whose video fails to load or whose example exceeds the buckets."""

    prepare = PrepareExample(run_data.transforms[split], run_data.buckets)
    counts.setdefault("skipped", 0)

    def prepared():
        for i, rec in enumerate(records):
            ex = prepare(rec)
            if SKIP_KEY in ex:
                counts["skipped"] += 1
            else:
                yield i, ex

    for idx, exs in _batches(prepared(), batch_size):
        yield idx, sampler_inputs(prompt_only(collate(exs, run_data.buckets)))


def per_host_evaluation(mesh: Any, batch_size: int) -> bool:
    """Whether each process evaluates its own records (several processes, whose equal shares of every batch
    fill whole vision shards of the mesh); else every process prepares the whole split."""
    n = jax.process_count()
    return mesh is not None and n > 1 and batch_size % n == 0 and vision_shards_for(mesh, batch_size) % n == 0


def _stand_in_batch(run_data: RunData, split: str, records: list, batch_size: int) -> dict:
    """Sampler inputs of the split's first preparable record repeated: what a process with no batch left
    runs along with the others (its outputs are dropped)."""
    prepare = PrepareExample(run_data.transforms[split], run_data.buckets)
    for rec in records:
        ex = prepare(rec)
        if SKIP_KEY not in ex:
            return sampler_inputs(prompt_only(collate([ex] * batch_size, run_data.buckets)))
    raise ValueError(f"no record of split {split!r} could be prepared on process {jax.process_index()}")


def _per_host_texts(model: Any, run_data: RunData, split: str, records: list, local_batch: int,
                    max_new_tokens: int, mesh: Any) -> tuple[dict[int, str], dict[str, int]]:
    """Greedy answers of every record, each process preparing (decoding) only records p, p + n, ...: the
    processes sample their batches together (`generate(process_local=True)`, each batch's prompts of every
    process one global batch; a process out of batches runs a stand-in), then gather the texts."""
    p, n = jax.process_index(), jax.process_count()
    mine = list(range(p, len(records), n))
    counts: dict[str, int] = {}
    batches = prompt_batches(run_data, split, [records[i] for i in mine], local_batch, counts)
    texts: dict[int, str] = {}
    last = None
    while True:
        batch = next(batches, None)
        if not max_over_processes([batch is not None])[0]:
            break
        if batch is None:  # this process is done, others are not: run along with its last batch
            last = last if last is not None else _stand_in_batch(run_data, split, records, local_batch)
            idx, inputs = [], last
        else:
            (idx, inputs), last = batch, batch[1]
        out = generate(model, inputs, num_samples=1, max_new_tokens=max_new_tokens, temperature=0.0,
                       eos_token_ids=[run_data.eos_id], mesh=mesh, process_local=True)
        for j, i in enumerate(idx):
            texts[mine[i]] = completion_text(run_data, out, j, 0)
    every = gather_json([texts, counts.get("skipped", 0)])
    merged = {int(i): t for part, _ in every for i, t in part.items()}
    return merged, {"skipped": int(sum(skipped for _, skipped in every))}


def completion_text(run_data: RunData, out: dict, row: int, sample: int) -> str:
    """The decoded text of `generate` output (row, sample), without its end-of-sequence token."""
    ids = out["tokens"][row, sample, :out["lengths"][row, sample]]
    return run_data.decode([t for t in ids if t != run_data.eos_id])


def _clip_scores(text: str, num_clips: int, clip_seconds: float = 2.0) -> Optional[np.ndarray]:
    """One predicted saliency score per clip of the video, from the model's answer; None = unparsable.

    Clip c covers ``[c · clip_seconds, (c + 1) · clip_seconds)``; the video has `num_clips` clips (the
    official ``int(duration / clip_seconds)``).

    * A highlight answer ("The highlight timestamps are in the 82, 84 seconds. Their saliency scores
      are 1.3, 1.7", read by `vtg_jax.rewards.highlight.parse_highlight`: numbers before the first
      "score" are timestamps, numbers after it their scores, a missing score is 0) gives clip
      ``floor(t / clip_seconds)`` the score of timestamp t (the max if several timestamps fall in one
      clip); every other clip scores 0.
    * Otherwise an answer holding a span (`parse_span`, e.g. "31 to 36") gives each clip the fraction
      of it the span covers (clip [30, 32] gets 0.5 from "31 to 36"), so a span-only model still ranks
      clips; a reversed span covers nothing.
    * Otherwise (or with a non-finite number) the answer is unparsable: None.

    Clips the answer names past the video's last clip are what the official evaluation also receives
    in a submission and handles there: ignored by AP, but a miss for HIT@1 when one of them has the
    top score. They are folded into one extra trailing entry holding their max score (equivalent for
    both metrics, see `highlight_metrics`, and bounded whatever timestamp the model writes).
    """

    inside = np.zeros(num_clips)
    past = None  # max score of the clips past the end, if the answer names any
    parsed = parse_highlight(text)
    if parsed is not None and parsed[1]:
        ts, sc = parsed
        sc = list(sc[:len(ts)]) + [0.0] * max(0, len(ts) - len(sc))
        if not all(np.isfinite(ts)) or not all(np.isfinite(sc)):
            return None
        for t, score in zip(ts, sc):
            c = int(np.floor(t / clip_seconds))
            if c < num_clips:
                inside[c] = max(inside[c], score)
            else:
                past = score if past is None else max(past, score)
    else:
        span = parse_span(text)
        if span is None:
            return None
        a, b = float(span[0]), float(span[1])

        def covered(c):  # fraction of clip c (array or int) inside [a, b]
            lo, hi = np.asarray(c, np.float64) * clip_seconds, (np.asarray(c, np.float64) + 1) * clip_seconds
            return np.clip((np.minimum(b, hi) - np.maximum(a, lo)) / clip_seconds, 0.0, 1.0)

        inside = covered(np.arange(num_clips))
        if b > num_clips * clip_seconds:
            # Past the end, coverage is largest at the first clip the span reaches or the one after it.
            first = max(num_clips, int(np.floor(a / clip_seconds)))
            past = float(max(covered(first), covered(first + 1)))
    return inside if past is None else np.append(inside, past)


def _is_qvhighlights(record: Any) -> bool:
    return record.source == "qvhighlights" or record.saliency is not None


def qvhighlights_metrics(records: list, texts: list[str], preds: list, clip_seconds: float = 2.0) -> dict[str, float]:
    """QVHighlights metrics with the official protocol (moment_detr ``standalone_eval``).

    MR (always for QVHighlights records, i.e. ``source == "qvhighlights"`` or carrying saliency; for
    other records only when some query has several GT windows, over all records): the greedy answer's
    span `preds[i]` is one window of score 1; ``MR-mAP``, ``MR-mAP@θ``, ``MR-R1@0.5/0.7`` (paired IoU
    against the GT window of highest IoU), ``MR/n``, ``MR/parse_failures``, ``MR/invalid_windows``.

    HL (records with saliency labels): every `clip_seconds` clip of the video gets a score from the
    answer (`_clip_scores`: a highlight answer's timestamps and scores, else a span's coverage of each
    clip, else a parse failure with AP 0 and no hit); the ground truth is the full-video array with
    unlabelled clips at 0 (`full_video_saliency`). ``HL-mAP`` / ``HL-HIT@1`` at the official
    "VeryGood" threshold (saliency >= 4), ``HL-min-Fair/mAP``, ``HL-min-Fair/HIT@1`` (>= 2) and
    ``HL-min-Good/...`` (>= 3), ``HL/n``, ``HL/parse_failures``. All fractions in [0, 1].
    """
    out: dict[str, float] = {}
    qvh = [i for i, r in enumerate(records) if _is_qvhighlights(r)]
    mr_idx = qvh or (list(range(len(records))) if any(len(r.spans) > 1 for r in records) else [])
    if mr_idx:
        windows = [None if preds[i] is None else np.asarray([[preds[i][0], preds[i][1], 1.0]]) for i in mr_idx]
        mr = moment_retrieval_metrics(windows, [np.asarray(records[i].spans) for i in mr_idx])
        out.update({k if k.startswith("MR-") else f"MR/{k}": v for k, v in mr.items()})
    labelled = [i for i in qvh if records[i].saliency is not None]
    if labelled:
        gts = [full_video_saliency(records[i].duration, records[i].saliency, clip_seconds) for i in labelled]
        hl = [_clip_scores(texts[i], g.shape[0], clip_seconds) for i, g in zip(labelled, gts)]
        for name, min_score in HL_MIN_SCORES:
            m = highlight_metrics(hl, gts, min_score=min_score)
            if name == "VeryGood":
                out.update({"HL-mAP": m["HL-mAP"], "HL-HIT@1": m["HL-HIT@1"],
                            "HL/n": m["n"], "HL/parse_failures": m["parse_failures"]})
            else:
                out.update({f"HL-min-{name}/mAP": m["HL-mAP"], f"HL-min-{name}/HIT@1": m["HL-HIT@1"]})
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float, np.floating))}


def evaluate(model: Any, run_data: RunData, split: str, *, batch_size: int = 16, max_new_tokens: int = 16,
             num: Optional[int] = None, out_path: Optional[str] = None, mesh: Any = None,
             extra: Optional[dict] = None) -> dict[str, float]:
    """Greedy R@m / mIoU of `model` on the first `num` (None: all) records of `split` of a `RunData`.

    Writes one jsonl line per record to `out_path` (qid, video_id, query, gt, answer, pred, iou) when
    given. Returns {"R@0.3", "R@0.5", "R@0.7", "mIoU", "n", "parse_failures", "skipped"}.
    """

    records = run_data.splits[split]
    records = records if num is None else records[:num]
    if not records:
        raise ValueError(f"split {split!r} has no records to evaluate")
    texts: dict[int, str] = {}
    counts: dict[str, int] = {}
    if per_host_evaluation(mesh, batch_size):
        texts, counts = _per_host_texts(model, run_data, split, records, batch_size // jax.process_count(),
                                        max_new_tokens, mesh)
    else:
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
