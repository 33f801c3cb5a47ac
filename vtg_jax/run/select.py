"""Model-scored data selection: `python -m vtg_jax.main --config=configs/select.py[:method] --workdir=W`.

Each method samples the models' answers on a pool of training records (`select.pool`, None = all),
scores every record, and hands the scores to the pure selectors of `vtg_jax.curriculum`:

  tvdf      Video-OPD §3.2 / App. B. The teacher's top-k predictions give tau_i (mean IoU with the
            annotation) and TRPV keeps tau_i >= `select.trpv_threshold` (None = TRPV off). DBTP ranks the
            reliable records by `select.dbtp`: "kl" (the aggregated reverse KL of the student from the
            teacher along the student's own samples, §3.2: sum over tokens of log pi_theta - log pi_tea,
            averaged over the samples), "iou_gap" (delta_i = tau_i - sigma_i, eq. 12) or "random" (DBTP
            off: a seeded random order), then `select.strategy` (topk / dsus / bbds / gwds) picks
            `select.num` records.
  time_r1   Video-OPD App. D.1 (Time-R1's difficulty-aware selection for the GRPO baseline): draws
            `select.num` records without replacement with p ∝ exp(-(IoU_i - 0.3)^2 / (2 * 0.2^2)) over the
            policy's mean IoU.
  tvg_r1    TVG-R1 §3.1: an annotator (the teacher if one is configured, else the policy) answers each
            record; records whose best answer has IoU > eps1 (0.8) form `coldstart` (that answer kept as
            the SFT target, `extra["completion"]`); records with IoU >= eps2 (0.4) that are not in the
            cold-start set form `rl` (TVG-R1 Table 1: 56K - 13K -> 18K).

`select.exclude` lists earlier selection outputs (selected.jsonl paths) whose records are not
candidates (Video-OPD's multi-round TVDF draws new samples each round: 3 x 2.5k = 7.5k, App. Table 6).

Writes to the workdir: selected.jsonl (records in selection order, our record format; `data.train_subset`
of a training run), one <subset>.jsonl per extra subset (tvg_r1: coldstart, rl), scores.jsonl (every
pool record's scores and whether it was selected) and selection.json (selector stats, counts, timing).
Records whose video cannot be loaded are skipped and counted; unparsable answers score IoU 0 and are
counted; neither stops the run.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import numpy as np

from vtg_jax.curriculum import (aggregated_reverse_kl, time_r1_gaussian_sample, topk_mean_iou, tvdf_select,
                                tvg_r1_coldstart_filter, tvg_r1_rl_filter)
from vtg_jax.data.records import read_jsonl, write_jsonl
from vtg_jax.data.run_data import RunData
from vtg_jax.eval.loop import completion_text, prompt_batches
from vtg_jax.eval.metrics import prediction_ious
from vtg_jax.io.workdir import save_json
from vtg_jax.parallel.distributed import is_main_process
from vtg_jax.rewards.parse import parse_span
from vtg_jax.rollout.packing import completion_mask
from vtg_jax.run.config import SELECT_METHODS
from vtg_jax.run.preamble import open_run
from vtg_jax.sampling import generate, score

METHODS = SELECT_METHODS
SELECTED = "selected.jsonl"


def sample_predictions(model: Any, run_data: RunData, records: list, *, num_samples: int, temperature: float,
                       max_new_tokens: int, batch_size: int, seed: int, mesh: Any = None,
                       judge: Any = None) -> dict[str, Any]:
    """`num_samples` answers of `model` per record of the train split's `records` (a prefix or subset).

    Returns spans [N, M, 2] (NaN where unparsable), valid [N, M], seq_logp [N, M] (sum of the sampled
    tokens' log-probs, the ranking for "top-k"), texts [N][M], loaded [N] (False: skipped record), and
    with a `judge` model reverse_kl [N]: the mean over the M samples of sum_t log pi_model - log pi_judge
    on the sampled tokens (Video-OPD §3.2's aggregated reverse KL; NaN for skipped records).
    """

    n, m = len(records), num_samples
    spans = np.full((n, m, 2), np.nan)
    seq_logp = np.full((n, m), -np.inf)
    texts: list[list[str]] = [[""] * m for _ in range(n)]
    loaded = np.zeros(n, bool)
    reverse_kl = np.full(n, np.nan)
    counts: dict[str, int] = {}
    position = {r.qid: i for i, r in enumerate(run_data.splits["train"])}
    for idx, inputs in prompt_batches(run_data, "train", records, batch_size, counts):
        rows = len(idx)
        pids = np.asarray([position[records[i].qid] for i in idx] + [0] * (batch_size - rows))
        out = generate(model, inputs, num_samples=m, max_new_tokens=max_new_tokens, temperature=temperature,
                       seed=seed, eos_token_ids=[run_data.eos_id], prompt_ids=pids, mesh=mesh)
        mask = completion_mask(out["lengths"], out["tokens"].shape[-1])
        if judge is not None:
            # generate's log-probs are at the sampling temperature (1 when greedy): score at the same one
            judge_logp = score(judge, inputs, out["tokens"], mask, temperature=temperature or 1.0, mesh=mesh)
            b, g, t = out["tokens"].shape
            kl = aggregated_reverse_kl(out["logprobs"].reshape(b * g, t), judge_logp.reshape(b * g, t),
                                       mask.reshape(b * g, t)).reshape(b, g)
        for j, i in enumerate(idx):
            loaded[i] = True
            seq_logp[i] = np.sum(np.where(mask[j], out["logprobs"][j], 0.0), axis=-1)
            for s in range(m):
                texts[i][s] = completion_text(run_data, out, j, s)
                p = parse_span(texts[i][s])
                if p is not None:
                    spans[i, s] = p
            if judge is not None:
                reverse_kl[i] = float(kl[j].mean())
    return {"spans": spans, "valid": np.isfinite(spans).all(-1), "seq_logp": seq_logp, "texts": texts,
            "loaded": loaded, "reverse_kl": reverse_kl, "skipped": counts.get("skipped", 0)}


def _mean_topk_iou(pred: dict, records: list, k: int) -> np.ndarray:
    gts = np.asarray([r.span for r in records], np.float64).reshape(-1, 2)
    iou, _ = topk_mean_iou(np.nan_to_num(pred["spans"]), gts, k, valid=pred["valid"], scores=pred["seq_logp"])
    return iou


def _best_answers(pred: dict, records: list) -> tuple[np.ndarray, list[str]]:
    """Each record's highest-IoU answer among its samples: (IoU [N], text)."""
    n, m = pred["valid"].shape
    gts = np.repeat(np.asarray([r.span for r in records], np.float64).reshape(-1, 2), m, axis=0)
    flat = [tuple(s) if ok else None for s, ok in zip(pred["spans"].reshape(-1, 2), pred["valid"].reshape(-1))]
    ious = prediction_ious(flat, gts)[0].reshape(n, m)
    best = ious.argmax(axis=1)
    return ious[np.arange(n), best], [pred["texts"][i][best[i]] for i in range(n)]


def _excluded_qids(spec: str) -> set:
    out: set = set()
    for path in filter(None, (p.strip() for p in spec.split(","))):
        out.update(r.qid for r in read_jsonl(path))
    return out


def _pool(run_data: RunData, s: Any) -> tuple[list, int]:
    records = run_data.splits["train"]
    excluded = _excluded_qids(s.exclude)
    pool = [r for r in records if r.qid not in excluded]
    return (pool if s.pool is None else pool[:s.pool]), len(records) - len(pool)


def _select_tvdf(s: Any, student: dict, teacher: dict, pool: list, seed: int) -> tuple[np.ndarray, dict, dict]:
    tau, sigma = _mean_topk_iou(teacher, pool, s.topk), _mean_topk_iou(student, pool, s.topk)
    if s.dbtp == "kl":
        score = student["reverse_kl"]
    elif s.dbtp == "iou_gap":
        score = tau - sigma
    elif s.dbtp == "random":
        score = np.random.default_rng(seed).permutation(len(pool)).astype(np.float64)
    else:
        raise ValueError(f"select.dbtp must be kl, iou_gap or random, got {s.dbtp!r}")
    ok = np.nonzero(student["loaded"] & teacher["loaded"])[0]
    # TRPV off: an IoU is >= 0, so every record passes a threshold of 0
    threshold = 0.0 if s.trpv_threshold is None else float(s.trpv_threshold)
    local, stats = tvdf_select(tau[ok], s.num, reliability_threshold=threshold,
                               disagreement=score[ok], strategy=s.strategy, seed=seed)
    cols = {"teacher_iou": tau, "student_iou": sigma, "reverse_kl": student["reverse_kl"], "dbtp_score": score}
    return ok[local], {**stats, "dbtp": s.dbtp}, cols


def _select_time_r1(s: Any, policy: dict, pool: list, seed: int) -> tuple[np.ndarray, dict, dict]:
    iou = _mean_topk_iou(policy, pool, s.topk)
    ok = np.nonzero(policy["loaded"])[0]
    local, stats = time_r1_gaussian_sample(iou[ok], min(s.num, ok.size), seed=seed)
    return ok[local], stats, {"iou": iou}


def _select_tvg_r1(s: Any, annotator: dict, pool: list) -> tuple[np.ndarray, dict, dict, dict]:
    iou, best = _best_answers(annotator, pool)
    ok = np.nonzero(annotator["loaded"])[0]
    cold, cold_stats = tvg_r1_coldstart_filter(iou[ok], eps1=float(s.eps1))
    rl, rl_stats = tvg_r1_rl_filter(iou[ok], eps2=float(s.eps2), exclude=cold)
    subsets = {"coldstart": ok[cold], "rl": ok[rl]}
    return ok[cold], {"coldstart": cold_stats, "rl": rl_stats}, {"iou": iou}, {"subsets": subsets, "best": best}


def _write(workdir: str, pool: list, selected: np.ndarray, cols: dict, extra_subsets: dict,
           completions: Optional[list]) -> dict[str, str]:
    import dataclasses

    def recs(idx):
        for i in idx:
            r = pool[int(i)]
            if completions is not None:
                r = dataclasses.replace(r, extra={**r.extra, "completion": completions[int(i)]})
            yield r

    paths = {"selected": os.path.join(workdir, SELECTED)}
    write_jsonl(recs(selected), paths["selected"])
    for name, idx in extra_subsets.items():
        paths[name] = os.path.join(workdir, f"{name}.jsonl")
        write_jsonl(recs(idx) if name == "coldstart" else (pool[int(i)] for i in idx), paths[name])
    chosen = set(int(i) for i in selected)
    with open(os.path.join(workdir, "scores.jsonl"), "w") as f:
        for i, r in enumerate(pool):
            row = {"qid": r.qid, "selected": i in chosen}
            row.update({k: (None if not np.isfinite(v[i]) else float(v[i])) for k, v in cols.items()})
            f.write(json.dumps(row) + "\n")
    return paths


def run_selection(config: Any, workdir: str) -> dict[str, Any]:
    """Scores the pool with the configured models, selects, writes the subsets; returns selection.json."""
    s = config.select
    if s.method not in METHODS:
        raise ValueError(f"select.method must be one of {METHODS}, got {s.method!r}")
    t0 = time.time()
    # time_r1 scores the policy only; tvdf's teacher is set (require_complete)
    with open_run(config, workdir) as run:
        policy, teacher, run_data, mesh = run.model, run.teacher, run.run_data, run.mesh
        pool, n_excluded = _pool(run_data, s)
        if not pool:
            raise ValueError("no candidate records left to select from (select.exclude removed them all)")
        sample = dict(num_samples=int(s.samples), temperature=float(s.temperature), batch_size=int(s.batch_size),
                      max_new_tokens=int(config.rollout.max_new_tokens), seed=int(config.seed), mesh=mesh)
        if s.samples < s.topk:
            raise ValueError(f"select.samples ({s.samples}) must be >= select.topk ({s.topk})")
        completions, extra = None, {}
        if s.method == "tvdf":
            t_pred = sample_predictions(teacher, run_data, pool, **sample)
            s_pred = sample_predictions(policy, run_data, pool, judge=teacher if s.dbtp == "kl" else None, **sample)
            selected, stats, cols = _select_tvdf(s, s_pred, t_pred, pool, int(config.seed))
            skipped = max(t_pred["skipped"], s_pred["skipped"])
        elif s.method == "time_r1":
            pred = sample_predictions(policy, run_data, pool, **sample)
            selected, stats, cols = _select_time_r1(s, pred, pool, int(config.seed))
            skipped = pred["skipped"]
        else:
            pred = sample_predictions(teacher or policy, run_data, pool, **sample)
            selected, stats, cols, more = _select_tvg_r1(s, pred, pool)
            extra, completions, skipped = more["subsets"], more["best"], pred["skipped"]
    paths = _write(workdir, pool, selected, cols, extra, completions) if is_main_process() else {}
    summary = {"method": s.method, "pool": len(pool), "excluded": n_excluded, "skipped": int(skipped),
               "selected": int(len(selected)), "stats": _jsonable(stats), "paths": paths,
               "wall_s": round(time.time() - t0, 1),
               "mean": {k: float(np.nanmean(v[selected])) if len(selected) else None for k, v in cols.items()},
               "pool_mean": {k: float(np.nanmean(v)) for k, v in cols.items()}}
    save_json(workdir, "selection.json", summary)
    return summary


def _jsonable(x: Any) -> Any:
    """Selector stats (numpy scalars and arrays inside dicts) as plain JSON values."""
    return json.loads(json.dumps(x, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def selection_report(summary: dict) -> str:
    lines = [f"selection ({summary['method']}): {summary['selected']} of {summary['pool']} pool records "
             f"({summary['excluded']} excluded, {summary['skipped']} skipped) in {summary['wall_s']} s"]
    for k, v in summary["mean"].items():
        pool_v = summary["pool_mean"][k]
        lines.append(f"  {k:>12}: selected mean {v if v is None else round(v, 4)}  pool mean {round(pool_v, 4)}")
    lines += [f"  {name}: {path}" for name, path in summary["paths"].items()]
    return "\n".join(lines)
