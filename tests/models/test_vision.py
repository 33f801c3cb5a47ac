"""Vision tower parity against transformers 5.23 on the tiny configs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                          Qwen3VLForConditionalGeneration)
from transformers import vision_utils as VU

from vtg_jax.models.qwen_vl.config import config_from_hf_dict
from vtg_jax.models.qwen_vl.presets import PRESETS
from vtg_jax.models.qwen_vl.vision import VisionTower, prepare_vision_inputs, vision_conversion_rows

# Brief §5 tiny configs (token ids remapped below the tiny vocabulary).
_TXT = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6)
_IDS = dict(image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
            tie_word_embeddings=False)
HF_CONFIGS = {
    "qwen2_5_vl": dict(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, window_size=56,
                           fullatt_block_indexes=[1], out_hidden_size=64, tokens_per_second=2),
        text_config=dict(**_TXT, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                  "mrope_section": [2, 3, 3]}), **_IDS),
    "qwen3_vl": dict(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64,
                           num_position_embeddings=16, deepstack_visual_indexes=[0, 1]),
        text_config=dict(**_TXT, head_dim=16, rope_parameters={
            "rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
        **_IDS),
}
PRESET = {"qwen2_5_vl": "qwen2.5-vl-tiny", "qwen3_vl": "qwen3-vl-tiny"}
HF_CLASSES = {"qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
              "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration)}
# Single grids and one packed batch of two videos and an image (window 56 -> 2x2 merge units for Qwen2.5,
# so (1,6,10) and (3,10,6) have truncated edge windows; Qwen3 interpolates a 4x4 table to non-square grids).
GRIDS = [[[2, 4, 4]], [[1, 6, 10]], [[3, 10, 6]], [[2, 8, 4], [3, 6, 10], [1, 4, 6]]]
TOL = 1e-5
GRAD_RTOL = 1e-5  # max |d grad| relative to the tensor's largest gradient
_forward = nnx.jit(lambda m, x, v: m(x, v))  # one jitted forward shared by the tests (cache reuse)


def _abstract_tower(cfg, family: str, **kw) -> VisionTower:
    """Shapes only; every parameter is then filled from HF (the rows are checked to be a bijection)."""
    return nnx.eval_shape(lambda: VisionTower(cfg, family, rngs=nnx.Rngs(0), **kw))


def _set_path(module: nnx.Module, path: tuple, value: np.ndarray) -> None:
    obj = module
    for p in path[:-1]:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    var = getattr(obj, path[-1])
    old = var.get_value()
    assert old.shape == value.shape, (path, old.shape, value.shape)
    var.set_value(jnp.asarray(value, old.dtype))


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def pair(request):
    """(family, HF model with randomised visual weights, our tower holding the same weights)."""
    family = request.param
    ccls, mcls = HF_CLASSES[family]
    torch.manual_seed(0)
    hf = mcls(ccls(**HF_CONFIGS[family], attn_implementation="eager")).eval()
    with torch.no_grad():  # non-trivial norms/biases so that every tensor matters
        for name, p in hf.model.visual.named_parameters():
            base = 1.0 if ("norm" in name or "ln_q" in name) and name.endswith("weight") else 0.0
            p.copy_(base + 0.1 * torch.randn_like(p))
    cfg = PRESETS[PRESET[family]].vision
    tower = _abstract_tower(cfg, family)
    sd = {k: v.numpy() for k, v in hf.state_dict().items() if k.startswith("model.visual.")}
    for row in vision_conversion_rows(cfg, family, ours_prefix=()):
        _set_path(tower, row.ours, row.to_ours(sd[row.hf]))
    return family, hf, tower


def _hf_forward(hf, pv: np.ndarray, grid: np.ndarray):
    with torch.no_grad():
        out = hf.model.visual(torch.from_numpy(pv), grid_thw=torch.from_numpy(grid))
    ds = getattr(out, "deepstack_features", None) or []
    return out.pooler_output.numpy(), [d.numpy() for d in ds]


def _pixels(cfg, grid: np.ndarray, seed: int = 0) -> np.ndarray:
    n = int(np.prod(grid, axis=1).sum())
    return np.random.default_rng(seed).standard_normal((n, cfg.patch_dim)).astype(np.float32)


def test_preset_matches_brief_config():
    for family, hf_cfg in HF_CONFIGS.items():
        ours = config_from_hf_dict(dict(hf_cfg, model_type=family))
        assert ours.vision == PRESETS[PRESET[family]].vision


@pytest.mark.parity
def test_rows_cover_hf_state_dict(pair):
    family, hf, tower = pair
    cfg = PRESETS[PRESET[family]].vision
    rows = vision_conversion_rows(cfg, family)
    hf_keys = {k for k in hf.state_dict() if k.startswith("model.visual.")}
    assert sorted(r.hf for r in rows) == sorted(hf_keys)
    ours = {path for path, _ in nnx.to_flat_state(nnx.state(tower, nnx.Param))}
    assert {r.ours[1:] for r in rows} == ours  # bijective onto our params (prefix "visual" stripped)
    sd = hf.state_dict()
    for r in rows:
        x = sd[r.hf].numpy()
        np.testing.assert_array_equal(r.to_hf(r.to_ours(x)), x)


@pytest.mark.parity
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "+".join("x".join(map(str, e)) for e in g))
def test_tower_matches_hf(pair, grid):
    family, hf, tower = pair
    cfg = PRESETS[PRESET[family]].vision
    grid = np.asarray(grid, np.int64)
    pv = _pixels(cfg, grid)
    ref, ref_ds = _hf_forward(hf, pv, grid)
    out, ds = _forward(tower, jnp.asarray(pv), prepare_vision_inputs(cfg, family, grid))
    assert out.shape == ref.shape == (pv.shape[0] // 4, cfg.out_hidden_size)
    np.testing.assert_allclose(np.asarray(out), ref, atol=TOL, rtol=0)
    assert len(ds) == len(ref_ds) == (2 if family == "qwen3_vl" else 0)
    for a, b in zip(ds, ref_ds):
        np.testing.assert_allclose(np.asarray(a), b, atol=TOL, rtol=0)


def _check_layout(vi: dict, kind: str, seg: np.ndarray) -> None:
    """The padded segment layout holds every row once, each slot row in the slot's segment."""
    gather, valid, scatter = vi[f"{kind}_gather"], vi[f"{kind}_valid"], vi[f"{kind}_scatter"]
    np.testing.assert_array_equal(gather.reshape(-1)[scatter], np.arange(seg.size))
    assert valid.sum() == seg.size and valid.reshape(-1)[scatter].all()
    for s in range(gather.shape[0]):
        assert len(set(seg[gather[s][valid[s]]])) == 1


@pytest.mark.parity
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "+".join("x".join(map(str, e)) for e in g))
def test_metadata_matches_hf_helpers(grid):
    g = torch.tensor(grid)
    for family, name in PRESET.items():
        cfg = PRESETS[name].vision
        vi = prepare_vision_inputs(cfg, family, np.asarray(grid))
        np.testing.assert_array_equal(vi["pos_ids"], VU.get_vision_position_ids(g, 2).numpy())
        cu = VU.get_vision_cu_seqlens(g).numpy()
        np.testing.assert_array_equal(vi["segment_ids"], np.repeat(np.arange(len(cu) - 1), np.diff(cu)))
        _check_layout(vi, "full", vi["segment_ids"])
        if family == "qwen2_5_vl":
            # The window permutation keeps frame groups in place, so one frame layout serves both orders.
            rows = (vi["window_index"][:, None] * 4 + np.arange(4)).reshape(-1)
            np.testing.assert_array_equal(vi["segment_ids"][rows], vi["segment_ids"])
            _check_layout(vi, "win", vi["window_segment_ids"])
            wi, cuw = VU.get_vision_window_index(g, 2, cfg.window_size, cfg.patch_size)
            np.testing.assert_array_equal(vi["window_index"], wi.numpy())
            np.testing.assert_array_equal(vi["reverse_index"], torch.argsort(wi).numpy())
            cuw = cuw.numpy()
            np.testing.assert_array_equal(vi["window_segment_ids"],
                                          np.repeat(np.arange(len(cuw) - 1), np.diff(cuw)))
        else:
            idx, w = VU.get_vision_interpolation_indices_and_weights(
                g, 4, mode="bilinear", align_corners=True, spatial_merge_size=2)
            np.testing.assert_array_equal(vi["interp_indices"], idx.numpy())
            np.testing.assert_array_equal(vi["interp_weights"], w.numpy())


@pytest.mark.parity
def test_jit_equals_eager(pair):
    family, _, tower = pair
    cfg = PRESETS[PRESET[family]].vision
    grid = np.asarray(GRIDS[0])
    pv, vi = jnp.asarray(_pixels(cfg, grid)), prepare_vision_inputs(cfg, family, grid)
    eager, eager_ds = tower(pv, vi)
    jitted, jitted_ds = _forward(tower, pv, vi)
    for a, b in zip([jitted, *jitted_ds], [eager, *eager_ds]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6)


@pytest.mark.parity
def test_gradients_match_hf(pair):
    """Backward parity (custom row-gather VJPs included); Qwen2.5 runs with remat'd blocks."""
    family, hf, tower = pair
    cfg = PRESETS[PRESET[family]].vision
    grid = np.asarray(GRIDS[-1])
    pv = _pixels(cfg, grid, seed=1)
    vi = prepare_vision_inputs(cfg, family, grid)
    model = tower
    if family == "qwen2_5_vl":
        model = _abstract_tower(cfg, family, remat=True)
        nnx.update(model, nnx.state(tower))

    def loss(m, x):
        out, ds = m(x, vi)
        return jnp.sum(out**2) + sum(jnp.sum(d**2) for d in ds)

    g_params, g_pixels = nnx.jit(nnx.grad(loss, argnums=(0, 1)))(model, jnp.asarray(pv))
    x = torch.from_numpy(pv).requires_grad_(True)
    hf.zero_grad(set_to_none=True)
    out = hf.model.visual(x, grid_thw=torch.from_numpy(grid))
    deepstack = getattr(out, "deepstack_features", None) or []
    (out.pooler_output.pow(2).sum() + sum(d.pow(2).sum() for d in deepstack)).backward()

    def rel(ours, ref):
        return float(np.abs(np.asarray(ours) - ref).max()) / float(np.abs(ref).max())

    worst = {"pixel_values": rel(g_pixels, x.grad.numpy())}
    ours = dict(nnx.to_flat_state(g_params))
    hf_params = dict(hf.named_parameters())
    for row in vision_conversion_rows(cfg, family, ours_prefix=()):
        worst[row.hf] = rel(ours[row.ours].get_value(), row.to_ours(hf_params[row.hf].grad.numpy()))
    name = max(worst, key=worst.get)
    print(f"MAXDIFF grad {family}: pixels {worst['pixel_values']:.1e}, worst {name} {worst[name]:.1e} (relative)")
    assert worst[name] <= GRAD_RTOL, (name, worst[name])


@pytest.mark.parity
def test_bf16_close_to_fp32(pair):
    family, _, tower = pair
    cfg = PRESETS[PRESET[family]].vision
    grid = np.asarray(GRIDS[2])
    pv, vi = jnp.asarray(_pixels(cfg, grid, seed=2)), prepare_vision_inputs(cfg, family, grid)
    ref, _ = _forward(tower, pv, vi)
    low = _abstract_tower(cfg, family, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    nnx.update(low, jax.tree.map(lambda a: a.astype(jnp.bfloat16), nnx.state(tower, nnx.Param)))
    out, _ = _forward(low, pv, vi)
    assert out.dtype == jnp.bfloat16
    rel = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)) / jnp.max(jnp.abs(ref)))
    assert rel < 3e-2, rel  # bf16 has 8 mantissa bits; measured 7.8e-3 (Qwen2.5) and 6.2e-3 (Qwen3) here


def test_every_param_has_logical_axes():
    for family, name in PRESET.items():
        tower = nnx.eval_shape(lambda: VisionTower(PRESETS[name].vision, family, rngs=nnx.Rngs(0)))
        for path, var in nnx.to_flat_state(nnx.state(tower, nnx.Param)):
            axes = var.get_metadata().get("out_sharding")
            assert axes is not None and len(axes) == var.get_value().ndim, (path, axes)


def test_bad_inputs_raise():
    cfg = PRESETS["qwen2.5-vl-tiny"].vision
    with pytest.raises(ValueError, match="divisible"):
        prepare_vision_inputs(cfg, "qwen2_5_vl", np.array([[1, 3, 4]]))
    with pytest.raises(ValueError, match="family"):
        prepare_vision_inputs(cfg, "qwen2_vl", np.array([[1, 4, 4]]))
