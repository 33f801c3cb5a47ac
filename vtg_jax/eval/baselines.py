"""Video-blind baselines: what a predictor that never looks at the video scores on a split (R@m, mIoU).

    python -m vtg_jax.eval.baselines --train=<train.jsonl> --eval=<val.jsonl>

A grounding benchmark is only useful when all of them stay low (the synthetic benchmark's README section
quotes them); every evaluation reports them next to the model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vtg_jax.data.records import GroundingRecord
from vtg_jax.eval.metrics import grounding_metrics
from vtg_jax.rewards.spans import iou


# --------------------------------------------------------------------------------- baselines
def _constant_grid(d: np.ndarray, gt: np.ndarray, starts: np.ndarray, lengths: np.ndarray, frac: bool):
    """Best (start, length) on a grid by R@0.5 on (d, gt) (mIoU breaks ties); fractions of d if frac."""
    a, l = (x.reshape(-1) for x in np.meshgrid(starts, lengths, indexing="ij"))
    s, e = a[:, None], a[:, None] + l[:, None]
    if frac:
        s, e = s * d[None], np.minimum(e, 1.0) * d[None]
    pred = np.stack(np.broadcast_arrays(np.minimum(s, d[None]), np.minimum(e, d[None])), -1)
    ious = iou(pred, np.broadcast_to(gt[None], pred.shape))
    score = (ious >= 0.5).mean(1) + 1e-3 * ious.mean(1)
    k = int(np.argmax(score))
    return float(a[k]), float(l[k])


def trivial_baselines(records: Sequence[GroundingRecord], fit_records: Sequence[GroundingRecord] | None = None,
                      *, seed: int = 0) -> dict[str, dict[str, float]]:
    """R@0.3/0.5/0.7 and mIoU of video-blind predictors on `records`.

    Fitted baselines use `fit_records` (the train split); without it they are fitted on `records`
    themselves, an optimistic upper bound. All of them must stay low for the benchmark to be useful.
    """
    fit = list(fit_records) if fit_records is not None else list(records)
    d = np.asarray([r.duration for r in records], np.float64)
    gt = np.asarray([r.span for r in records], np.float64)
    fd = np.asarray([r.duration for r in fit], np.float64)
    fgt = np.asarray([r.span for r in fit], np.float64)
    rng = np.random.default_rng(seed)
    starts, lengths = np.arange(0, fd.max(), 0.25), np.arange(0.5, 6.01, 0.25)
    a, l = _constant_grid(fd, fgt, starts, lengths, frac=False)
    fa, fl = _constant_grid(fd, fgt, np.arange(0, 1, 0.01), np.arange(0.02, 0.51, 0.01), frac=True)
    per_d = np.stack([np.full_like(d, a), np.full_like(d, a + l)], 1)
    for dur in np.unique(fd):
        if np.any(d == dur):
            ba, bl = _constant_grid(fd[fd == dur], fgt[fd == dur], starts, lengths, frac=False)
            per_d[d == dur] = (ba, ba + bl)
    flen = fgt[:, 1] - fgt[:, 0]
    rlen = np.minimum(rng.choice(flen, len(d)), d)
    rs = rng.uniform(0, 1, len(d)) * (d - rlen)
    u = np.sort(rng.uniform(0, 1, (len(d), 2)), axis=1) * d[:, None]
    mean_frac = (fgt / fd[:, None]).mean(0)
    preds = {
        "whole_video": np.stack([np.zeros_like(d), d], 1),
        "middle_half": np.stack([d / 4, 3 * d / 4], 1),
        "center_mean_length": np.stack([d / 2 - flen.mean() / 2, d / 2 + flen.mean() / 2], 1),
        "mean_span_seconds": np.broadcast_to(fgt.mean(0), gt.shape),
        "mean_span_fraction": mean_frac[None] * d[:, None],
        "best_constant": np.stack([np.full_like(d, a), np.full_like(d, a + l)], 1),
        "best_fraction": np.stack([fa * d, min(fa + fl, 1.0) * d], 1),
        "best_constant_per_duration": per_d,
        "random": u,
        "random_train_lengths": np.stack([rs, rs + rlen], 1),
    }
    out = {}
    for name, p in preds.items():
        p = np.clip(p, 0, d[:, None])
        m = grounding_metrics(p, gt)
        out[name] = {k: m[k] for k in ("R@0.3", "R@0.5", "R@0.7", "mIoU")}
    return out


def format_table(table: dict[str, dict[str, float]], title: str = "") -> str:
    """A markdown table of `trivial_baselines` output."""
    lines = [f"| {title} | R@0.3 | R@0.5 | R@0.7 | mIoU |", "|---|---|---|---|---|"]
    for name, m in table.items():
        lines.append(f"| {name} | {m['R@0.3']:.3f} | {m['R@0.5']:.3f} | {m['R@0.7']:.3f} | {m['mIoU']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    from vtg_jax.data.records import read_jsonl

    f = flags.FLAGS
    train = list(read_jsonl(f.train))
    for path in f.eval.split(","):
        records = list(read_jsonl(path))
        if records and train:
            print(format_table(trivial_baselines(records, train, seed=f.seed), f"{path} (fitted on {f.train})"))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("train", None, "records (jsonl) the fitted baselines are fitted on", required=True)
    flags.DEFINE_string("eval", None, "comma-separated records files (jsonl) to score", required=True)
    flags.DEFINE_integer("seed", 0, "seed of the random baselines")
    app.run(main)
