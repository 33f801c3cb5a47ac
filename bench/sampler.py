"""Sampler throughput: (a) our jitted decode vs transformers `generate`, (b) G samples from one shared
prefill vs G independent prefills (ours both ways). One process, same weights; float32 on the CPU by
default, or on an NVIDIA GPU (both sides: torch CUDA, jax CUDA) with `--device gpu --dtype bfloat16`.

    python bench/sampler.py [--batch 8] [--prompt 64] [--new 64] [--samples 8] [--video-new 50]
                            [--default-malloc] [--device cpu|gpu] [--dtype float32|bfloat16]

Model ("medium", random weights): Qwen2.5-VL text hidden 512, 8 layers, 8 heads / 4 kv heads, vocab 8192;
vision depth 4, hidden 256. Built in transformers, saved with `save_pretrained` and loaded with our
`from_pretrained`, so both sides hold the same weights. transformers uses sdpa attention and torch 2
threads (and 1 thread, see --torch-threads); XLA:CPU uses its own pool over the machine's cores.

(a) Text prompts [batch, prompt], greedy, no EOS. decode tokens/s = batch * (new - 1) / (t(new) - t(1)):
    the difference of two end-to-end generate calls removes the prefill and the per-call overhead (host
    preparation, HF's input checks) from both sides alike. End-to-end tokens/s is printed too. So is the
    weight-streaming floor (`weight_floor_step`): the time to read every text weight once, which bounds
    the tokens/s of ANY decoder in this dtype at this batch, and so the largest ratio to transformers
    possible (on the CPU; on a GPU this model's decode is latency-bound and no floor is printed). On a
    GPU the torch thread count does not apply and one transformers row is printed.
(b) One video prompt of ~1k tokens (grid 8x22x22 patches -> 968 video tokens), temperature 1,
    `samples` completions of `video-new` tokens: shared = generate(B=1, num_samples=G) (vision tower and
    prompt once, KV cache repeated G times); independent = generate on G copies of the prompt (B=G,
    num_samples=1): G vision-tower runs and G prompt prefills, batched.
Host allocator: the script re-executes itself with glibc's `glibc.malloc.hugetlb=1` tunable, as
`python -m vtg_jax.main` does (`vtg_jax/host_memory.py`), so both sides run with it; `--default-malloc`
keeps glibc's default.
Compile time is EXCLUDED everywhere: every configuration runs once as a warm-up before it is timed;
timings are the best of `--repeats` runs.
"""
from __future__ import annotations

import sys

from vtg_jax.host_memory import allocator_label, reexec_with_hugepages

if __name__ == "__main__" and "--default-malloc" not in sys.argv:
    reexec_with_hugepages()  # run as a script only; before jax / torch load; both sides get it

import argparse
import os
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from vtg_jax.models.qwen_vl import from_pretrained
from vtg_jax.sampling import generate

VS, VE, VID = 8002, 8003, 8001
GRID = (8, 22, 22)  # (t, h, w) patches -> t*h*w/4 = 968 video tokens


def hf_medium_model(device: str = "cpu", dtype: str = "float32"):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
        vision_config=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                           fullatt_block_indexes=[1, 3], out_hidden_size=512, tokens_per_second=2),
        image_token_id=8000, video_token_id=VID, vision_start_token_id=VS, vision_end_token_id=VE,
        tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval().float()  # initialised in float32, then cast
    return model.to("cuda" if device == "gpu" else "cpu", getattr(torch, dtype))


def text_batch(batch: int, prompt: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = rng.integers(10, 7000, size=(batch, prompt))
    return dict(input_ids=ids, attention_mask=np.ones_like(ids))


def video_prompt(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t, h, w = GRID
    ids = np.array([list(rng.integers(10, 7000, 20)) + [VS] + [VID] * (t * h * w // 4) + [VE]
                    + list(rng.integers(10, 7000, 10))])
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), mm_token_type_ids=(ids == VID) * 2,
                pixel_values_videos=rng.standard_normal((t * h * w, 3 * 2 * 14 * 14)).astype(np.float32),
                video_grid_thw=np.array([GRID]), second_per_grid_ts=np.array([1.0], np.float32))


def repeat_prompt(p: dict[str, np.ndarray], g: int) -> dict[str, np.ndarray]:
    out = {k: np.concatenate([v] * g) for k, v in p.items()}
    return out


def weight_floor_step(model: Any, batch: int, steps: int = 64, repeats: int = 3) -> float:
    """Seconds per decode step of the least any decoder of this model (in its weights' dtype) must do at
    this batch:
    read every text weight once per step. A jitted loop of `steps` steps of the decoder's matmuls
    alone (one token per row: q/k/v/o, gate/up/down per layer, then the lm_head), with no attention,
    norms, KV cache or sampling; each step depends on the last so nothing is hoisted out of the loop."""
    kernels = [tuple(m.kernel[...] for m in (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj,
                                             l.self_attn.o_proj, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj))
               for l in model.language_model.layers]
    head = (model.lm_head.kernel[...] if model.lm_head is not None
            else model.language_model.embed_tokens.embedding[...].T)
    d = head.shape[0]

    def step(_, h):
        for wq, wk, wv, wo, wg, wu, wd in kernels:
            a = jnp.concatenate([h @ wq, h @ wk, h @ wv], axis=-1)[:, :wo.shape[0]]
            h = h + 1e-3 * (a @ wo)
            h = h + 1e-3 * ((jax.nn.silu(h @ wg) * (h @ wu)) @ wd)
        return h + 1e-3 * (h @ head)[:, :d]

    loop = jax.jit(lambda h: jax.lax.fori_loop(0, steps, step, h))
    h0 = jnp.ones((batch, d), head.dtype)
    return best_time(lambda: jax.block_until_ready(loop(h0)), repeats)[0] / steps


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(best wall time of `repeats` timed runs, output of the untimed warm-up run)."""
    out = fn()  # warm-up: compiles (ours) / allocator and kernel warm-up (torch); not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--video-new", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--default-malloc", action="store_true",
                    help="do not re-execute with glibc.malloc.hugetlb=1 (glibc's default allocator setting)")
    ap.add_argument("--torch-threads", type=int, nargs="+", default=[2, 1],
                    help="torch thread counts to time transformers with (2 = the stated setting; 1 shows "
                         "how much OpenMP contention on a loaded 2-core machine costs it)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="where both sides run (gpu: torch on CUDA, jax's default backend must be the GPU)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="weights and activations of both sides")
    args = ap.parse_args()
    torch.set_num_threads(2)
    gpu = args.device == "gpu"
    if gpu and jax.default_backend() != "gpu":
        raise SystemExit(f"--device gpu: jax's default backend is {jax.default_backend()!r}, not a GPU")
    rng = np.random.default_rng(0)
    hf = hf_medium_model(args.device, args.dtype)
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = from_pretrained(path, dtype=getattr(jnp, args.dtype), rope_index_rule="transformers5")
    where = (f"{torch.cuda.get_device_name()} (torch {torch.__version__}, jax {jax.__version__} on "
             f"{jax.devices()[0].device_kind})" if gpu else f"{os.cpu_count()} cores")
    print(f"{args.dtype} on {where}; load average (1/5/15 min) {tuple(round(x, 2) for x in os.getloadavg())}; "
          f"compile time excluded (each configuration warmed up once before timing); host malloc: "
          f"{allocator_label()}")

    # (a) decode tokens/s vs transformers generate.
    inputs = text_batch(args.batch, args.prompt, rng)
    kw = {k: torch.from_numpy(v).to(hf.device) for k, v in inputs.items()}

    def hf_gen(n: int) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():  # .cpu(): the tokens on the host, as ours returns them (syncs the GPU)
                return hf.generate(**kw, max_new_tokens=n, do_sample=False,
                                   eos_token_id=None, pad_token_id=0).cpu()
        return run

    def our_gen(n: int) -> Callable[[], Any]:
        return lambda: generate(ours, inputs, max_new_tokens=n)

    b, n = args.batch, args.new
    (t_us_n, ours_out), (t_us_1, _) = best_time(our_gen(n), args.repeats), best_time(our_gen(1), args.repeats)
    us_dec = b * (n - 1) / (t_us_n - t_us_1)
    # A bound on the CPU, where decode streams every weight from memory; on a GPU this model's decode is
    # bound by kernel latency, not bandwidth (a weights-only loop is no floor there), so it is not printed.
    floor = None if gpu else weight_floor_step(ours, b)
    print(f"(a) text batch {b} x prompt {args.prompt}, {n} new tokens, greedy")
    print(f"    ours (jitted)                  : {t_us_n:.3f} s end-to-end ({b * n / t_us_n:.0f} tok/s), "
          f"decode {us_dec:.0f} tok/s ({b / us_dec * 1e3:.2f} ms per step)")
    if floor is not None:
        print(f"    weight-streaming floor         : {floor * 1e3:.2f} ms per step = at most {b / floor:.0f} tok/s "
              f"for any {args.dtype} decoder here (every text weight read once per step, nothing else)")
    for threads in [2] if gpu else args.torch_threads:
        torch.set_num_threads(threads)
        (t_hf_n, hf_out), (t_hf_1, _) = best_time(hf_gen(n), args.repeats), best_time(hf_gen(1), args.repeats)
        hf_dec = b * (n - 1) / (t_hf_n - t_hf_1)
        agree = np.mean(ours_out["tokens"][:, 0] == hf_out[:, args.prompt:].numpy())
        label = "transformers (CUDA)      " if gpu else f"transformers, torch threads {threads}"
        print(f"    {label}: {t_hf_n:.3f} s end-to-end ({b * n / t_hf_n:.0f} tok/s), "
              f"decode {hf_dec:.0f} tok/s; greedy tokens equal to ours: {agree:.1%}")
        print(f"    decode tokens/s ratio ours / transformers{'' if gpu else f' (torch threads {threads})'} = "
              f"{us_dec / hf_dec:.2f}x "
              f"(end-to-end {t_hf_n / t_us_n:.2f}x)"
              + ("" if floor is None else f"; the floor allows at most {b / floor / hf_dec:.2f}x"))

    # (b) shared prefix vs independent prefills at G samples per video prompt.
    g, m = args.samples, args.video_new
    video = video_prompt(rng)
    sample_kw = dict(max_new_tokens=m, temperature=1.0, seed=0)
    t_shared, _ = best_time(lambda: generate(ours, video, num_samples=g, **sample_kw), args.repeats)
    t_indep, _ = best_time(lambda: generate(ours, repeat_prompt(video, g), num_samples=1, **sample_kw),
                           args.repeats)
    print(f"(b) one video prompt of {video['input_ids'].shape[1]} tokens, G = {g} samples x {m} new tokens")
    print(f"    shared prefill ({g} samples from 1 prefill): {t_shared:.3f} s")
    print(f"    {g} independent prefills                    : {t_indep:.3f} s")
    print(f"    shared-prefix speed-up = {t_indep / t_shared:.2f}x")
    print(f"load average at the end {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
