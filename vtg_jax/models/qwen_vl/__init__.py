"""Qwen2.5-VL / Qwen3-VL in Flax NNX: configs, presets, model, HF conversion.

    from vtg_jax.models.qwen_vl import QwenVL, from_pretrained, save_pretrained, get_preset

The names are imported on first use (PEP 562): `config` and `presets` are pure Python, so the run
config checks can read a preset's size without importing jax.
"""
import importlib

_WHERE = {"QwenVLConfig": "config", "TextConfig": "config", "VisionConfig": "config",
          "config_from_hf_dict": "config", "config_to_hf_dict": "config", "load_config": "config",
          "conversion_rows": "convert", "from_pretrained": "convert", "save_pretrained": "convert",
          "QwenVL": "model", "prepare_inputs": "model", "trainable_filter": "model",
          "PRESETS": "presets", "get_preset": "presets", "get_rope_index": "rope", "mrope_cos_sin": "rope"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
