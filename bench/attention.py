"""Attention forward + backward on an NVIDIA GPU, bfloat16: ours (`attention_impl="cudnn"`, what "auto"
picks on a GPU; and "xla", XLA's masked einsum) vs PyTorch's `scaled_dot_product_attention`, in one run.

    JAX_PLATFORMS=cuda,cpu python bench/attention.py [--batch 2] [--lengths 4096 8192] [--heads 32]
                                                     [--kv-heads 8] [--head-dim 128] [--repeats 10]

Shapes: Qwen3-VL-8B's text attention (32 query heads, 8 kv heads, head dim 128), causal, batch rows with
padding: row 0 whole, the others left-padded by an eighth of the length (the sampler's prompts and the
RL update's rows are padded). The time is one jitted / eager call of forward + backward (gradients of q,
k, v for a fixed random cotangent), best of `--repeats` after a warm-up (compile excluded).

PyTorch is timed two ways: with the boolean causal + padding mask, which is what transformers' "sdpa"
attention passes for a padded batch (PyTorch then runs its memory-efficient kernel); and `is_causal=True`
with no mask, where PyTorch runs FlashAttention-2 but ignores the padding (the fastest PyTorch can do on
these shapes, not an equivalent computation). KV heads are repeated for PyTorch (`enable_gqa=True`).
The values of ours and PyTorch's masked call are compared on the real rows.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from sampler import best_time  # noqa: E402 - bench/ is the script's directory

from vtg_jax.models.qwen_vl.attention import attention

DEVICE = "cuda"  # PyTorch's device


def inputs(b: int, t: int, n: int, k: int, hd: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((b, t, n, hd), (b, t, k, hd), (b, t, k, hd),
                                                                  (b, t, n, hd))]
    mask = np.ones((b, t), bool)
    mask[1:, : t // 8] = False
    return arrays, mask


def ours(impl: str, q, k, v, w, mask) -> Callable[[], Any]:
    scale = q.shape[-1] ** -0.5
    rows = jnp.asarray(mask)[:, :, None, None]

    def loss(q, k, v):
        out = attention(q, k, v, scale=scale, key_mask=mask, causal=True, impl=impl)
        return jnp.sum(jnp.where(rows, out.astype(jnp.float32) * w, 0.0)), out

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    args = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    return lambda: jax.block_until_ready(step(*args))


def torch_sdpa(masked: bool, q, k, v, w, mask) -> Callable[[], Any]:
    dev = DEVICE
    # [B, T, H, hd] -> [B, H, T, hd], PyTorch's layout.
    tq, tk, tv = (torch.tensor(x, device=dev, dtype=torch.bfloat16).transpose(1, 2).contiguous().requires_grad_()
                  for x in (q, k, v))
    tw = torch.tensor(w, device=dev).transpose(1, 2)
    rows = torch.tensor(mask, device=dev)[:, None, :, None]
    t = q.shape[1]
    full = (torch.ones(t, t, dtype=torch.bool, device=dev).tril()[None, None]
            & torch.tensor(mask, device=dev)[:, None, None, :]) if masked else None

    def run() -> Any:
        for x in (tq, tk, tv):
            x.grad = None
        out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=full, is_causal=not masked, enable_gqa=True)
        torch.where(rows, out.float() * tw, 0.0).sum().backward()
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    if jax.default_backend() != "gpu" or not torch.cuda.is_available():
        raise SystemExit("bench/attention.py needs an NVIDIA GPU for both jax (JAX_PLATFORMS=cuda) and torch")
    print(f"{torch.cuda.get_device_name()}; jax {jax.__version__}, torch {torch.__version__}; bfloat16, causal, "
          f"batch {args.batch} (rows 1.. left-padded by T/8), {args.heads} heads / {args.kv_heads} kv heads x "
          f"{args.head_dim}; forward + backward, best of {args.repeats}, compile excluded")
    for t in args.lengths:
        (q, k, v, w), mask = inputs(args.batch, t, args.heads, args.kv_heads, args.head_dim)
        results = {}
        for name, make in (("ours cudnn", lambda: ours("cudnn", q, k, v, w, mask)),
                           ("ours xla", lambda: ours("xla", q, k, v, w, mask)),
                           ("torch sdpa, padding mask", lambda: torch_sdpa(True, q, k, v, w, mask)),
                           ("torch sdpa, is_causal (flash, padding ignored)", lambda: torch_sdpa(False, q, k, v, w, mask))):
            try:
                results[name] = best_time(make(), args.repeats)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for XLA's [T, T] scores; report, go on
                print(f"  T={t} {name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        ref = results.get("torch sdpa, padding mask")
        for name, (sec, out) in results.items():
            line = f"  T={t:6d} {name:48s} {sec * 1e3:8.2f} ms"
            if ref is not None:
                line += f"   torch-masked / this = {ref[0] / sec:5.2f}x"
            if ref is not None and name.startswith("ours"):
                mine = np.asarray(out[0][1].astype(jnp.float32))[mask]  # ((loss, out), grads)
                theirs = ref[1].detach().float().transpose(1, 2).cpu().numpy()[mask]
                line += f"   max |ours - torch| on real rows {np.max(np.abs(mine - theirs)):.3g}"
            print(line)


if __name__ == "__main__":
    main()
