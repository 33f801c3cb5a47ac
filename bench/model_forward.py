"""Forward+backward step time: our QwenVL (jax.jit, float32, CPU) vs transformers (PyTorch, float32, CPU).

    /work/venv/bin/python bench/model_forward.py [--family qwen2_5_vl|qwen3_vl] [--batch 2] [--steps 3]
                                                 [--default-malloc]

Both sides run the same "medium" model (text hidden 512, 8 layers, 8 heads / 4 kv heads, vocab 8192;
vision depth 4, hidden 256) with the same weights (HF model -> save_pretrained -> our from_pretrained),
on the same video prompt (~1k tokens per sample), in one process. transformers uses its default
attention ("sdpa"); torch runs with 2 threads, XLA:CPU uses its own pool over the machine's cores.
A step = forward + backward of a token-mean cross-entropy w.r.t. all parameters (ours through
`vtg_jax.losses.token_logprobs`, the SFT step's loss; torch through `F.cross_entropy`). Our step
includes the host-side `prepare_inputs` (rope index, vision metadata), which HF computes inside its
forward.

Host allocator: like `python -m vtg_jax.main`, the script re-executes itself with glibc's
`glibc.malloc.hugetlb=1` tunable (transparent huge pages for malloc; `vtg_jax/host_memory.py` says
why), so BOTH sides run with it; `--default-malloc` keeps glibc's default. The header line says which.

Model FLOPs per step (stated, not measured) = 3 x forward FLOPs, forward =
    2 * (matmul params used per token) * tokens        (text: attention + MLP + lm_head over B*S tokens;
                                                        vision: blocks + patch embed over rows,
                                                        merger over rows/4)
  + 4 * S^2 * hidden_heads * B * layers               (text causal attention, computed dense: QK^T, PV)
  + 4 * sum(segment^2) * vision_hidden per block      (vision attention inside frame groups / windows)
Embedding lookups, norms and activations are not counted. Achieved FLOP/s is reported as a fraction of
this machine's float32 matmul peak, measured here with a large jitted jnp matmul and a torch matmul.
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

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from vtg_jax.losses import token_logprobs
from vtg_jax.models.qwen_vl import config_to_hf_dict, from_pretrained, prepare_inputs
from vtg_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
from vtg_jax.models.qwen_vl.vision import prepare_vision_inputs

GRID = (8, 20, 24)  # (t, h, w) patches: 16 frames at 280x336 (Qwen2.5) -> 960 video tokens per sample


def medium_config(family: str) -> QwenVLConfig:
    qwen3 = family == "qwen3_vl"
    text = TextConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                      rope_theta=5e6 if qwen3 else 1e6, mrope_section=(12, 10, 10) if qwen3 else (8, 12, 12),
                      mrope_interleaved=qwen3, attention_bias=not qwen3, qk_norm=qwen3)
    vision = VisionConfig(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                          patch_size=16 if qwen3 else 14, hidden_act="gelu_pytorch_tanh" if qwen3 else "silu",
                          window_size=112, fullatt_block_indexes=() if qwen3 else (1, 3),
                          num_position_embeddings=256 if qwen3 else 0,
                          deepstack_visual_indexes=(1, 2) if qwen3 else ())
    return QwenVLConfig(family, text, vision, image_token_id=8000, video_token_id=8001,
                        vision_start_token_id=8002, vision_end_token_id=8003,
                        rope_index_rule="transformers5")


def make_batch(cfg: QwenVLConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t, h, w = GRID
    per_group = h * w // cfg.vision.spatial_merge_size**2
    vs, ve, vid = cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.video_token_id
    rows = []
    for _ in range(batch):
        head = list(rng.integers(10, 7000, size=20))
        if cfg.family == "qwen2_5_vl":
            video = [vs] + [vid] * (t * per_group) + [ve]
        else:  # Qwen3: one run per temporal group behind a timestamp, as HF requires
            video = [vs] + sum(([11, 12, vs] + [vid] * per_group + [ve] for _ in range(t)), []) + [ve]
        rows.append(head + video + list(rng.integers(10, 7000, size=20)))
    ids = np.asarray(rows, np.int64)
    n_rows = t * h * w
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), mm_token_type_ids=(ids == vid) * 2,
                pixel_values_videos=rng.standard_normal((batch * n_rows, cfg.vision.patch_dim)).astype(np.float32),
                video_grid_thw=np.array([GRID] * batch), second_per_grid_ts=np.full(batch, 1.0, np.float32),
                labels=rng.integers(0, cfg.text.vocab_size, size=ids.shape))


def model_flops(cfg: QwenVLConfig, batch: dict[str, np.ndarray]) -> float:
    t, v = cfg.text, cfg.vision
    b, s = batch["input_ids"].shape
    hd = t.head_dim
    attn_p = t.hidden_size * hd * (2 * t.num_attention_heads + 2 * t.num_key_value_heads)
    text_p = (t.num_hidden_layers * (attn_p + 3 * t.hidden_size * t.intermediate_size)
              + t.hidden_size * t.vocab_size)
    fwd = 2 * text_p * b * s + 4 * s * s * t.num_attention_heads * hd * b * t.num_hidden_layers
    d, d4 = v.hidden_size, v.hidden_size * v.spatial_merge_size**2
    mlp_p = (3 if cfg.family == "qwen2_5_vl" else 2) * d * v.intermediate_size
    n = batch["pixel_values_videos"].shape[0]
    fwd += 2 * n * (v.patch_dim * d + v.depth * (4 * d * d + mlp_p))
    n_mergers = 1 + len(v.deepstack_visual_indexes)
    fwd += 2 * (n // 4) * n_mergers * (d4 * d4 + d4 * v.out_hidden_size)
    vi = prepare_vision_inputs(v, cfg.family, batch["video_grid_thw"])
    seg2 = {k: float((vi[f"{k}_valid"].sum(1).astype(np.float64) ** 2).sum())
            for k in ("full", "win") if f"{k}_valid" in vi}
    for i in range(v.depth):
        full = cfg.family == "qwen3_vl" or i in v.fullatt_block_indexes
        fwd += 4 * seg2["full" if full else "win"] * d
    return 3.0 * fwd


def peak_flops(trials: int = 8) -> tuple[float, float]:
    """fp32 matmul FLOP/s of a 2048^3 product, jax and torch: the FASTEST of `trials` single products
    (a peak; an average over a few would put a busy moment of a shared machine into the denominator)."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    x = torch.randn(n, n)

    def best(run) -> float:
        run()  # warm-up
        times = []
        for _ in range(trials):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return 2 * n**3 / min(times)

    return best(lambda: f(a).block_until_ready()), best(lambda: x @ x)


def hf_model(cfg: QwenVLConfig):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    hf = config_to_hf_dict(cfg)
    family = hf.pop("model_type")
    hf.pop("architectures")
    ccls, mcls = ((Qwen3VLConfig, Qwen3VLForConditionalGeneration) if family == "qwen3_vl"
                  else (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration))
    torch.manual_seed(0)
    return mcls(ccls(**hf, attn_implementation="sdpa")).float()


def torch_step_fn(model, batch, family):
    kw = {k: torch.from_numpy(np.asarray(batch[k])) for k in
          ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw")}
    if family == "qwen2_5_vl":
        kw["second_per_grid_ts"] = torch.from_numpy(batch["second_per_grid_ts"])
    labels = torch.from_numpy(batch["labels"])

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(**kw).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        return float(loss)

    return step


def jax_step_fn(model, cfg, batch):
    @nnx.jit
    def grad_step(model, ids, mask, pixels, labels, position_ids, vision_inputs):
        def loss_fn(m):
            logits = m(ids, attention_mask=mask, pixel_values_videos=pixels, position_ids=position_ids,
                       vision_inputs=vision_inputs)
            return -jnp.mean(token_logprobs(logits, labels))  # the SFT step's loss (train/sft.py)

        return nnx.value_and_grad(loss_fn)(model)

    def step():
        host = prepare_inputs(cfg, batch["input_ids"], batch["attention_mask"], None, batch["video_grid_thw"],
                              batch["second_per_grid_ts"], batch["mm_token_type_ids"])
        loss, grads = grad_step(model, batch["input_ids"], batch["attention_mask"], batch["pixel_values_videos"],
                                batch["labels"], host["position_ids"], host["vision_inputs"])
        jax.block_until_ready(grads)
        return float(loss)

    return step


def timeit(step, steps: int) -> tuple[float, float]:
    loss = step()  # warm-up (compilation for jax)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, loss


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--default-malloc", action="store_true",
                   help="do not re-execute with glibc.malloc.hugetlb=1 (glibc's default allocator setting)")
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = medium_config(args.family)
    batch = make_batch(cfg, args.batch)
    print(f"load average {os.getloadavg()[0]:.2f}; family {args.family}; batch {args.batch} x "
          f"{batch['input_ids'].shape[1]} tokens; {batch['pixel_values_videos'].shape[0]} vision rows; "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} (2 threads, sdpa); "
          f"host malloc: {allocator_label()}")
    jax_peak, torch_peak = peak_flops()
    peak = max(jax_peak, torch_peak)
    print(f"fp32 matmul peak (2048^3): jax {jax_peak / 1e9:.1f} GFLOP/s, torch {torch_peak / 1e9:.1f} GFLOP/s")

    hf = hf_model(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = from_pretrained(tmp, rope_index_rule=cfg.rope_index_rule)
    flops = model_flops(cfg, batch)
    n_params = sum(p.numel() for p in hf.parameters())
    print(f"params {n_params / 1e6:.1f}M; model FLOPs per step {flops / 1e12:.3f} TFLOP")

    t_jax, loss_jax = timeit(jax_step_fn(ours, cfg, batch), args.steps)
    t_torch, loss_torch = timeit(torch_step_fn(hf, batch, args.family), args.steps)
    print(f"loss: ours {loss_jax:.6f}  transformers {loss_torch:.6f}  |d| {abs(loss_jax - loss_torch):.2e}")
    for name, t in (("ours (jax.jit)", t_jax), ("transformers", t_torch)):
        print(f"{name:16s} {t * 1e3:9.1f} ms/step  {flops / t / 1e9:7.1f} GFLOP/s  "
              f"{flops / t / peak:6.1%} of peak")
    print(f"speed-up ours vs transformers: {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
    main()
