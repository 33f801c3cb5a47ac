"""How large a model preset is, answered without importing jax.

The config checks (`run_config.require_complete`) run before anything touches devices and must answer
in a fraction of a second, while importing the package `vtg_jax.models.qwen_vl` imports the model
(jax and flax: seconds on a loaded host) only when a model name is used: its `config` and `presets`
modules are pure Python and the package imports lazily.

A preset above `REAL_SIZE_PARAMETERS` is a real-size model (the released 2B..72B Qwen-VL sizes): random
weights for it are never a sensible default, so a run must name its checkpoint or ask for random
initialisation explicitly (`random_init`). The tiny test and demo presets are far below it.
"""
from __future__ import annotations

from typing import Any

REAL_SIZE_PARAMETERS = 100_000_000


def preset_configs() -> dict[str, Any]:
    """{preset name: QwenVLConfig} of `vtg_jax.models.qwen_vl.presets` (pure Python: no jax import)."""
    from vtg_jax.models.qwen_vl.presets import PRESETS

    return PRESETS


def text_layer_weights(t: Any) -> int:
    """Matmul weights of one decoder layer of a `TextConfig` (q, k, v, o projections, the gated MLP)."""
    q = t.num_attention_heads * t.head_dim
    kv = t.num_key_value_heads * t.head_dim
    return t.hidden_size * (q + 2 * kv) + q * t.hidden_size + 3 * t.hidden_size * t.intermediate_size


def parameter_count(cfg: Any) -> int:
    """The number of parameters `QwenVL(cfg)` holds (a `QwenVLConfig`), from its shapes alone."""
    t, v = cfg.text, cfg.vision
    qwen3 = cfg.family == "qwen3_vl"
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    biases_and_norms = (q + 2 * kv) * t.attention_bias + 2 * t.head_dim * t.qk_norm + 2 * t.hidden_size
    layer = text_layer_weights(t) + biases_and_norms
    text = t.vocab_size * t.hidden_size * (1 if cfg.tie_word_embeddings else 2) + t.num_hidden_layers * layer
    text += t.hidden_size  # the final norm

    h, i = v.hidden_size, v.intermediate_size
    merged = h * v.spatial_merge_size ** 2
    # Qwen3: ungated GELU MLP and LayerNorms with biases; Qwen2.5: gated SiLU MLP and RMSNorms
    mlp = (2 * h * i + i + h) if qwen3 else (3 * h * i + 2 * i + h)
    block = 4 * h * h + 4 * h + mlp + (4 * h if qwen3 else 2 * h)
    merger = merged * merged + merged + merged * v.out_hidden_size + v.out_hidden_size
    vision = v.patch_dim * h + v.depth * block + merger + (2 * h if qwen3 else h)
    if qwen3:
        vision += h + v.num_position_embeddings * h  # patch-embedding bias, learned positions
        vision += len(v.deepstack_visual_indexes) * (merger + 2 * merged)
    return int(text + vision)


def preset_parameter_count(name: str) -> int:
    presets = preset_configs()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(presets)}")
    return parameter_count(presets[name])


def is_real_size(name: str) -> bool:
    """True for a preset above `REAL_SIZE_PARAMETERS` (a released size, not a test or demo model)."""
    return preset_parameter_count(name) > REAL_SIZE_PARAMETERS
