"""A one-screen end-to-end check of what is built so far, run by `python -m vtg_jax.main`.

It scores a handful of model answers the way a GRPO step will (parse → reward → group advantages →
clipped loss with a k3 KL), evaluates them with R@m / mIoU, and runs the tiny Qwen-VL model of each
family on a random video clip, printing every figure. Nothing is downloaded.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from vtg_jax import eval as vtg_eval
from vtg_jax import losses, rewards, rl

# Four sampled answers for each of two prompts (G = 4), in the output forms the papers use.
_COMPLETIONS = [
    ["<think>the ball rolls</think><answer>12.5 to 17.8</answer>", "12.0 to 18.0", "from 2 to 4 seconds",
     "I cannot tell"],
    ["<time>[3.0, 6.5]</time>", "00:03 - 00:07", "<answer>10 to 12</answer>", "3.2 to 6.0"],
]
_GT = np.array([[12.54, 17.83], [3.0, 6.0]], np.float32)
_DURATION = np.array([30.0, 20.0], np.float32)


def _grpo_math() -> None:
    batch, group = len(_COMPLETIONS), len(_COMPLETIONS[0])
    flat = [c for row in _COMPLETIONS for c in row]
    gts = np.repeat(_GT, group, axis=0)
    durations = np.repeat(_DURATION, group)
    spec = rewards.RewardSpec(terms=(("iou", 0.9), ("format_think_answer", 0.1)))
    reward, metrics = spec(flat, gts, durations)
    print("completions and rewards (0.9·IoU + 0.1·format):")
    for text, r in zip(flat, reward):
        print(f"  {r:6.3f}  {text!r}")
    print("  " + ", ".join(f"{k}={float(v):.3f}" for k, v in sorted(metrics.items())))

    adv = rl.group_advantages(jnp.asarray(reward).reshape(batch, group))
    print("group advantages:", np.round(np.asarray(adv, np.float64), 3).tolist())

    # A clipped GRPO loss with a k3 KL on random per-token log-probs of length 6.
    key_new, key_old, key_ref = jax.random.split(jax.random.PRNGKey(0), 3)
    shape = (batch * group, 6)
    old = -jnp.abs(jax.random.normal(key_old, shape))
    new = old + 0.1 * jax.random.normal(key_new, shape)
    ref = old + 0.05 * jax.random.normal(key_ref, shape)
    mask = jnp.arange(6)[None, :] < jnp.array([6, 5, 4, 6, 3, 6, 2, 6])[:, None]
    loss, pg = jax.jit(losses.policy_gradient_loss)(new, old, adv.reshape(-1), mask)
    kl = losses.aggregate(losses.kl_estimate(new, ref, kind="k3"), mask, "token-mean")
    print(f"GRPO clipped loss {float(loss):.4f} (clip fraction {float(pg['pg/clip_frac']):.3f}), "
          f"k3 KL to reference {float(kl):.4f}")

    preds = [rewards.parse_span(row[0]) for row in _COMPLETIONS]
    print("eval of each prompt's first answer:", {
        k: round(float(v), 3) for k, v in vtg_eval.grounding_metrics(preds, _GT).items()})


def _tiny_models() -> None:
    try:
        from vtg_jax.models import qwen_vl
    except ImportError as err:  # the model port is optional for this smoke check
        print(f"models: not available ({err})")
        return
    from flax import nnx

    rng = np.random.default_rng(0)
    for name in ("qwen2.5-vl-tiny", "qwen3-vl-tiny"):
        cfg = qwen_vl.get_preset(name)
        model = qwen_vl.QwenVL(cfg, rngs=nnx.Rngs(0))
        ps, tps = cfg.vision.patch_size, cfg.vision.temporal_patch_size
        grid = np.array([[2, 4, 4]])  # 4 frames of 4×4 patches → 2 groups of 4 LLM tokens
        pixels = rng.standard_normal((int(grid.prod()), cfg.vision.patch_dim)).astype(np.float32)
        n = int(grid[0, 1] * grid[0, 2]) // 4
        vs, ve, vid = cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.video_token_id
        if cfg.family == "qwen3_vl":  # Qwen3 separates temporal groups by timestamp text; contiguous runs raise in HF
            video = sum(([11, 12, vs] + [vid] * n + [ve] for _ in range(int(grid[0, 0]))), [])
        else:
            video = [vid] * n * int(grid[0, 0])
        ids = np.array([[5, 6, vs] + video + [ve, 7, 8]])
        mm = (ids == vid).astype(np.int32) * 2
        extra = {"second_per_grid_ts": np.array([1.0])} if cfg.family == "qwen2_5_vl" else {}
        start = time.perf_counter()
        logits = model(ids, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=mm, **extra)
        print(f"{name}: video {ps}px patches × {tps} frames/group, grid {grid[0].tolist()} → logits "
              f"{tuple(logits.shape)}, finite={bool(jnp.isfinite(logits).all())} "
              f"({time.perf_counter() - start:.2f} s)")


def run() -> None:
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s))\n")
    _grpo_math()
    print()
    _tiny_models()
