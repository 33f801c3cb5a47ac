"""cuDNN's fused attention on an NVIDIA GPU (`attention_impl="cudnn"`, what "auto" picks there for
bfloat16 / float16): values and gradients against XLA's attention, for the kernel alone and for whole
models with a video, and that the compiled program really calls cuDNN.

These tests need a GPU and are deselected by default (marker `gpu`): `pytest -m gpu tests/gpu` with
`JAX_PLATFORMS=cuda,cpu` set (the test conftest otherwise pins the CPU). On a CPU the wrapper's
reordering is checked through the XLA implementation (`tests/models/test_fused_attention.py`).

bfloat16 has an 8-bit mantissa, so neither kernel matches float32. Both bfloat16 paths are compared with
the float32 XLA reference on the same (bfloat16-rounded) inputs, by relative L2 error over the real
rows; cuDNN passes when its error is at most twice XLA's bfloat16 error plus 5e-3 (accumulation order
and where each kernel rounds the probabilities differ, the precision does not).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vtg_jax.models.qwen_vl.attention import attention, resolve_impl

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU (cuDNN)")]

CUDNN_CALL = "__cudnn$fmha"  # the custom-call target of cuDNN's fused attention in the compiled HLO


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def assert_no_worse(name: str, cudnn: float, xla: float) -> None:
    assert np.isfinite(cudnn), f"{name}: cuDNN result is not finite"
    assert cudnn <= 2 * xla + 5e-3, f"{name}: cuDNN rel. error {cudnn:.2e} vs XLA bfloat16 {xla:.2e}"


def _qkv(b, t, n, k, hd, seed):
    ks = jax.random.split(jax.random.key(seed), 3)
    shapes = ((b, t, n, hd), (b, t, k, hd), (b, t, k, hd))
    # Rounded to bfloat16 once, so that the float32 reference sees exactly the bfloat16 kernels' inputs.
    return [jax.random.normal(key, s).astype(jnp.bfloat16) for key, s in zip(ks, shapes)]


def _run(impl, dtype, q, k, v, key_mask, causal, rows):
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    w = jax.random.normal(jax.random.key(7), q.shape, jnp.float32)
    scale = q.shape[-1] ** -0.5

    def fn(q, k, v):
        return attention(q, k, v, scale=scale, key_mask=key_mask, causal=causal, impl=impl)

    def loss(q, k, v, w):  # w an argument, not a closed-over constant that XLA would fold for seconds
        return jnp.sum(jnp.where(rows[:, :, None, None], fn(q, k, v).astype(jnp.float32) * w, 0.0))

    out = np.asarray(jax.jit(fn)(q, k, v).astype(jnp.float32))[rows]
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    grads = [np.asarray(g.astype(jnp.float32)) for g in grad(q, k, v, w)]
    hlo = grad.lower(q, k, v, w).compile().as_text()
    return out, grads, hlo


def _kernel_case(name):
    """(q, k, v, key_mask, causal, rows): rows = queries that see at least one key."""
    if name == "text_causal_gqa_padding":  # Qwen3-VL-8B's head layout, every kind of padding
        q, k, v = _qkv(3, 1000, 32, 8, 128, seed=0)
        mask = np.ones((3, 1000), bool)
        mask[0, :137] = False  # left padding (the sampler's prompts)
        mask[1, 400:431] = False  # a hole
        mask[2, 871:] = False  # right padding (packed training rows)
        return q, k, v, mask, True, mask
    if name == "text_causal_no_mask_odd_length":  # cuDNN's training kernels need even lengths
        q, k, v = _qkv(2, 511, 16, 4, 128, seed=1)
        return q, k, v, None, True, np.ones((2, 511), bool)
    if name == "vision_segments":  # Qwen2.5-VL's vision head dim 80, padded segments of valid patches
        q, k, v = _qkv(6, 256, 16, 16, 80, seed=2)
        mask = np.arange(256)[None, :] < np.array([256, 64, 200, 256, 17, 128])[:, None]
        return q, k, v, mask, False, mask
    raise ValueError(name)


@pytest.mark.parametrize("case", ["text_causal_gqa_padding", "text_causal_no_mask_odd_length", "vision_segments"])
def test_cudnn_kernel_matches_xla(case):
    q, k, v, mask, causal, rows = _kernel_case(case)
    ref_out, ref_grads, _ = _run("xla", jnp.float32, q, k, v, mask, causal, rows)
    xla_out, xla_grads, _ = _run("xla", jnp.bfloat16, q, k, v, mask, causal, rows)
    cud_out, cud_grads, hlo = _run("cudnn", jnp.bfloat16, q, k, v, mask, causal, rows)
    assert CUDNN_CALL in hlo, "the compiled program does not call cuDNN's fused attention"
    report = {"out": (rel_err(cud_out, ref_out), rel_err(xla_out, ref_out))}
    for name, c, x, r in zip(("dq", "dk", "dv"), cud_grads, xla_grads, ref_grads):
        report[name] = (rel_err(c, r), rel_err(x, r))
    print(case, {n: f"cudnn {c:.2e} / xla-bf16 {x:.2e}" for n, (c, x) in report.items()})
    for name, (c, x) in report.items():
        assert_no_worse(f"{case} {name}", c, x)
    assert resolve_impl("auto", dtype=jnp.bfloat16, keys=q.shape[1]) == "cudnn"


def _model(family: str, dtype):
    from vtg_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig
    from vtg_jax.models.qwen_vl.model import QwenVL

    qwen3 = family == "qwen3_vl"
    text = TextConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, rope_theta=1e4,
                      mrope_section=(8, 12, 12), mrope_interleaved=qwen3, attention_bias=not qwen3,
                      qk_norm=qwen3)
    vision = VisionConfig(depth=2, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256,
                          patch_size=14, num_position_embeddings=16 if qwen3 else 0,
                          deepstack_visual_indexes=(0,) if qwen3 else (), fullatt_block_indexes=(1,),
                          hidden_act="gelu_pytorch_tanh" if qwen3 else "silu")
    cfg = QwenVLConfig(family, text, vision, image_token_id=508, video_token_id=509, vision_start_token_id=510,
                       vision_end_token_id=511)
    return QwenVL(cfg, dtype=dtype, param_dtype=jnp.float32, attention_impl="xla", rngs=nnx.Rngs(0))


def _video_batch(cfg):
    """Two prompts with one 4x16x16-patch video each (64 video tokens); row 1 left-padded."""
    from vtg_jax.models.qwen_vl.model import prepare_inputs

    rng = np.random.default_rng(0)
    grid = np.array([[4, 16, 16], [4, 16, 16]])
    n_vid = 4 * 16 * 16 // 4
    vision = [cfg.vision_start_token_id] + [cfg.video_token_id] * n_vid + [cfg.vision_end_token_id]
    if cfg.family == "qwen3_vl":  # Qwen3-VL: one vision run per temporal group, a timestamp before each
        vision = [tok for g in range(4) for tok in [500 + g, 501, cfg.vision_start_token_id]
                  + [cfg.video_token_id] * (n_vid // 4) + [cfg.vision_end_token_id]]
    rows = []
    for pad in (0, 11):
        body = list(rng.integers(0, 500, 9)) + vision + list(rng.integers(0, 500, 30 - pad))
        rows.append([0] * pad + body)
    ids = np.array(rows)
    mask = np.ones_like(ids)
    mask[1, :11] = 0
    types = (ids == cfg.video_token_id).astype(np.int64) * 2
    pixels = rng.standard_normal((int(grid.prod(1).sum()), cfg.vision.patch_dim)).astype(np.float32)
    host = prepare_inputs(cfg, ids, mask, video_grid_thw=grid, second_per_grid_ts=np.array([1.0, 1.0]),
                          mm_token_type_ids=types)
    return dict(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels,
                position_ids=host["position_ids"], vision_inputs=host["vision_inputs"])


def _model_run(family, dtype, impl):
    model = _model(family, dtype)
    model.set_attention_impl(impl)
    batch = _video_batch(model.cfg)
    real = batch["attention_mask"] > 0

    def loss(m):
        logits = m(batch["input_ids"], attention_mask=batch["attention_mask"],
                   pixel_values_videos=batch["pixel_values_videos"], position_ids=batch["position_ids"],
                   vision_inputs=batch["vision_inputs"]).astype(jnp.float32)
        return jnp.sum(jnp.where(real[..., None], jnp.sin(logits), 0.0)), logits

    step = nnx.jit(nnx.value_and_grad(loss, has_aux=True))
    (_, logits), grads = step(model)
    graph, state = nnx.split(model)
    hlo = jax.jit(lambda s: nnx.value_and_grad(loss, has_aux=True)(nnx.merge(graph, s))).lower(
        state).compile().as_text()
    leaves = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(grads)}
    return np.asarray(logits)[real], leaves, hlo


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_model_with_video_auto_uses_cudnn(family):
    """A bfloat16 model with "auto" on a GPU runs cuDNN in the text decoder and the vision tower, and its
    logits and every parameter gradient are as close to float32 as XLA's bfloat16 attention gets."""
    ref_logits, ref_grads, _ = _model_run(family, jnp.float32, "xla")
    xla_logits, xla_grads, _ = _model_run(family, jnp.bfloat16, "xla")
    cud_logits, cud_grads, hlo = _model_run(family, jnp.bfloat16, "auto")
    # Text (causal GQA, one padded row) + vision segments: at least two cuDNN calls each way.
    assert hlo.count(CUDNN_CALL) >= 4, f"{hlo.count(CUDNN_CALL)} cuDNN calls in the compiled step"
    assert_no_worse(f"{family} logits", rel_err(cud_logits, ref_logits), rel_err(xla_logits, ref_logits))
    worst = []
    for name, ref in ref_grads.items():
        c, x = rel_err(cud_grads[name], ref), rel_err(xla_grads[name], ref)
        worst.append((c - 2 * x, name, c, x))
        assert_no_worse(f"{family} grad {name}", c, x)
    print(family, "closest margins:", sorted(worst)[-3:])
