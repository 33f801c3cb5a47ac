"""Qwen2.5-VL / Qwen3-VL in Flax NNX: configs, presets, model, HF conversion.

    from vtg_jax.models.qwen_vl import QwenVL, from_pretrained, save_pretrained, get_preset
"""
from vtg_jax.models.qwen_vl.config import (QwenVLConfig, TextConfig, VisionConfig, config_from_hf_dict,
                                           config_to_hf_dict, load_config)
from vtg_jax.models.qwen_vl.convert import conversion_rows, from_pretrained, save_pretrained
from vtg_jax.models.qwen_vl.model import QwenVL, prepare_inputs, trainable_filter
from vtg_jax.models.qwen_vl.presets import PRESETS, get_preset
from vtg_jax.models.qwen_vl.rope import get_rope_index, mrope_cos_sin

__all__ = [
    "PRESETS", "QwenVL", "QwenVLConfig", "TextConfig", "VisionConfig", "config_from_hf_dict",
    "config_to_hf_dict", "conversion_rows", "from_pretrained", "get_preset", "get_rope_index",
    "load_config", "mrope_cos_sin", "prepare_inputs", "save_pretrained", "trainable_filter",
]
