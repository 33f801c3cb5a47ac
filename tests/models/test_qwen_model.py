"""QwenVL without the reference: logical names, remat, KV cache, sharded loading, conversion errors,
the trainable filter. (Real-preset shapes and bf16 are in test_shapes_and_sharding.py.)"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from vtg_jax.models.qwen_vl import (QwenVL, from_pretrained, get_preset, save_pretrained,
                                    trainable_filter)
from vtg_jax.models.qwen_vl.text import LayerKV, TextModel
from vtg_jax.parallel.rules import make_mesh, sharded_call



def _params(model) -> dict:
    return {k: v for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_every_param_has_logical_names():
    for name in ("qwen2.5-vl-tiny", "qwen3-vl-tiny"):
        model = nnx.eval_shape(lambda: QwenVL(get_preset(name), rngs=nnx.Rngs(0)))
        for path, var in _params(model).items():
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == var.get_value().ndim, (name, path, names)
        specs = dict(nnx.to_flat_state(nnx.get_partition_spec(nnx.state(model, nnx.Param))))
        q = specs[("language_model", "layers", 0, "self_attn", "q_proj", "kernel")]
        assert tuple(q.get_value()) == ("embed", "heads")


def _tiny_text(remat="none", layers=2):
    cfg = dataclasses.replace(get_preset("qwen3-vl-tiny").text, num_hidden_layers=layers)
    return TextModel(cfg, remat=remat, rngs=nnx.Rngs(1))


def test_remat_policies_same_values_and_grads():
    x = jax.random.normal(jax.random.key(0), (2, 6, 64))
    pos = jnp.broadcast_to(jnp.arange(6), (3, 2, 6))

    def loss(m, x):
        return jnp.sum(m(x, pos)["last_hidden_state"] ** 2)

    results = []
    for remat in ("none", "dots_saveable"):  # "full" differs only by policy=None
        m = _tiny_text(remat, layers=1)
        results.append(nnx.jit(nnx.value_and_grad(loss))(m, x))
    for val, grads in results[1:]:
        assert abs(float(val) - float(results[0][0])) < 1e-4
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, results[0][1])
    with pytest.raises(ValueError, match="remat"):
        _tiny_text("bogus")


def test_kv_cache_decode_matches_full_forward():
    m = _tiny_text()
    cfg = m.cfg
    b, t, extra, length = 2, 5, 2, 8
    x = jax.random.normal(jax.random.key(1), (b, t + extra, 64))
    valid = np.ones((b, t + extra), bool)
    valid[1, :2] = False  # left padding on row 1
    pos = np.broadcast_to(np.maximum(np.cumsum(valid, -1) - 1, 0), (3, b, t + extra))
    call = nnx.jit(lambda m, *a, **k: m(*a, **k))
    full = call(m, x, pos, attention_mask=valid)["last_hidden_state"]

    kv = [LayerKV(jnp.zeros((b, length, cfg.num_key_value_heads, cfg.head_dim)),
                  jnp.zeros((b, length, cfg.num_key_value_heads, cfg.head_dim))) for _ in range(len(m.layers))]
    slots = np.zeros((b, length), bool)
    slots[:, :t] = valid[:, :t]
    out = call(m, x[:, :t], pos[:, :, :t], attention_mask=slots, cache=kv, cache_index=0)
    steps = [out["last_hidden_state"]]
    for i in range(t, t + extra):
        slots[:, i] = True
        out = call(m, x[:, i:i + 1], pos[:, :, i:i + 1], attention_mask=slots, cache=out["cache"],
                   cache_index=jnp.int32(i))
        steps.append(out["last_hidden_state"])
    cached = jnp.concatenate(steps, axis=1)
    np.testing.assert_allclose(np.asarray(cached)[valid], np.asarray(full)[valid], atol=2e-5)


def test_all_padding_row_is_finite():
    m = _tiny_text()
    x = jax.random.normal(jax.random.key(2), (2, 4, 64))
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], bool)
    out = nnx.jit(lambda m, x: m(x, np.broadcast_to(np.arange(4), (3, 2, 4)), attention_mask=mask))(m, x)
    out = out["last_hidden_state"]
    assert np.isfinite(np.asarray(out)).all()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random tiny Qwen2.5-VL saved by our save_pretrained (no transformers involved)."""
    model = QwenVL(get_preset("qwen2.5-vl-tiny"), rngs=nnx.Rngs(3))
    path = str(tmp_path_factory.mktemp("tiny"))
    save_pretrained(model, path)
    return model, path


def _text_logits(model, ids):
    return np.asarray(nnx.jit(lambda m, i: m(i, position_ids=np.broadcast_to(np.arange(i.shape[1]), (3, *i.shape))))(model, ids))


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices")
def test_sharded_load_places_params_on_mesh(tiny_ckpt):
    model, path = tiny_ckpt
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = from_pretrained(path, mesh=mesh)  # DEFAULT_RULES
    params = _params(sharded)
    q = params[("language_model", "layers", 0, "self_attn", "q_proj", "kernel")].get_value()
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(q.sharding.device_set) == 8
    ids = np.arange(1, 13).reshape(2, 6)
    with sharded_call(mesh):
        got = _text_logits(sharded, ids)
    np.testing.assert_allclose(got, _text_logits(model, ids), atol=1e-5)


def test_conversion_errors(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    tensors = load_file(os.path.join(path, "model.safetensors"))
    config = open(os.path.join(path, "config.json")).read()

    def write(d, sub):
        os.makedirs(tmp_path / sub)
        (tmp_path / sub / "config.json").write_text(config)
        save_file(d, str(tmp_path / sub / "model.safetensors"))
        return str(tmp_path / sub)

    key = "model.language_model.layers.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match="missing.*up_proj"):
        from_pretrained(write({k: v for k, v in tensors.items() if k != key}, "missing"))
    with pytest.raises(ValueError, match="unexpected.*extra"):
        from_pretrained(write({**tensors, "model.extra.weight": np.zeros(2, np.float32)}, "unexpected"))
    with pytest.raises(ValueError, match="shape"):
        from_pretrained(write({**tensors, key: tensors[key][:, :-1]}, "shape"))
    # Legacy Qwen2.5 on-disk names (`visual.*`, `model.layers.*`) load through the same table.
    legacy = {k.replace("model.visual.", "visual.").replace("model.language_model.", "model."): v
              for k, v in tensors.items()}
    from_pretrained(write(legacy, "legacy"))


def test_trainable_filter(tiny_ckpt):
    model, _ = tiny_ckpt
    frozen = dict(nnx.to_flat_state(nnx.state(model, trainable_filter(True))))
    full = dict(nnx.to_flat_state(nnx.state(model, trainable_filter(False))))
    assert frozen and not any(k[0] == "visual" for k in frozen)
    assert any(k[0] == "visual" for k in full) and len(full) > len(frozen)
