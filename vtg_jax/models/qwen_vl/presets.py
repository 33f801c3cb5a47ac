"""Named presets: the released Qwen2.5-VL / Qwen3-VL sizes and tiny test models.

Real sizes follow the `config.json` files published with each checkpoint. A local checkpoint is always
loaded from its own `config.json` (`config.load_config`); presets serve shape checks (`nnx.eval_shape`),
sharding plans and the tiny models of tests and the synthetic demo.
"""
from __future__ import annotations

from vtg_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig


def _q25_vision(out_hidden: int, intermediate: int = 3420) -> VisionConfig:
    return VisionConfig(
        depth=32, hidden_size=1280, intermediate_size=intermediate, num_heads=16, out_hidden_size=out_hidden,
        patch_size=14, hidden_act="silu", window_size=112, fullatt_block_indexes=(7, 15, 23, 31),
    )


def _q25_text(vocab: int, hidden: int, inter: int, layers: int, heads: int, kv: int) -> TextConfig:
    return TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=hidden // heads, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, mrope_section=(16, 24, 24), mrope_interleaved=False, attention_bias=True,
    )


def _q3_vision(depth: int, hidden: int, inter: int, out_hidden: int, deepstack: tuple[int, ...]) -> VisionConfig:
    return VisionConfig(
        depth=depth, hidden_size=hidden, intermediate_size=inter, num_heads=16, out_hidden_size=out_hidden,
        patch_size=16, hidden_act="gelu_pytorch_tanh", num_position_embeddings=2304,
        deepstack_visual_indexes=deepstack,
    )


def _q3_text(hidden: int, inter: int, layers: int, heads: int, kv: int = 8) -> TextConfig:
    return TextConfig(
        vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=128, rms_norm_eps=1e-6,
        rope_theta=5_000_000.0, mrope_section=(24, 20, 20), mrope_interleaved=True, attention_bias=False,
        qk_norm=True,
    )


_SMALL_Q3_VISION = dict(depth=24, hidden=1024, inter=4096, deepstack=(5, 11, 17))
_LARGE_Q3_VISION = dict(depth=27, hidden=1152, inter=4304, deepstack=(8, 16, 24))

PRESETS: dict[str, QwenVLConfig] = {
    "qwen2.5-vl-3b": QwenVLConfig(
        "qwen2_5_vl", _q25_text(151936, 2048, 11008, 36, 16, 2), _q25_vision(2048), tie_word_embeddings=True),
    "qwen2.5-vl-7b": QwenVLConfig(
        "qwen2_5_vl", _q25_text(152064, 3584, 18944, 28, 28, 4), _q25_vision(3584)),
    "qwen2.5-vl-32b": QwenVLConfig(
        "qwen2_5_vl", _q25_text(152064, 5120, 27648, 64, 40, 8), _q25_vision(5120, 3456)),
    "qwen2.5-vl-72b": QwenVLConfig(
        "qwen2_5_vl", _q25_text(152064, 8192, 29568, 80, 64, 8), _q25_vision(8192, 3456)),
    "qwen3-vl-2b": QwenVLConfig(
        "qwen3_vl", _q3_text(2048, 6144, 28, 16), _q3_vision(out_hidden=2048, **_SMALL_Q3_VISION),
        tie_word_embeddings=True),
    "qwen3-vl-4b": QwenVLConfig(
        "qwen3_vl", _q3_text(2560, 9728, 36, 32), _q3_vision(out_hidden=2560, **_SMALL_Q3_VISION),
        tie_word_embeddings=True),
    "qwen3-vl-8b": QwenVLConfig(
        "qwen3_vl", _q3_text(4096, 12288, 36, 32), _q3_vision(out_hidden=4096, **_LARGE_Q3_VISION)),
    "qwen3-vl-32b": QwenVLConfig(
        "qwen3_vl", _q3_text(5120, 25600, 64, 64), _q3_vision(out_hidden=5120, **_LARGE_Q3_VISION)),
    # Tiny models for tests and the synthetic demo (the HF parity tests build the same configs). Token ids
    # are remapped below the tiny vocabulary.
    "qwen2.5-vl-tiny": QwenVLConfig(
        "qwen2_5_vl",
        TextConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, mrope_section=(2, 3, 3)),
        VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                     patch_size=14, window_size=56, fullatt_block_indexes=(1,)),
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
    ),
    "qwen3-vl-tiny": QwenVLConfig(
        "qwen3_vl",
        TextConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=5_000_000.0,
                   mrope_section=(4, 2, 2), mrope_interleaved=True, attention_bias=False, qk_norm=True),
        VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                     patch_size=16, hidden_act="gelu_pytorch_tanh", num_position_embeddings=16,
                     deepstack_visual_indexes=(0, 1)),
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
    ),
    # The synthetic demo's student and teacher (configs/*.py defaults; a model of the student's size
    # learned the synthetic task by SFT on one CPU core in ~10 minutes in a learnability probe):
    # text hidden 128 / 4 layers (~1.1M parameters) and hidden 192 / 6 layers; 56x56 frames are one window.
    "qwen2.5-vl-synthetic": QwenVLConfig(
        "qwen2_5_vl",
        TextConfig(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, mrope_section=(4, 6, 6)),
        VisionConfig(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                     patch_size=14, window_size=56, fullatt_block_indexes=(1,)),
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
    ),
    "qwen2.5-vl-synthetic-teacher": QwenVLConfig(
        "qwen2_5_vl",
        TextConfig(vocab_size=1024, hidden_size=192, intermediate_size=384, num_hidden_layers=6,
                   num_attention_heads=6, num_key_value_heads=2, head_dim=32, mrope_section=(4, 6, 6)),
        VisionConfig(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=192,
                     patch_size=14, window_size=56, fullatt_block_indexes=(1,)),
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
    ),
    "qwen3-vl-synthetic": QwenVLConfig(
        "qwen3_vl",
        TextConfig(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=5_000_000.0,
                   mrope_section=(8, 4, 4), mrope_interleaved=True, attention_bias=False, qk_norm=True),
        VisionConfig(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                     patch_size=16, hidden_act="gelu_pytorch_tanh", num_position_embeddings=16,
                     deepstack_visual_indexes=(0, 1)),
        image_token_id=1000, video_token_id=1001, vision_start_token_id=1002, vision_end_token_id=1003,
    ),
}


def get_preset(name: str) -> QwenVLConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
