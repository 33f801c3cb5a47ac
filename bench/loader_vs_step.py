"""Is the input pipeline the bottleneck of tiny-model SFT on CPU? Loader batches/s next to step time.

    PYTHONPATH=. python bench/loader_vs_step.py --workdir /tmp/vtg_learn --batches 20

Loader = frame store (tensorstore) -> QwenVLProcessor (patchify, tokens, M-RoPE ids) -> Grain loader
(shuffle, bucket padding) with 0 and N worker processes, on the real synthetic data of
bench/learnability.py. Host packing (`prepare_batch`) is timed on its own, then the jitted SFT step of
`qwen2.5-vl-synthetic` runs on the very same batches (already in memory, compile excluded).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learnability import SYNTHETIC_PRESETS, Transform, build_data, make_processor  # noqa: E402


def time_loader(make, n: int) -> tuple[float, list]:
    """Batches/s over n batches after the first (worker start-up and first fill excluded)."""
    loader = make()
    batches = [next(loader)]
    t = time.perf_counter()
    for _ in range(n):
        batches.append(next(loader))
    rate = n / (time.perf_counter() - t)
    loader.close()
    return rate, batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/vtg_learn")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timestamps", action="store_true")
    args = ap.parse_args()

    import jax
    from flax import nnx

    from vtg_jax.data.loader import make_loader, qwen_vl_buckets
    from vtg_jax.data.records import read_jsonl
    from vtg_jax.models.qwen_vl import QwenVL
    from vtg_jax.train import OptimConfig, init_train_state, make_optimizer, make_sft_step, prepare_batch

    cfg = SYNTHETIC_PRESETS["qwen2.5-vl-synthetic"]
    paths = build_data(args.workdir, 4000, 500)
    proc, _ = make_processor(cfg, args.workdir, args.timestamps)
    transform = Transform(paths["store"], proc)
    train = list(read_jsonl(paths["train"]))
    longest = max(train, key=lambda r: (r.duration, len(r.query)))
    n_tok = -(-(len(transform(longest)["input_ids"]) + 8) // 16) * 16
    groups = int(max(r.duration for r in train))
    buckets = qwen_vl_buckets(tokens=(n_tok,), patches=(groups * 16,), groups=(groups,))
    rows = []
    for workers, threads in ((0, 1), (0, 2), (args.workers, 1)):
        rate, batches = time_loader(lambda: make_loader(train, transform, batch_size=args.batch, seed=0,
                                                        buckets=buckets, worker_count=workers,
                                                        read_threads=threads), args.batches)
        rows.append((f"loader workers={workers} read_threads={threads}", rate))
    t = time.perf_counter()
    packed = [prepare_batch(cfg, b, 1) for b in batches]
    rows.append(("prepare_batch (host packing, vision_inputs)", len(packed) / (time.perf_counter() - t)))

    tx, schedule = make_optimizer(OptimConfig(total_steps=1000))
    state, graphdef, frozen = init_train_state(QwenVL(cfg, rngs=nnx.Rngs(0)), tx, freeze_vision=False)
    step = make_sft_step(graphdef, tx, schedule)
    t = time.perf_counter()
    state, m = step(state, frozen, packed[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for b in packed[1:]:
        state, m = step(state, frozen, b)
    jax.block_until_ready(m)
    step_rate = (len(packed) - 1) / (time.perf_counter() - t)
    rows.append(("SFT step (fwd+bwd+AdamW, jitted)", step_rate))

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, devices {jax.devices()}")
    print(f"batch {args.batch}, token bucket {n_tok}, patch bucket {groups * 16}, timestamps={args.timestamps}, "
          f"step compile {compile_s:.1f} s, traces {step.traces}")
    print(f"{'stage':52s} {'batches/s':>10s} {'ms/batch':>10s}")
    for name, rate in rows:
        print(f"{name:52s} {rate:10.2f} {1000 / rate:10.1f}")
    best_loader = max(r for n, r in rows if n.startswith("loader"))
    host = 1 / (1 / best_loader + 1 / rows[-2][1])  # loader + packing, if both run in the train loop's thread
    verdict = "IS" if host < step_rate else "is NOT"
    print(f"best loader + packing: {host:.2f} batches/s vs step {step_rate:.2f}/s -> the input pipeline {verdict} "
          f"the bottleneck (ratio loader/step = {host / step_rate:.2f})")


if __name__ == "__main__":
    main()
