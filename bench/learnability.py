"""Can a tiny Qwen-VL learn the synthetic benchmark? SFT from random init on CPU, greedy eval on val.

    PYTHONPATH=. python bench/learnability.py --workdir /tmp/vtg_learn --minutes 14 --seed 0

A probe of the synthetic presets' difficulty (none of its settings beat the video-blind baselines within
25 min on CPU). The curve that does learn is the training loop's own SFT run on
the run-config default: `python -m vtg_jax.main --config=configs/sft.py:teacher` (README "The demo").

Generates level-1 data (--synthetic_preset, a `vtg_jax.data.synthetic.PRESETS` entry) and its frame store
once (cached in --workdir per preset and model family), trains a --preset of SYNTHETIC_PRESETS below with
`vtg_jax.train.make_sft_step`, evaluates greedy decoding (`vtg_jax.sampling.generate`) on the first
--eval_n val videos every --eval_every steps, and writes <workdir>/<run>/curve.jsonl and curve.png next
to the video-blind baselines of the same val subset.

Flags beyond the optimiser ones:
  --preset            model: `qwen2.5-vl-synthetic` has the size of an earlier HF-model probe (text hidden
                      128, 4 layers, head_dim 32, ~1.1M params); `qwen2.5-vl-synthetic-t5rope` is the same
                      model under transformers 5.23's rope-index rule (see SYNTHETIC_PRESETS).
  --synthetic_preset  data timing: `default` (16-24 s videos, 1.5-2.5 s events), `short` (12-16 s, 1-1.5 s),
                      `demo` (10-14 s, 1-2 s) or `easy` (10-14 s, 2-3 s); the last two have <= 14 frame
                      groups, so steps are faster.
  --template          prompt template of `vtg_jax.data.prompts.TEMPLATES`; with the tiny tokenizer the chat
                      text (system + user + answer) of `synthetic_short` is ~58 tokens, of `default` ~80.
  --timestamps        '<t seconds>' text before each frame group (Qwen2.5; grounding becomes a copy task).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Sequence

import numpy as np

from vtg_jax.data.prompts import TEMPLATES
from vtg_jax.data.synthetic import PRESETS as DATA_PRESETS
from vtg_jax.models.qwen_vl.config import QwenVLConfig
from vtg_jax.models.qwen_vl.presets import get_preset

# 56x56 frames = 4x4 patches, one window (the presets' docstring in vtg_jax/models/qwen_vl/presets.py).
SYNTHETIC_PRESETS: dict[str, QwenVLConfig] = {"qwen2.5-vl-synthetic": get_preset("qwen2.5-vl-synthetic")}
# The same model under transformers 5.23's Qwen2.5 rope-index rule (what an earlier probe
# with transformers' own Qwen2.5-VL trained with): the text after a video starts right after its first
# frame group, so the rope distance from the answer to a group encodes the group's absolute time. Under
# the "original" rule the text starts after the last group: the distance is time-from-the-end, and the
# model must also work out the duration.
SYNTHETIC_PRESETS["qwen2.5-vl-synthetic-t5rope"] = SYNTHETIC_PRESETS["qwen2.5-vl-synthetic"].replace(
    rope_index_rule="transformers5")


def answer_text(span: Sequence[float]) -> str:
    return f"{span[0]:.1f} to {span[1]:.1f}"


class Transform:
    """record -> processor outputs with the answer (picklable: the store reopens per process)."""

    def __init__(self, store_path: str, processor: Any):
        from vtg_jax.data.frame_store import FrameStore

        self.store, self.proc = FrameStore(store_path), processor

    def __call__(self, rec: Any, answer: bool = True) -> dict[str, np.ndarray]:
        frames, ts = self.store.read(rec.video_id)
        return self.proc(frames, ts, rec.query, answer=answer_text(rec.span) if answer else None,
                         duration=rec.duration)


def build_data(workdir: str, num_train: int, num_val: int, seed: int = 0, preset: str = "default",
               family: str = "qwen2_5_vl") -> dict[str, str]:
    """Synthetic level 1 (`preset` of vtg_jax.data.synthetic.PRESETS) + its frame store (Qwen2.5: 56x56,
    Qwen3: 64x64), once per workdir, preset and family."""
    from vtg_jax.data.extract import extract
    from vtg_jax.data.synthetic import generate

    syn = os.path.join(workdir, f"syn_{preset}")
    store = os.path.join(workdir, f"frames_{preset}_{family}")
    paths = {"train": f"{syn}/train.jsonl", "val": f"{syn}/val.jsonl", "videos": f"{syn}/videos", "store": store}
    if not os.path.exists(paths["val"]):
        generate(syn, num_train=num_train, num_val=num_val, num_test=0, level=1, seed=seed, preset=preset)
    min_pixels = {"qwen2_5_vl": 3136, "qwen3_vl": 4096}[family]
    stats = extract(paths["videos"], store, family=family, sampling="transformers", min_pixels=min_pixels, workers=1,
                    progress=False)
    if stats["errors"]:
        raise RuntimeError(f"extraction errors: {stats}")
    return paths


def make_processor(cfg: QwenVLConfig, workdir: str, timestamps: bool, template: str = "default") -> tuple[Any, Any]:
    from tokenizers import Tokenizer

    from vtg_jax.data.processor import QwenVLProcessor, build_tiny_tokenizer

    tok = Tokenizer.from_file(build_tiny_tokenizer(os.path.join(workdir, "tok"), cfg.family) + "/tokenizer.json")
    return QwenVLProcessor(cfg, tok, template=template, interleave_timestamps=timestamps), tok


def eval_batches(records: Sequence[Any], transform: Transform, batch: int) -> list[tuple[dict, list[int]]]:
    """Left-padded prompt batches for `generate`, grouped by duration so that the visual shapes repeat
    (one compilation per duration); short groups are filled with repeats whose outputs are dropped."""
    by_dur: dict[float, list[int]] = {}
    for i, r in enumerate(records):
        by_dur.setdefault(r.duration, []).append(i)
    out = []
    for idx in by_dur.values():
        for k in range(0, len(idx), batch):
            chunk = idx[k:k + batch]
            rows = chunk + [chunk[-1]] * (batch - len(chunk))
            exs = [transform(records[i], answer=False) for i in rows]
            n = max(len(e["input_ids"]) for e in exs)
            lpad = lambda a, v=0: np.stack([np.pad(e[a], (n - len(e[a]), 0), constant_values=v) for e in exs])  # noqa
            inputs = {"input_ids": lpad("input_ids", 1004), "attention_mask": lpad("attention_mask"),
                      "mm_token_type_ids": lpad("mm_token_type_ids"),
                      "pixel_values_videos": np.concatenate([e["pixel_values_videos"] for e in exs]),
                      "video_grid_thw": np.concatenate([e["video_grid_thw"] for e in exs])}
            if "second_per_grid_ts" in exs[0]:
                inputs["second_per_grid_ts"] = np.concatenate([e["second_per_grid_ts"] for e in exs])
            out.append((inputs, chunk))
    return out


def evaluate(model: Any, batches: list, records: Sequence[Any], tok: Any, im_end: int) -> dict[str, float]:
    """Greedy decoding -> parse -> R@0.3/0.5/0.7, mIoU, parse failures on `records`."""
    from vtg_jax.eval.metrics import grounding_metrics
    from vtg_jax.rewards.parse import parse_span
    from vtg_jax.sampling import generate

    preds: list[Any] = [None] * len(records)
    texts: list[str] = [""] * len(records)
    for inputs, idx in batches:
        out = generate(model, inputs, num_samples=1, max_new_tokens=16, temperature=0.0, eos_token_ids=[im_end])
        for j, i in enumerate(idx):
            ids = [int(t) for t in out["tokens"][j, 0, : out["lengths"][j, 0]] if t != im_end]
            texts[i] = tok.decode(ids, skip_special_tokens=True)
            preds[i] = parse_span(texts[i])
    m = grounding_metrics(preds, np.asarray([r.span for r in records]))
    m["examples"] = texts[:3]
    return m


def plot(rows: list[dict], baselines: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot([r["step"] for r in tr], [r["loss"] for r in tr])
    a.set(xlabel="step", ylabel="answer-token NLL", title="SFT loss", yscale="log")
    for key, style in (("R@0.3", ":"), ("R@0.5", "-"), ("R@0.7", "--"), ("mIoU", "-.")):
        b.plot([r["step"] for r in ev], [r[key] for r in ev], style, marker="o", label=key)
    best = max(baselines.values(), key=lambda m: m["R@0.5"])
    b.axhline(best["R@0.5"], color="grey", lw=1, label=f"best trivial R@0.5 {best['R@0.5']:.2f}")
    b.axhline(max(m["mIoU"] for m in baselines.values()), color="grey", ls="-.", lw=1, label="best trivial mIoU")
    b.set(xlabel="step", ylim=(0, 1), title="greedy eval on val")
    b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/vtg_learn")
    ap.add_argument("--preset", default="qwen2.5-vl-synthetic", choices=sorted(SYNTHETIC_PRESETS))
    ap.add_argument("--num_train", type=int, default=4000)
    ap.add_argument("--num_val", type=int, default=500)
    ap.add_argument("--eval_n", type=int, default=200)
    ap.add_argument("--eval_every", type=int, default=200)
    ap.add_argument("--eval_batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1200, help="schedule length (cosine to 0)")
    ap.add_argument("--minutes", type=float, default=14.0, help="wall budget of the whole run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timestamps", action="store_true", help="'<t seconds>' text before each frame group")
    ap.add_argument("--template", default="default", choices=sorted(TEMPLATES), help="prompt template")
    ap.add_argument("--synthetic_preset", default="default", choices=sorted(DATA_PRESETS),
                    help="timing preset of the synthetic data (vtg_jax.data.synthetic.PRESETS)")
    ap.add_argument("--run", default=None)
    args = ap.parse_args()
    t0 = time.time()

    import jax
    from flax import nnx

    from vtg_jax.data.loader import make_loader, qwen_vl_buckets
    from vtg_jax.data.records import read_jsonl
    from vtg_jax.eval.baselines import trivial_baselines
    from vtg_jax.models.qwen_vl import QwenVL
    from vtg_jax.train import (OptimConfig, init_train_state, make_optimizer, make_sft_step, merge_model,
                               num_params, prepare_batch)

    cfg = SYNTHETIC_PRESETS[args.preset]
    paths = build_data(args.workdir, args.num_train, args.num_val, preset=args.synthetic_preset, family=cfg.family)
    run = args.run or (f"{args.preset}_{args.synthetic_preset}_{args.template}_ts{int(args.timestamps)}"
                       f"_lr{args.lr:g}_s{args.seed}")
    out_dir = os.path.join(args.workdir, run)
    os.makedirs(out_dir, exist_ok=True)
    proc, tok = make_processor(cfg, args.workdir, args.timestamps, args.template)
    transform = Transform(paths["store"], proc)
    train = list(read_jsonl(paths["train"]))
    val = list(read_jsonl(paths["val"]))[: args.eval_n]
    baselines = trivial_baselines(val, train, seed=0)
    longest = max(train, key=lambda r: (r.duration, len(tok.encode(r.query).ids)))  # video tokens grow with duration
    n_tok = len(transform(longest)["input_ids"]) + 8
    groups = int(max(r.duration for r in train))  # 2 fps, 2 frames per group
    buckets = qwen_vl_buckets(tokens=(-(-n_tok // 16) * 16,), patches=(groups * 16,), groups=(groups,))
    t_data = time.time() - t0

    model = QwenVL(cfg, rngs=nnx.Rngs(args.seed))
    tx, schedule = make_optimizer(OptimConfig(lr=args.lr, warmup_steps=args.warmup, total_steps=args.steps))
    state, graphdef, frozen = init_train_state(model, tx, freeze_vision=False)
    step_fn = make_sft_step(graphdef, tx, schedule)
    loader = make_loader(train, transform, batch_size=args.batch, seed=args.seed, buckets=buckets, read_threads=1)
    ev_batches = eval_batches(val, transform, args.eval_batch)
    header = dict(kind="config", args=vars(args), params=num_params(state.params) + num_params(frozen),
                  buckets={k: b.boundaries for k, b in buckets.items()}, baselines=baselines, data_s=t_data,
                  load=os.getloadavg(), devices=str(jax.devices()))
    print(json.dumps(header), flush=True)
    rows: list[dict] = [header]
    log = open(os.path.join(out_dir, "curve.jsonl"), "w")
    log.write(json.dumps(header) + "\n")
    im_end = proc.im_end_id
    losses, step, t_train, t_eval = [], 0, 0.0, 0.0
    deadline = t0 + 60 * args.minutes

    def do_eval() -> bool:
        nonlocal t_eval
        te = time.time()
        m = evaluate(merge_model(graphdef, state.params, frozen), ev_batches, val, tok, im_end)
        t_eval += time.time() - te
        row = dict(kind="eval", step=step, wall_s=round(time.time() - t0, 1), **m)
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)
        return True

    while step < args.steps and time.time() < deadline:
        if step % args.eval_every == 0 and step > 0:
            do_eval()
        batch = prepare_batch(cfg, next(loader), args.micro)
        ts = time.time()
        state, metrics = step_fn(state, frozen, batch)
        losses.append(float(metrics["loss/total"]))
        t_train += time.time() - ts
        step += 1
        if step % 25 == 0:
            row = dict(kind="train", step=step, loss=float(np.mean(losses[-25:])), wall_s=round(time.time() - t0, 1),
                       lr=float(metrics["train/lr"]), grad_norm=float(metrics["train/grad_norm"]),
                       skipped=int(metrics["train/skipped_nonfinite_total"]), **loader.metrics())
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    do_eval()
    summary = dict(kind="summary", steps=step, wall_s=round(time.time() - t0, 1), train_s=round(t_train, 1),
                   eval_s=round(t_eval, 1), data_s=round(t_data, 1), traces=step_fn.traces, load=os.getloadavg())
    rows.append(summary)
    log.write(json.dumps(summary) + "\n")
    log.close()
    print(json.dumps(summary), flush=True)
    plot(rows, baselines, os.path.join(out_dir, "curve.png"),
         f"{run}: SFT on synthetic level 1 (val n={len(val)}), {step} steps, {summary['wall_s']:.0f} s")
    loader.close()


if __name__ == "__main__":
    main()
