"""M-RoPE tables and the 3-D rope index against transformers 5.23 and hand-computed ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_hf_helpers import IMG, VE, VID, VS, Builder, batch, concat, hf_model
from vtg_jax.models.qwen_vl import get_preset, get_rope_index, mrope_cos_sin, prepare_inputs
from vtg_jax.models.qwen_vl.config import config_from_hf_dict
from vtg_jax.models.qwen_vl.rope import apply_rope, cos_sin_tables, mrope_axis_of_freq

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def hf_models():
    return {f: hf_model(f) for f in ("qwen2_5_vl", "qwen3_vl")}


def _our_cfg(model, rule):
    return config_from_hf_dict(model.config.to_dict(), rope_index_rule=rule)


def test_qwen3_interleaved_layout():
    axis = mrope_axis_of_freq(128, (24, 20, 20), interleaved=True)
    t_dims = np.flatnonzero(axis == 0)
    assert t_dims.tolist() == list(range(0, 60, 3)) + [60, 61, 62, 63]  # as HF Qwen3-VL
    assert (axis[1:60:3] == 1).all() and (axis[2:60:3] == 2).all()
    assert mrope_axis_of_freq(128, (16, 24, 24), False).tolist() == [0] * 16 + [1] * 24 + [2] * 24


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_cos_sin_match_hf(hf_models, family):
    model = hf_models[family]
    rotary = model.model.language_model.rotary_emb
    pos = torch.randint(0, 400, (3, 2, 7))
    x = torch.zeros(1, dtype=torch.float32)
    cos_ref, sin_ref = rotary(x, pos)
    cfg = _our_cfg(model, "transformers5").text
    cos, sin = mrope_cos_sin(pos.numpy(), cfg.head_dim, cfg.rope_theta, cfg.mrope_section, cfg.mrope_interleaved)
    assert np.abs(np.asarray(cos) - cos_ref.numpy()).max() < 1e-5
    assert np.abs(np.asarray(sin) - sin_ref.numpy()).max() < 1e-5


def test_tables_computed_once_are_the_plain_cos_sin():
    # On CPU the tables go through a conditional (a fusion boundary); values, dtype, jit, vmap and the
    # gradient through a rotation must be those of the plain expression.
    import jax
    import jax.numpy as jnp

    angles = jnp.asarray(np.random.default_rng(0).uniform(0, 900, (2, 5, 8)), jnp.float32)
    for fn in (cos_sin_tables, jax.jit(cos_sin_tables), jax.vmap(cos_sin_tables)):
        cos, sin = fn(angles)
        np.testing.assert_array_equal(cos, jnp.cos(angles))
        np.testing.assert_array_equal(sin, jnp.sin(angles))
    cos, sin = cos_sin_tables(angles, jnp.bfloat16)
    assert cos.dtype == sin.dtype == jnp.bfloat16
    assert cos_sin_tables(jnp.zeros((0, 8)))[0].shape == (0, 8)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3, 8)), jnp.float32)
    ours = jax.jit(jax.grad(lambda x, a: jnp.sum(apply_rope(x, *cos_sin_tables(a)) ** 2)))(x, angles)
    plain = jax.grad(lambda x, a: jnp.sum(apply_rope(x, jnp.cos(a), jnp.sin(a)) ** 2))(x, angles)
    np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-6)


def _rope_batches(family):
    b = Builder(family, seed=7)
    spgts = [0.5, 1.0, 1.5, 1 / 12, 2.0]  # fractional intervals, incl. the 24-fps default (1/12)
    return [
        [concat(b.text(2), b.video(4, 4, 4, spgt=1.0), b.text(3))],
        [concat(b.text(2), b.image(4, 6), b.text(1), b.video(6, 6, 4, spgt=s), b.text(2), b.image(2, 4))
         for s in spgts[:3]] + [b.text(5)],
        [concat(b.video(8, 4, 8, spgt=spgts[3]), b.text(1), b.video(7, 6, 10, spgt=spgts[4]), b.text(2))],
    ]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_rope_index_transformers5_matches_hf(hf_models, family):
    model = hf_models[family]
    cfg = _our_cfg(model, "transformers5")
    for samples in _rope_batches(family):
        inputs = batch(samples)
        kw = {k: torch.from_numpy(np.asarray(inputs[k])) for k in
              ("input_ids", "mm_token_type_ids", "attention_mask", "image_grid_thw", "video_grid_thw",
               "second_per_grid_ts") if k in inputs}
        if family == "qwen3_vl":
            kw.pop("second_per_grid_ts", None)
        ref_pos, ref_delta = model.model.get_rope_index(**kw)
        pos, delta = get_rope_index(cfg, inputs["input_ids"], inputs["mm_token_type_ids"],
                                    inputs["attention_mask"], inputs.get("image_grid_thw"),
                                    inputs.get("video_grid_thw"), inputs.get("second_per_grid_ts"))
        np.testing.assert_array_equal(pos, ref_pos.numpy())
        np.testing.assert_array_equal(delta, ref_delta.numpy().reshape(-1, 1))


def test_rope_index_original_rule_on_brief_example():
    """Brief §5 tiny video (grid (2,4,4), 1 s per grid, 2 tokens/s): <|vision_end|> gets 6, not 5."""
    cfg = get_preset("qwen2.5-vl-tiny")
    ids = np.array([[5, 6, VS] + [VID] * 8 + [VE, 7, 8]])
    mm = (ids == VID) * 2
    grid, spgt = np.array([[2, 4, 4]]), np.array([1.0])
    t, hh, ww = [0, 0, 0, 0, 2, 2, 2, 2], [0, 0, 1, 1] * 2, [0, 1, 0, 1] * 2
    head = [0, 1, 2]
    want_orig = np.array([head + [3 + v for v in t] + [6, 7, 8],
                          head + [3 + v for v in hh] + [6, 7, 8],
                          head + [3 + v for v in ww] + [6, 7, 8]])
    pos, delta = get_rope_index(cfg, ids, mm, None, None, grid, spgt)
    np.testing.assert_array_equal(pos[:, 0], want_orig)
    assert delta.tolist() == [[9 - 14]]
    pos5, delta5 = get_rope_index(cfg.replace(rope_index_rule="transformers5"), ids, mm, None, None, grid, spgt)
    np.testing.assert_array_equal(pos5[:, 0, :11], want_orig[:, :11])
    assert pos5[:, 0, 11:].tolist() == [[5, 6, 7]] * 3
    assert delta5.tolist() == [[8 - 14]]


def test_rope_index_rules_agree_for_qwen3():
    cfg = get_preset("qwen3-vl-tiny")
    inputs = batch(_rope_batches("qwen3_vl")[1])
    args = (inputs["input_ids"], inputs["mm_token_type_ids"], inputs["attention_mask"],
            inputs["image_grid_thw"], inputs["video_grid_thw"])
    a = get_rope_index(cfg, *args)
    b = get_rope_index(cfg.replace(rope_index_rule="transformers5"), *args)
    np.testing.assert_array_equal(a[0], b[0])


def test_missing_mm_token_type_ids():
    b = Builder("qwen2_5_vl", seed=8)
    inputs = batch([concat(b.text(2), b.image(4, 4), b.text(2))])
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        prepare_inputs(get_preset("qwen3-vl-tiny"), inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"])
    with pytest.warns(UserWarning, match="mm_token_type_ids"):  # HF falls back to 1-D positions
        out = prepare_inputs(get_preset("qwen2.5-vl-tiny"), inputs["input_ids"],
                             image_grid_thw=inputs["image_grid_thw"])
    seq = inputs["input_ids"].shape[1]
    np.testing.assert_array_equal(out["position_ids"], np.broadcast_to(np.arange(seq), (3, 1, seq)))
    assert IMG in inputs["input_ids"]
