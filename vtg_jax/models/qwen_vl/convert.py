"""Hugging Face safetensors <-> `QwenVL`, through ONE conversion table (not a chain of ifs).

`from_pretrained` builds the model abstractly (`nnx.eval_shape`), then reads each tensor lazily with
`safetensors.safe_open`, converts it on the host and places it straight onto its `NamedSharding`
(logical names + rules + mesh), one tensor at a time, so the whole model is never held on one host.
`save_pretrained` writes transformers-5 names (which transformers loads) plus `config.json`.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from vtg_jax.models.qwen_vl import convert_table as ct
from vtg_jax.models.qwen_vl.config import QwenVLConfig, RopeIndexRule, config_to_hf_dict, load_config
from vtg_jax.models.qwen_vl.model import QwenVL
from vtg_jax.models.qwen_vl.vision import vision_conversion_rows
from vtg_jax.parallel.rules import DEFAULT_RULES, logical_to_mesh_sharding

# Legacy on-disk Qwen2.5 names -> transformers-5 state_dict names (transformers' conversion_mapping.py
# `^visual` -> `model.visual`, `^model(?!.(language_model|visual))` -> `model.language_model`).
_LEGACY_RENAMES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^visual\."), "model.visual."),
    (re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model."),
)
# Buffers some old checkpoints store and nobody reads.
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|\.original_inv_freq)$")


def normalise_hf_name(name: str) -> str:
    for pattern, repl in _LEGACY_RENAMES:
        name = pattern.sub(repl, name)
    return name


# ---------------------------------------------------------------------------------------------------
# The table.


def text_conversion_rows(cfg: QwenVLConfig) -> list[ct.Row]:
    """Rows of the language model and lm_head (transformers-5 state_dict names)."""
    t = cfg.text
    hf, ours = "model.language_model", ("language_model",)
    rows = [ct.Row(f"{hf}.embed_tokens.weight", (*ours, "embed_tokens", "embedding"), ct.identity, ct.identity)]
    for i in range(t.num_hidden_layers):
        h, o = f"{hf}.layers.{i}", (*ours, "layers", i)
        for proj in ("q_proj", "k_proj", "v_proj"):
            rows += ct.linear(f"{h}.self_attn.{proj}", (*o, "self_attn", proj), bias=t.attention_bias)
        rows += ct.linear(f"{h}.self_attn.o_proj", (*o, "self_attn", "o_proj"), bias=False)
        if t.qk_norm:
            rows += ct.norm(f"{h}.self_attn.q_norm", (*o, "self_attn", "q_norm"))
            rows += ct.norm(f"{h}.self_attn.k_norm", (*o, "self_attn", "k_norm"))
        for proj in ("gate_proj", "up_proj", "down_proj"):
            rows += ct.linear(f"{h}.mlp.{proj}", (*o, "mlp", proj), bias=False)
        rows += ct.norm(f"{h}.input_layernorm", (*o, "input_layernorm"))
        rows += ct.norm(f"{h}.post_attention_layernorm", (*o, "post_attention_layernorm"))
    rows += ct.norm(f"{hf}.norm", (*ours, "norm"))
    if not cfg.tie_word_embeddings:
        rows += ct.linear("lm_head", ("lm_head",), bias=False)
    return rows


def conversion_rows(cfg: QwenVLConfig) -> list[ct.Row]:
    """The whole table: vision rows (paths rooted at `visual`) then text rows."""
    rows = []
    for r in vision_conversion_rows(cfg.vision, cfg.family):
        path = r.ours if r.ours and r.ours[0] == "visual" else ("visual", *r.ours)
        rows.append(ct.Row(r.hf, path, r.to_ours, r.to_hf))
    rows += text_conversion_rows(cfg)
    if len({r.hf for r in rows}) != len(rows) or len({r.ours for r in rows}) != len(rows):
        raise AssertionError("conversion table has duplicate HF names or paths")
    return rows


def _flat_params(state: nnx.State) -> dict[tuple, Any]:
    return {tuple(k): v for k, v in nnx.to_flat_state(state)}


# ---------------------------------------------------------------------------------------------------
# Loading.


def _tensor_index(path: str) -> dict[str, tuple[str, str]]:
    """normalised HF name -> (file, on-disk name), from the index json or the single safetensors file."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {name: os.path.join(path, fn) for name, fn in weight_map.items()}
    else:
        single = os.path.join(path, "model.safetensors")
        if not os.path.exists(single):
            raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json under {path}")
        with safe_open(single, framework="numpy") as f:
            files = {name: single for name in f.keys()}
    out: dict[str, tuple[str, str]] = {}
    for name, fn in files.items():
        norm = normalise_hf_name(name)
        if norm in out:
            raise ValueError(f"two checkpoint tensors map to {norm!r}: {out[norm][1]!r} and {name!r}")
        out[norm] = (fn, name)
    return out


def _shardings(abstract: nnx.State, mesh: jax.sharding.Mesh | None, rules: Any) -> dict[tuple, Any]:
    """Per-parameter NamedSharding from logical names + rules (None without a mesh: default device)."""
    if mesh is None:
        return {k: None for k in _flat_params(abstract)}
    shardings = logical_to_mesh_sharding(abstract, mesh, tuple(rules) if rules is not None else DEFAULT_RULES)
    return {k: (v.get_value() if isinstance(v, nnx.Variable) else v) for k, v in _flat_params(shardings).items()}


def _place(value: np.ndarray, sharding: Any) -> jax.Array:
    if sharding is None:
        return jnp.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def from_pretrained(
    path: str,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
    rules: Sequence[tuple[str, Any]] | None = None,
    rope_index_rule: RopeIndexRule = "original",
    param_dtype: Any = None,
    remat: str = "none",
) -> QwenVL:
    """Loads an HF Qwen2.5-VL / Qwen3-VL directory into a `QwenVL`.

    dtype: activation dtype (and parameter dtype unless `param_dtype` is given).
    mesh / rules: place each parameter on NamedSharding(mesh, rules(logical names)); `rules` are
        (logical name, mesh axes) pairs, default `vtg_jax.parallel.rules.DEFAULT_RULES`; names without a
        rule are replicated. Without a mesh, parameters go to the default device.
    Raises on missing, unexpected or mis-shaped tensors. Tied checkpoints need no `lm_head.weight`.
    """
    cfg = load_config(path, rope_index_rule)
    param_dtype = dtype if param_dtype is None else param_dtype
    abstract_model = nnx.eval_shape(
        lambda: QwenVL(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(abstract_model)
    flat = _flat_params(abstract)
    shardings = _shardings(nnx.state(abstract_model, nnx.Param), mesh, rules)
    disk = _tensor_index(path)
    rows = conversion_rows(cfg)
    missing = [r.hf for r in rows if r.hf not in disk]
    known = {r.hf for r in rows}
    unexpected = [n for n in disk if n not in known and not _IGNORED.search(n)
                  and not (cfg.tie_word_embeddings and n == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the {cfg.family} table: "
                         f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                         f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}")
    handles: dict[str, Any] = {}
    try:
        for r in rows:
            fn, name = disk[r.hf]
            if fn not in handles:
                handles[fn] = safe_open(fn, framework="numpy").__enter__()
            value = r.to_ours(handles[fn].get_tensor(name))
            var = flat.get(r.ours)
            if var is None:
                raise KeyError(f"table row {r.hf!r} points to {r.ours}, which is not a parameter of QwenVL")
            want = tuple(var.get_value().shape)
            if tuple(value.shape) != want:
                raise ValueError(f"{r.hf}: shape {tuple(value.shape)} after conversion, model expects {want}")
            var.set_value(_place(np.asarray(value, dtype=var.get_value().dtype), shardings[r.ours]))
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)
    unset = [k for k, v in flat.items() if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if unset:
        raise ValueError(f"parameters not covered by the conversion table: {unset[:10]}")
    return nnx.merge(graphdef, abstract)


# ---------------------------------------------------------------------------------------------------
# Saving.


def _host(x: jax.Array) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def save_pretrained(model: QwenVL, path: str, max_shard_bytes: int = 5 * 2**30) -> None:
    """Writes config.json and safetensors with transformers-5 names (+ index when sharded).

    Tensors are gathered to the host one at a time and each shard file is written as soon as it is
    full, so at most one shard is held in host memory. Tied models write no `lm_head.weight` (as HF
    does). Only process 0 writes; every process must call this when parameters span hosts.
    """
    cfg: QwenVLConfig = model.cfg
    flat = _flat_params(nnx.state(model, nnx.Param))
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config_to_hf_dict(cfg), f, indent=2)
    files: list[list[str]] = []  # tensor names of each written shard
    group: dict[str, np.ndarray] = {}
    size = total = 0

    def flush() -> None:
        if writer and group:
            save_file(group, os.path.join(path, f"part-{len(files):05d}.tmp"), metadata={"format": "pt"})
        files.append(list(group))

    for r in conversion_rows(cfg):
        arr = np.ascontiguousarray(r.to_hf(_host(flat[r.ours].get_value())))
        if group and size + arr.nbytes > max_shard_bytes:
            flush()
            group, size = {}, 0
        group[r.hf] = arr
        size += arr.nbytes
        total += arr.nbytes
    flush()
    if not writer:
        return
    n = len(files)
    names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for i, name in enumerate(names):
        os.replace(os.path.join(path, f"part-{i:05d}.tmp"), os.path.join(path, name))
    if n > 1:
        weight_map = {t: names[i] for i, ts in enumerate(files) for t in ts}
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
