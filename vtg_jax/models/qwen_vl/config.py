"""Architecture configs for Qwen2.5-VL and Qwen3-VL: frozen dataclasses, HF `config.json` parsing, presets.

Only architecture lives here. Runtime choices (dtype, remat policy, frozen vision tower, sharding rules)
are arguments of the model constructor, so one preset serves every run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal

Family = Literal["qwen2_5_vl", "qwen3_vl"]
# Qwen2.5's rope-index rule changed between transformers releases:
#   "original": the next text run starts at max(all positions) + 1 (Qwen's own code, transformers <= 4.5x,
#               and what released checkpoints were trained with);
#   "transformers5": the next text run starts at start + max(h, w) / 2 (transformers 5.x).
RopeIndexRule = Literal["original", "transformers5"]


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower (ViT + patch merger)."""

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    hidden_act: str = "silu"  # Qwen2.5: gated SiLU MLP; Qwen3: "gelu_pytorch_tanh", ungated.
    # Qwen2.5 only: windowed attention except in these blocks.
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = ()
    # Qwen3 only: learned 2-D position embedding (interpolated) and DeepStack feature taps.
    num_position_embeddings: int = 0
    deepstack_visual_indexes: tuple[int, ...] = ()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one `pixel_values` row: C * T * P * P."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The language decoder."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    mrope_interleaved: bool = False  # Qwen3: interleaved t/h/w frequency layout; Qwen2.5: contiguous chunks.
    attention_bias: bool = True  # Qwen2.5: bias on q/k/v (never on o_proj); Qwen3: none.
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k before RoPE.


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
    """A whole Qwen-VL model."""

    family: Family
    text: TextConfig
    vision: VisionConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False
    tokens_per_second: int = 2  # Qwen2.5 absolute-time temporal ids; unused by Qwen3.
    rope_index_rule: RopeIndexRule = "original"

    def replace(self, **changes: Any) -> "QwenVLConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------------
# Hugging Face config.json <-> ours.


def _rope_params(text: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 stores `rope_parameters`; older files store `rope_scaling` ({"type": "mrope", ...})
    # and a top-level `rope_theta`.
    params = dict(text.get("rope_scaling") or {})
    params.update(text.get("rope_parameters") or {})
    if "rope_theta" not in params and "rope_theta" in text:
        params["rope_theta"] = text["rope_theta"]
    return params


def config_from_hf_dict(hf: dict[str, Any], rope_index_rule: RopeIndexRule = "original") -> QwenVLConfig:
    """Builds our config from the dict of an HF Qwen2.5-VL / Qwen3-VL `config.json`."""
    model_type = hf.get("model_type")
    if model_type not in ("qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"unsupported model_type {model_type!r}; expected 'qwen2_5_vl' or 'qwen3_vl'")
    # Old Qwen2.5 files keep the text fields at the top level rather than under `text_config`.
    text = dict(hf)
    text.update(hf.get("text_config") or {})
    vis = hf["vision_config"]
    rope = _rope_params(text)
    qwen3 = model_type == "qwen3_vl"
    heads = text["num_attention_heads"]
    text_cfg = TextConfig(
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or text["hidden_size"] // heads,
        # The Qwen2.5 class default (1e-5) is not what checkpoints use (1e-6); always read the file.
        rms_norm_eps=text.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta", 5_000_000.0 if qwen3 else 1_000_000.0)),
        mrope_section=tuple(rope.get("mrope_section", (24, 20, 20) if qwen3 else (16, 24, 24))),
        mrope_interleaved=qwen3,
        attention_bias=bool(text.get("attention_bias", False)) if qwen3 else True,
        qk_norm=qwen3,
    )
    vision_cfg = VisionConfig(
        depth=vis["depth"],
        hidden_size=vis["hidden_size"],
        intermediate_size=vis["intermediate_size"],
        num_heads=vis["num_heads"],
        out_hidden_size=vis.get("out_hidden_size", text_cfg.hidden_size),
        patch_size=vis.get("patch_size", 16 if qwen3 else 14),
        temporal_patch_size=vis.get("temporal_patch_size", 2),
        spatial_merge_size=vis.get("spatial_merge_size", 2),
        in_channels=vis.get("in_channels", 3),
        hidden_act=vis.get("hidden_act", "gelu_pytorch_tanh" if qwen3 else "silu"),
        window_size=vis.get("window_size", 112),
        fullatt_block_indexes=tuple(vis.get("fullatt_block_indexes", ()) if not qwen3 else ()),
        num_position_embeddings=vis.get("num_position_embeddings", 0) if qwen3 else 0,
        deepstack_visual_indexes=tuple(vis.get("deepstack_visual_indexes", ()) if qwen3 else ()),
    )
    # Qwen2.5 also honours text_config.tie_word_embeddings (HF Qwen2_5_VLConfig does).
    tie = bool(hf.get("tie_word_embeddings", False))
    if not qwen3:
        tie = tie or bool((hf.get("text_config") or {}).get("tie_word_embeddings", False))
    return QwenVLConfig(
        family=model_type,
        text=text_cfg,
        vision=vision_cfg,
        image_token_id=hf.get("image_token_id", 151655),
        video_token_id=hf.get("video_token_id", 151656),
        vision_start_token_id=hf.get("vision_start_token_id", 151652),
        vision_end_token_id=hf.get("vision_end_token_id", 151653),
        tie_word_embeddings=tie,
        tokens_per_second=int(vis.get("tokens_per_second", hf.get("tokens_per_second", 2))),
        rope_index_rule=rope_index_rule,
    )


def load_config(path: str, rope_index_rule: RopeIndexRule = "original") -> QwenVLConfig:
    """Reads `<path>/config.json` (or `path` itself if it is a file)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        return config_from_hf_dict(json.load(f), rope_index_rule)


def config_to_hf_dict(cfg: QwenVLConfig) -> dict[str, Any]:
    """The inverse of `config_from_hf_dict`, in transformers 5 layout (loads with AutoConfig)."""
    t, v = cfg.text, cfg.vision
    qwen3 = cfg.family == "qwen3_vl"
    rope = {"rope_type": "default", "rope_theta": t.rope_theta, "mrope_section": list(t.mrope_section)}
    if qwen3:
        rope["mrope_interleaved"] = True
    text = dict(
        vocab_size=t.vocab_size,
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        rms_norm_eps=t.rms_norm_eps,
        rope_parameters=rope,
        hidden_act="silu",
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    vision = dict(
        depth=v.depth,
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_heads=v.num_heads,
        out_hidden_size=v.out_hidden_size,
        patch_size=v.patch_size,
        temporal_patch_size=v.temporal_patch_size,
        spatial_merge_size=v.spatial_merge_size,
        in_channels=v.in_channels,
        hidden_act=v.hidden_act,
    )
    if qwen3:
        text.update(head_dim=t.head_dim, attention_bias=t.attention_bias)
        vision.update(
            num_position_embeddings=v.num_position_embeddings,
            deepstack_visual_indexes=list(v.deepstack_visual_indexes),
        )
    else:
        vision.update(
            window_size=v.window_size,
            fullatt_block_indexes=list(v.fullatt_block_indexes),
            tokens_per_second=cfg.tokens_per_second,
        )
    return dict(
        model_type=cfg.family,
        architectures=["Qwen3VLForConditionalGeneration" if qwen3 else "Qwen2_5_VLForConditionalGeneration"],
        text_config=text,
        vision_config=vision,
        image_token_id=cfg.image_token_id,
        video_token_id=cfg.video_token_id,
        vision_start_token_id=cfg.vision_start_token_id,
        vision_end_token_id=cfg.vision_end_token_id,
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
